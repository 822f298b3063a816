"""explain_run and the `repair-jax explain` subcommand (repair_jax/cli/explain.py) on a small digits CNN run."""

import dataclasses
import json

import numpy as np
import pytest

from repair_jax.cli import main
from repair_jax.errors import UserError
from repair_jax.explain import ATTRIBUTIONS, explain_run


def _write_untrained_run(path, cfg, ds):
    """A run directory of the model of ``cfg`` at its initial weights (explaining needs no training)."""
    import jax

    from repair_jax.models import create_model, init_variables
    from repair_jax.runs import write_run

    model = create_model(cfg.model, ds.num_classes, **cfg.model_kwargs)
    variables = init_variables(model, jax.random.PRNGKey(cfg.seed), ds.input_shape)
    write_run(path, {"config": dataclasses.asdict(cfg), "class_names": list(ds.class_names),
                     "input_shape": list(ds.input_shape)}, variables)
    return path


@pytest.fixture(scope="module")
def cnn_run(tmp_path_factory, digits):
    from repair_jax.train import TrainConfig

    cfg = TrainConfig(model="cnn", model_kwargs={"width": 2, "dense": 8}, epochs=1, seed=0)
    return _write_untrained_run(tmp_path_factory.mktemp("explain"), cfg, digits)


def _main(argv):
    return main(["explain", *argv])


def test_explain_cli_writes_arrays_summary_and_figure(cnn_run, tmp_path, capsys):
    out = tmp_path / "ex"
    argv = ["--run", str(cnn_run), "--index", "3", "--methods", "grad,ig,gradcam,lrp_epsilon,lime,kernel_shap",
            "--steps", "16", "--segments", "slic", "--out", str(out), "--no-progress"]
    assert _main(argv) == 0
    assert "IG completeness gap" in capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    arrays = np.load(out / "attributions.npz")
    assert set(arrays.files) == {"input", "grad", "ig", "gradcam", "lrp_epsilon", "lime", "kernel_shap"}
    assert all(arrays[k].shape == (8, 8, 1) for k in arrays.files)
    assert summary["layer"] == "Conv_3" and summary["index"] == 3 and summary["split"] == "test"
    assert summary["target"] == summary["predicted"] == int(np.argmax(summary["logits"]))
    ig = summary["methods"]["ig"]
    assert abs(ig["completeness_gap"]) < 1e-2 * max(1.0, abs(ig["sum"]))
    np.testing.assert_allclose(ig["sum"], arrays["ig"].sum(), rtol=1e-5)
    assert summary["methods"]["lime"]["options"] == {"segments": "slic"}
    assert len(np.unique(arrays["kernel_shap"])) > 1  # one value per SLIC superpixel
    assert (out / "attributions.png").stat().st_size > 0
    assert _main(argv) == 2  # an existing output needs --force
    assert "--force" in capsys.readouterr().err


@pytest.mark.parametrize("extra, message", [
    (["--methods", "grad,lemon"], "unknown attribution method 'lemon'"),
    (["--index", "100000"], "index 100000 is out of range"),
    (["--methods", "gradcam", "--layer", "Conv_7"], "no layer 'Conv_7'"),
    (["--target", "12"], "target 12 is out of range"),
])
def test_explain_cli_bad_input_is_one_line_and_exit_2(cnn_run, tmp_path, capsys, extra, message):
    argv = ["--run", str(cnn_run), "--index", "0", "--methods", "grad", "--out", str(tmp_path / "o"),
            "--no-progress"]
    for i in range(0, len(extra), 2):
        flag = argv.index(extra[i]) if extra[i] in argv else None
        if flag is None:
            argv += extra[i:i + 2]
        else:
            argv[flag + 1] = extra[i + 1]
    assert _main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


def test_explain_run_checks_segments_before_any_work(cnn_run, tmp_path):
    with pytest.raises(UserError, match="unknown segmentation 'watershed'; choose one of patches, slic"):
        explain_run(cnn_run, 0, tmp_path / "o", methods="lime", segments="watershed", progress=False)
    assert not (tmp_path / "o").exists()


def test_all_methods_on_an_mlp_skip_gradcam_and_asking_for_it_is_an_error(tmp_path, digits):
    from repair_jax.explain import eval_apply_fn, parse_methods
    from repair_jax.explain.pipeline import _select_methods
    from repair_jax.runs import load_run
    from repair_jax.train import TrainConfig

    _write_untrained_run(tmp_path, TrainConfig(model="mlp", model_kwargs={"hidden": (8,)}), digits)
    f, p = eval_apply_fn(load_run(tmp_path))
    names, skipped, layer = _select_methods(parse_methods("all"), "all", f, p, (8, 8, 1), None)
    assert skipped == ["gradcam", "gradcam_pp"] and layer is None
    assert names == [n for n in ATTRIBUTIONS if n not in skipped]
    with pytest.raises(UserError, match="no convolutional layer"):
        explain_run(tmp_path, 0, tmp_path / "out", methods="gradcam,grad", progress=False)
    assert not (tmp_path / "out").exists()
