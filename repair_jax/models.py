"""Flax (linen) classifiers. Every model maps ``(x, train, sample_weight)`` to ``(logits, features)``.

``features`` are the penultimate activations (used by w-dbr and concept carving). BatchNorm
statistics live in the ``batch_stats`` collection. Every BatchNorm layer here is
:class:`BatchNorm`, which accepts optional per-example weights for its batch statistics: with
``sample_weight=None`` it is ordinary BatchNorm; w-bn (Zhong et al. 2022, Sec. 3.3) passes weights instead of
forking the model code.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from repair_jax.batchnorm import weighted_batch_statistics
from repair_jax.errors import UserError


class BatchNorm(nn.Module):
    """Batch normalization whose batch mean/variance may be a weighted average over examples.

    In training mode with ``sample_weight`` w (N,), w >= 0, the batch statistics are
    ``mean = sum_n w_n mean_n`` and ``var = sum_n w_n E_n[(x - mean)^2]`` with w normalised to sum 1
    (``mean_n`` averages example n over its spatial positions). Uniform w gives plain BatchNorm.
    The running averages are updated with the same (weighted) batch statistics:
    ``ra = momentum * ra + (1 - momentum) * batch_stat``. In eval mode the running averages are used.
    """

    momentum: float = 0.9
    epsilon: float = 1e-5

    @nn.compact
    def __call__(self, x, train: bool, sample_weight=None):
        feat = x.shape[-1]
        ra_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros((feat,), jnp.float32))
        ra_var = self.variable("batch_stats", "var", lambda: jnp.ones((feat,), jnp.float32))
        scale = self.param("scale", nn.initializers.ones, (feat,))
        bias = self.param("bias", nn.initializers.zeros, (feat,))
        if train:
            axes = tuple(range(x.ndim - 1))
            if sample_weight is None:
                mean = jnp.mean(x, axes)
                var = jnp.mean(jnp.square(x - mean), axes)
            else:
                mean, var = weighted_batch_statistics(x, sample_weight)
            if not self.is_initializing():
                ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
                ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * var
        else:
            mean, var = ra_mean.value, ra_var.value
        return (x - mean) * jax.lax.rsqrt(var + self.epsilon) * scale + bias


#: The hidden activations of :class:`MLP`: ReLU (the default) or softplus, its smooth counterpart, for a
#: twice-differentiable objective whose gradient can be driven to zero (full-batch L-BFGS to a gradient-norm
#: tolerance, influence functions' Hessian); a ReLU network's minimum can sit on the kinks.
MLP_ACTIVATIONS = ("relu", "softplus")


class MLP(nn.Module):
    """Fully connected ReLU network (Henriksen et al. 2022, Sec. 5: 2 hidden layers of 256); ``activation``
    (:data:`MLP_ACTIVATIONS`) softplus for a smooth one."""

    num_classes: int
    hidden: Sequence[int] = (256, 256)
    activation: str = "relu"

    @nn.compact
    def __call__(self, x, train: bool = False, sample_weight=None):
        if self.activation not in MLP_ACTIVATIONS:
            raise UserError(f"unknown MLP activation {self.activation!r}; choose one of {', '.join(MLP_ACTIVATIONS)}")
        act = getattr(nn, self.activation)  # looked up per call: guided backprop / deconvnet swap nn.relu in
        h = x.reshape((x.shape[0], -1))
        for width in self.hidden:
            h = act(nn.Dense(width)(h))
        return nn.Dense(self.num_classes)(h), h


class SmallCNN(nn.Module):
    """Two conv blocks (conv-BN-ReLU x2, max-pool) and a dense layer; the BatchNorm workhorse."""

    num_classes: int
    width: int = 32
    dense: int = 128
    padain_p: float = 0.0  # Permuted AdaIN after each conv (Sharma n.d., Que-2); 0 = off

    @nn.compact
    def __call__(self, x, train: bool = False, sample_weight=None):
        h = x
        for mult in (1, 2):
            for _ in range(2):
                h = nn.Conv(self.width * mult, (3, 3), use_bias=False)(h)
                h = nn.relu(BatchNorm()(padain_before_bn(h, self.padain_p, train), train, sample_weight))
            h = nn.max_pool(h, (2, 2), (2, 2))
        h = h.reshape((h.shape[0], -1))
        h = nn.Dense(self.dense, use_bias=False)(h)
        feats = nn.relu(BatchNorm()(h, train, sample_weight))
        return nn.Dense(self.num_classes)(feats), feats


class BasicBlock(nn.Module):
    filters: int
    stride: int = 1
    padain_p: float = 0.0  # Permuted AdaIN after each main-path conv (Sharma n.d., Que-2); 0 = off

    @nn.compact
    def __call__(self, x, train, sample_weight):
        h = nn.Conv(self.filters, (3, 3), (self.stride, self.stride), use_bias=False)(x)
        h = nn.relu(BatchNorm()(padain_before_bn(h, self.padain_p, train), train, sample_weight))
        h = nn.Conv(self.filters, (3, 3), use_bias=False)(h)
        h = BatchNorm()(padain_before_bn(h, self.padain_p, train), train, sample_weight)
        if self.stride != 1 or x.shape[-1] != self.filters:
            x = nn.Conv(self.filters, (1, 1), (self.stride, self.stride), use_bias=False)(x)
            x = BatchNorm()(x, train, sample_weight)
        return nn.relu(h + x)


class ResNet(nn.Module):
    """CIFAR-variant ResNet (3x3 stem, no max-pool; Pradhan et al. 2020, Sec. 3 "Base Networks") with basic blocks
    (ResNet-18/34) or, with ``bottleneck=True``, bottleneck blocks (ResNet-50: stages 3, 4, 6, 3).
    Strides of 2 open stages 2-4 while the map is larger than 1x1."""

    num_classes: int
    stage_sizes: Sequence[int] = (2, 2, 2, 2)
    width: int = 64
    padain_p: float = 0.0  # Permuted AdaIN after each main-path conv (Sharma n.d., Que-2); 0 = off
    bottleneck: bool = False

    def block(self, features: int, stride: int) -> nn.Module:
        if self.bottleneck:
            if self.padain_p:
                raise ValueError("Permuted AdaIN (padain_p) is built into the basic blocks only")
            return Bottleneck(features, stride)
        return BasicBlock(features, stride, self.padain_p)

    @nn.compact
    def __call__(self, x, train: bool = False, sample_weight=None):
        h = nn.Conv(self.width, (3, 3), use_bias=False)(x)
        h = nn.relu(BatchNorm()(padain_before_bn(h, self.padain_p, train), train, sample_weight))
        for i, n_blocks in enumerate(self.stage_sizes):
            for j in range(n_blocks):
                stride = 2 if (i > 0 and j == 0 and h.shape[1] > 1) else 1
                h = self.block(self.width * 2 ** i, stride)(h, train, sample_weight)
        feats = jnp.mean(h, axis=(1, 2))
        return nn.Dense(self.num_classes)(feats), feats


class VGG(nn.Module):
    """VGG with BatchNorm (VGG11-BN by default); a max-pool is skipped once the map is 1x1."""

    num_classes: int
    cfg: Sequence[Any] = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")
    width_mult: float = 1.0

    @nn.compact
    def __call__(self, x, train: bool = False, sample_weight=None):
        h = x
        for v in self.cfg:
            if v == "M":
                if h.shape[1] > 1:
                    h = nn.max_pool(h, (2, 2), (2, 2))
            else:
                h = nn.Conv(max(1, int(v * self.width_mult)), (3, 3), use_bias=False)(h)
                h = nn.relu(BatchNorm()(h, train, sample_weight))
        feats = jnp.mean(h, axis=(1, 2))
        return nn.Dense(self.num_classes)(feats), feats


class InvertedResidual(nn.Module):
    filters: int
    stride: int
    expand: int

    @nn.compact
    def __call__(self, x, train, sample_weight):
        c = x.shape[-1]
        h = x
        if self.expand != 1:
            h = nn.Conv(c * self.expand, (1, 1), use_bias=False)(h)
            h = nn.relu6(BatchNorm()(h, train, sample_weight))
        h = nn.Conv(h.shape[-1], (3, 3), (self.stride, self.stride), feature_group_count=h.shape[-1],
                    use_bias=False)(h)
        h = nn.relu6(BatchNorm()(h, train, sample_weight))
        h = nn.Conv(self.filters, (1, 1), use_bias=False)(h)
        h = BatchNorm()(h, train, sample_weight)
        if self.stride == 1 and c == self.filters:
            h = h + x
        return h


class MobileNetV2(nn.Module):
    """MobileNetV2, CIFAR variant (stride 1 in the stem and the first downsampling stage)."""

    num_classes: int
    width_mult: float = 1.0
    # (expansion t, channels c, repeats n, stride s) as in Sandler et al., Table 2 (CIFAR strides)
    blocks: Sequence[tuple[int, int, int, int]] = ((1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2),
                                                   (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                                                   (6, 320, 1, 1))

    @nn.compact
    def __call__(self, x, train: bool = False, sample_weight=None):
        w = lambda ch: max(8, int(ch * self.width_mult))
        h = nn.Conv(w(32), (3, 3), use_bias=False)(x)
        h = nn.relu6(BatchNorm()(h, train, sample_weight))
        for t, ch, n, s in self.blocks:
            for i in range(n):
                stride = s if (i == 0 and h.shape[1] > 1) else 1
                h = InvertedResidual(w(ch), stride, t)(h, train, sample_weight)
        h = nn.Conv(w(1280), (1, 1), use_bias=False)(h)
        h = nn.relu6(BatchNorm()(h, train, sample_weight))
        feats = jnp.mean(h, axis=(1, 2))
        return nn.Dense(self.num_classes)(feats), feats



# ----------------------------------------------------------------------------- robustness (Pradhan et al. 2020) models

class Fire(nn.Module):
    """SqueezeNet fire module (Iandola et al. 2016): 1x1 squeeze, then 1x1 and 3x3 expands concatenated."""

    squeeze: int
    expand: int

    @nn.compact
    def __call__(self, x, train, sample_weight):
        h = nn.relu(BatchNorm()(nn.Conv(self.squeeze, (1, 1), use_bias=False)(x), train, sample_weight))
        e1 = nn.relu(BatchNorm()(nn.Conv(self.expand, (1, 1), use_bias=False)(h), train, sample_weight))
        e3 = nn.relu(BatchNorm()(nn.Conv(self.expand, (3, 3), use_bias=False)(h), train, sample_weight))
        return jnp.concatenate([e1, e3], axis=-1)


class SqueezeNet(nn.Module):
    """SqueezeNet 1.1 for small inputs (Pradhan et al. 2020, Sec. 3 "Base Networks"): a 3x3 stride-1 stem, eight fire
    modules in three stages with 2x2 max-pools (skipped once the map is 1x1), BatchNorm after every
    conv (the w-bn hook) and no dropout. The 1x1 classifier conv followed by global average pooling
    is written as pooling then a dense layer (the same linear map), so ``features`` are the pooled
    activations."""

    num_classes: int
    width_mult: float = 1.0
    # (squeeze, expand) per fire module; "M" is a max-pool (SqueezeNet 1.1 layout)
    cfg: Sequence[Any] = ("M", (16, 64), (16, 64), "M", (32, 128), (32, 128), "M", (48, 192), (48, 192),
                          (64, 256), (64, 256))

    @nn.compact
    def __call__(self, x, train: bool = False, sample_weight=None):
        w = lambda ch: max(4, int(ch * self.width_mult))
        h = nn.relu(BatchNorm()(nn.Conv(w(64), (3, 3), use_bias=False)(x), train, sample_weight))
        for v in self.cfg:
            if v == "M":
                if h.shape[1] > 1:
                    h = nn.max_pool(h, (2, 2), (2, 2))
            else:
                h = Fire(w(v[0]), w(v[1]))(h, train, sample_weight)
        feats = jnp.mean(h, axis=(1, 2))
        return nn.Dense(self.num_classes)(feats), feats


class Bottleneck(nn.Module):
    """ResNet bottleneck block (He et al. 2016): 1x1 reduce, 3x3 (stride), 1x1 expand x4."""

    filters: int
    stride: int = 1

    @nn.compact
    def __call__(self, x, train, sample_weight):
        h = nn.relu(BatchNorm()(nn.Conv(self.filters, (1, 1), use_bias=False)(x), train, sample_weight))
        h = nn.Conv(self.filters, (3, 3), (self.stride, self.stride), use_bias=False)(h)
        h = nn.relu(BatchNorm()(h, train, sample_weight))
        h = BatchNorm()(nn.Conv(4 * self.filters, (1, 1), use_bias=False)(h), train, sample_weight)
        if self.stride != 1 or x.shape[-1] != 4 * self.filters:
            x = nn.Conv(4 * self.filters, (1, 1), (self.stride, self.stride), use_bias=False)(x)
            x = BatchNorm()(x, train, sample_weight)
        return nn.relu(h + x)


_FACTORIES: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str, factory: Callable[..., nn.Module], *, replace: bool = False) -> None:
    """Adds ``factory(num_classes, **options) -> linen module`` to the zoo under ``name``, so that
    :func:`create_model`, ``TrainConfig(model=name)``, ``repair-jax train --model name`` and a run's reload find it.
    The module's ``__call__(x, train=False, sample_weight=None)`` returns ``(logits, features)``. A taken name is
    refused unless ``replace``."""
    if not isinstance(name, str) or not name or ":" in name:
        raise UserError(f"a model name is a non-empty string without ':', got {name!r}")
    if name in _FACTORIES and not replace:
        raise UserError(f"model {name!r} is registered already (pass replace=True to replace it)")
    if not callable(factory):
        raise UserError(f"the factory of model {name!r} is not callable")
    _FACTORIES[name] = factory


def model_names() -> tuple[str, ...]:
    """Every registered model name, in registration order."""
    return tuple(_FACTORIES)


for _name, _factory in {
    "mlp": lambda k, **kw: MLP(k, **kw),
    "cnn": lambda k, **kw: SmallCNN(k, **kw),
    "resnet18": lambda k, **kw: ResNet(k, (2, 2, 2, 2), **kw),
    "resnet34": lambda k, **kw: ResNet(k, (3, 4, 6, 3), **kw),
    "vgg11_bn": lambda k, **kw: VGG(k, **kw),
    "mobilenet_v2": lambda k, **kw: MobileNetV2(k, **kw),
    "squeezenet": lambda k, **kw: SqueezeNet(k, **kw),
    "resnet50": lambda k, stage_sizes=(3, 4, 6, 3), **kw: ResNet(k, stage_sizes, bottleneck=True, **kw),
}.items():
    register_model(_name, _factory)


def check_model_options(kwargs: dict) -> None:
    """The size options (``width``, ``dense``, ``width_mult``, every ``hidden`` width) must be positive
    numbers: a clear :class:`UserError` before any model is built or trained."""
    sizes = [(k, kwargs[k]) for k in ("width", "dense", "width_mult") if k in kwargs]
    hidden = kwargs.get("hidden", ())
    if not isinstance(hidden, (list, tuple)):
        raise UserError(f"model option hidden must be a list of layer widths, got {hidden!r}")
    sizes += [("hidden", h) for h in hidden]
    for key, v in sizes:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
            raise UserError(f"model option {key} must be a positive number, got {v!r}")


def create_model(name: str, num_classes: int, **kwargs) -> nn.Module:
    """A model by name (``mlp``, ``cnn``, ``resnet18``, ``resnet34``, ``vgg11_bn``, ``mobilenet_v2``).

    ``kwargs`` go to the module (e.g. ``hidden=(64,)`` for the MLP, ``width=16`` for the CNN/ResNet).
    """
    if name not in _FACTORIES:
        raise UserError(f"unknown model {name!r}; choose one of {', '.join(model_names())}")
    if num_classes < 2:
        raise UserError(f"a classifier needs at least 2 classes, got {num_classes}")
    check_model_options(kwargs)
    try:
        return _FACTORIES[name](num_classes, **kwargs)
    except TypeError as e:
        raise UserError(f"bad options for model {name!r}: {e}") from None


def init_variables(model: nn.Module, rng: jax.Array, input_shape: Sequence[int]) -> dict:
    """Initial ``{'params': ..., 'batch_stats': ...}`` (``batch_stats`` empty for models without BN)."""
    variables = model.init(rng, jnp.zeros((2, *input_shape), jnp.float32), train=False)
    variables = dict(variables)
    variables.setdefault("batch_stats", {})
    return variables


def has_batch_norm(variables: dict) -> bool:
    return bool(jax.tree_util.tree_leaves(variables.get("batch_stats", {})))


# ----------------------------------------------------------------------------- bias-report backbones
# Sharma n.d.: ShuffleNet (Que-1) and additive PyramidNet (Que-2) backbones, small-input
# (28x28 / 32x32) variants, each with Permuted AdaIN (Sharma n.d., Que-2) after every main-path convolution
# that feeds a BatchNorm when ``padain_p`` > 0.

def padain_before_bn(h, padain_p: float, train: bool):
    """``PermutedAdaIN(padain_p)(h, train)``, or ``h`` itself when ``padain_p`` is 0 (no variable added,
    so models without the option keep their checkpoints); p outside [0, 1] -> UserError."""
    from repair_jax.padain import PermutedAdaIN, check_padain_p

    check_padain_p(padain_p)
    return PermutedAdaIN(padain_p)(h, train) if padain_p > 0 else h


def channel_shuffle(x, groups: int):
    """ShuffleNet channel shuffle (Zhang et al. 2018): (N, H, W, g*c) -> interleave the g groups."""
    n, h, w, c = x.shape
    return x.reshape(n, h, w, groups, c // groups).swapaxes(3, 4).reshape(n, h, w, c)


class ShuffleUnit(nn.Module):
    """ShuffleNetV2 unit (Ma et al. 2018, Fig. 3c/d): stride 1 splits the channels and transforms one
    half; stride 2 transforms the whole input in two branches; then concatenation and a 2-group shuffle."""

    filters: int
    stride: int
    padain_p: float = 0.0

    def _conv_bn(self, h, filters, kernel, stride, groups, relu, train, sample_weight):
        h = nn.Conv(filters, (kernel, kernel), (stride, stride), feature_group_count=groups, use_bias=False)(h)
        h = BatchNorm()(padain_before_bn(h, self.padain_p, train), train, sample_weight)
        return nn.relu(h) if relu else h

    @nn.compact
    def __call__(self, x, train, sample_weight):
        half = self.filters // 2
        if self.stride == 1:
            keep, h = jnp.split(x, 2, axis=-1)
        else:
            keep = self._conv_bn(x, x.shape[-1], 3, self.stride, x.shape[-1], False, train, sample_weight)
            keep = self._conv_bn(keep, half, 1, 1, 1, True, train, sample_weight)
            h = x
        h = self._conv_bn(h, half, 1, 1, 1, True, train, sample_weight)
        h = self._conv_bn(h, half, 3, self.stride, half, False, train, sample_weight)
        h = self._conv_bn(h, self.filters - keep.shape[-1], 1, 1, 1, True, train, sample_weight)
        return channel_shuffle(jnp.concatenate([keep, h], axis=-1), 2)


class ShuffleNetV2(nn.Module):
    """ShuffleNetV2, small-input variant: 3x3 stride-1 stem and no max-pool; three stages (4, 8, 4 units
    at 1x: 116, 232, 464 channels) each starting with a stride-2 unit (skipped once the map is 1x1),
    a 1x1 conv to ``last`` channels and global average pooling."""

    num_classes: int
    stage_channels: Sequence[int] = (116, 232, 464)
    stage_repeats: Sequence[int] = (4, 8, 4)
    stem: int = 24
    last: int = 1024
    padain_p: float = 0.0

    @nn.compact
    def __call__(self, x, train: bool = False, sample_weight=None):
        if any(c % 2 for c in self.stage_channels):
            raise UserError(f"ShuffleNetV2 stage_channels must be even, got {tuple(self.stage_channels)}")
        h = nn.Conv(self.stem, (3, 3), use_bias=False)(x)
        h = nn.relu(BatchNorm()(padain_before_bn(h, self.padain_p, train), train, sample_weight))
        for ch, n in zip(self.stage_channels, self.stage_repeats):
            for i in range(n):
                stride = 2 if (i == 0 and h.shape[1] > 1) else 1
                h = ShuffleUnit(ch, stride, self.padain_p)(h, train, sample_weight)
        h = nn.Conv(self.last, (1, 1), use_bias=False)(h)
        h = nn.relu(BatchNorm()(padain_before_bn(h, self.padain_p, train), train, sample_weight))
        feats = jnp.mean(h, axis=(1, 2))
        return nn.Dense(self.num_classes)(feats), feats


class PyramidBlock(nn.Module):
    """Pyramidal residual unit (Han et al. 2017, Fig. 6d): BN-conv3x3-BN-ReLU-conv3x3-BN; shortcut is
    2x2 average pooling when downsampling and zero-padding of the new channels."""

    filters: int
    stride: int
    padain_p: float = 0.0

    @nn.compact
    def __call__(self, x, train, sample_weight):
        h = BatchNorm()(x, train, sample_weight)
        h = nn.Conv(self.filters, (3, 3), (self.stride, self.stride), use_bias=False)(h)
        h = nn.relu(BatchNorm()(padain_before_bn(h, self.padain_p, train), train, sample_weight))
        h = nn.Conv(self.filters, (3, 3), use_bias=False)(h)
        h = BatchNorm()(padain_before_bn(h, self.padain_p, train), train, sample_weight)
        if self.stride != 1:
            x = nn.avg_pool(x, (2, 2), (2, 2), padding="SAME")
        pad = self.filters - x.shape[-1]
        return h + jnp.pad(x, ((0, 0), (0, 0), (0, 0), (0, pad)))


class PyramidNet(nn.Module):
    """Additive PyramidNet (Han et al. 2017; Sharma n.d., Que-2), small-input (CIFAR) variant with basic units:
    (depth - 2) / 6 units per stage, the width growing by alpha / #units after every unit from 16
    (rounded down), 3x3 stem, stride 2 at the second and third stages, BN-ReLU and global average pooling."""

    num_classes: int
    depth: int = 110
    alpha: float = 48.0
    padain_p: float = 0.0

    @nn.compact
    def __call__(self, x, train: bool = False, sample_weight=None):
        if self.depth < 8 or (self.depth - 2) % 6:
            raise UserError(f"PyramidNet depth must be 6n + 2 with n >= 1, got {self.depth}")
        n = (self.depth - 2) // 6
        h = nn.Conv(16, (3, 3), use_bias=False)(x)
        h = BatchNorm()(padain_before_bn(h, self.padain_p, train), train, sample_weight)
        for stage in range(3):
            for i in range(n):
                width = int(16 + self.alpha * (stage * n + i + 1) / (3 * n) + 1e-9)  # no drift from sums
                stride = 2 if (stage > 0 and i == 0 and h.shape[1] > 1) else 1
                h = PyramidBlock(width, stride, self.padain_p)(h, train, sample_weight)
        h = nn.relu(BatchNorm()(h, train, sample_weight))
        feats = jnp.mean(h, axis=(1, 2))
        return nn.Dense(self.num_classes)(feats), feats


# ----------------------------------------------------------------------------- multi-task heads (Sharma n.d., Que-2)

def ensemble_logits(head_logits: jax.Array) -> jax.Array:
    """The heads' logit average (Sharma n.d., "we take the ensemble by taking the average of the logits"):
    (N, H, K) -> (N, K)."""
    return jnp.mean(head_logits, axis=1)


class MultiHead(nn.Module):
    """A backbone (any model of this zoo; its penultimate features are shared) with one
    head per entry of ``head_widths``. ``__call__`` -> (ensemble logits (N, K), features);
    ``heads`` -> (head logits (N, H, K), features)."""

    backbone: nn.Module
    num_classes: int
    head_widths: Sequence[int] = (0, 0, 0)

    def setup(self):
        self.hidden = [nn.Dense(w) if w else None for w in self.head_widths]
        self.out = [nn.Dense(self.num_classes) for _ in self.head_widths]

    def heads(self, x, train: bool = False, sample_weight=None):
        _, feats = self.backbone(x, train, sample_weight)
        zs = [out(nn.relu(hid(feats)) if hid is not None else feats) for hid, out in zip(self.hidden, self.out)]
        return jnp.stack(zs, axis=1), feats

    def __call__(self, x, train: bool = False, sample_weight=None):
        z, feats = self.heads(x, train, sample_weight)
        return ensemble_logits(z), feats


def multi_head_model(backbone: str, num_classes: int, head_widths: Sequence[int] = (0, 0, 0),
                     **backbone_kwargs) -> MultiHead:
    """``MultiHead(create_model(backbone, num_classes, **backbone_kwargs), num_classes, head_widths)``."""
    head_widths = tuple(head_widths)
    for w in head_widths:
        if isinstance(w, bool) or not isinstance(w, int) or w < 0:
            raise UserError(f"head width must be an integer >= 0, got {w!r}")
    if not head_widths:
        raise UserError("a multi-head model needs at least one head")
    return MultiHead(create_model(backbone, num_classes, **backbone_kwargs), num_classes, head_widths)


def _multi_head(k, backbone: str = "cnn", head_widths: Sequence[int] = (0, 0, 0), **kw):
    return multi_head_model(backbone, k, head_widths, **kw)


register_model("shufflenet_v2", lambda k, **kw: ShuffleNetV2(k, **kw))
register_model("pyramidnet", lambda k, **kw: PyramidNet(k, **kw))
# multi-task heads over any backbone (Sharma n.d., Que-2), output = the heads' logit average; so that a
# run trained with repair_jax.bias.mtl_objective can be reloaded from run.json
register_model("multi_head", _multi_head)
MODELS = model_names()  # the built-in zoo (models registered later: model_names())
