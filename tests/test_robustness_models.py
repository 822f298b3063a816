"""SqueezeNet (small input) and ResNet-50 (CIFAR stem) of Pradhan et al. 2020, Sec. 3 "Base Networks"."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from repair_jax.models import create_model


def _shapes(model, input_shape):
    """Parameter and output shapes by tracing only (jax.eval_shape: nothing is computed)."""
    x = jax.ShapeDtypeStruct((2, *input_shape), jnp.float32)
    v = jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x, train=False), x)
    logits, feats = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), v, x)
    return v, logits.shape, feats.shape


# shortened layouts of the same classes keep the compile small; the full layouts are checked by shape below
@pytest.mark.parametrize("name,kwargs", [("squeezenet", {"width_mult": 0.125, "cfg": ("M", (16, 64), "M", (32, 128))}),
                                         ("resnet50", {"width": 2, "stage_sizes": (1, 1)})])
def test_forward_with_weighted_batch_norm(name, kwargs):
    model = create_model(name, 10, **kwargs)
    x = jnp.asarray(np.random.default_rng(0).random((3, 8, 8, 1)), jnp.float32)

    @jax.jit
    def run(x):
        v = model.init(jax.random.PRNGKey(0), x, train=False)
        (logits, feats), mutated = model.apply(v, x, train=True, sample_weight=jnp.ones(3), mutable=["batch_stats"])
        return logits, feats, mutated["batch_stats"], v["batch_stats"]

    logits, feats, new_stats, old_stats = run(x)
    assert logits.shape == (3, 10) and feats.shape[0] == 3 and np.all(np.isfinite(logits))
    changed = jax.tree_util.tree_map(lambda a, b: bool(jnp.any(a != b)), new_stats, old_stats)
    assert any(jax.tree_util.tree_leaves(changed))  # BatchNorm statistics were updated


def test_resnet50_has_fifty_weight_layers_and_bottleneck_widths():
    v, logits, feats = _shapes(create_model("resnet50", 100, width=8), (32, 32, 3))
    kernels = [p for path, p in jax.tree_util.tree_flatten_with_path(v["params"])[0] if path[-1].key == "kernel"]
    convs = [k for k in kernels if len(k.shape) == 4]
    shortcuts = 4  # one projection per stage
    assert len(convs) - shortcuts + 1 == 50  # stem + 16 blocks x 3 convs + the dense layer
    assert logits == (2, 100) and feats == (2, 4 * 8 * 8)  # 4 x (width x 2^3) channels


def test_squeezenet_full_width_on_cifar_size():
    v, logits, feats = _shapes(create_model("squeezenet", 100), (32, 32, 3))
    assert logits == (2, 100) and feats == (2, 512)  # last fire module: 256 + 256 channels
    n_fire = sum(1 for k in v["params"] if k.startswith("Fire"))
    assert n_fire == 8
