"""explain_run and the `explain` subcommand (repair_jax/cli_explain.py) on a small trained digits CNN."""

import argparse
import dataclasses
import json

import numpy as np
import pytest

from repair_jax import cli_explain
from repair_jax.errors import UserError, exits_on_user_error
from repair_jax.explain import ATTRIBUTIONS, explain_run


@pytest.fixture(scope="module")
def cnn_run(tmp_path_factory, digits):
    from repair_jax.runs import write_run
    from repair_jax.train import TrainConfig, train_model

    cfg = TrainConfig(model="cnn", model_kwargs={"width": 2, "dense": 8}, epochs=1, seed=0)
    _, state, _, ds = train_model(cfg, dataset=digits, progress=False)
    path = tmp_path_factory.mktemp("explain") / "run"
    path.mkdir()
    write_run(path, {"config": dataclasses.asdict(cfg), "class_names": list(ds.class_names),
                     "input_shape": list(ds.input_shape)},
              {"params": state.params, "batch_stats": state.batch_stats})
    return path


def _main(argv):
    parser = argparse.ArgumentParser(prog="repair-jax explain")
    cli_explain.configure(parser)
    return exits_on_user_error("repair-jax explain")(lambda: cli_explain.run(parser.parse_args(argv)))()


def test_explain_cli_writes_arrays_summary_and_figure(cnn_run, tmp_path, capsys):
    out = tmp_path / "ex"
    argv = ["--run", str(cnn_run), "--index", "3", "--methods", "grad,ig,gradcam,lrp_epsilon",
            "--steps", "16", "--out", str(out), "--no-progress"]
    assert _main(argv) == 0
    assert "IG completeness gap" in capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    arrays = np.load(out / "attributions.npz")
    assert set(arrays.files) == {"input", "grad", "ig", "gradcam", "lrp_epsilon"}
    assert all(arrays[k].shape == (8, 8, 1) for k in arrays.files)
    assert summary["layer"] == "Conv_3" and summary["index"] == 3 and summary["split"] == "test"
    assert summary["target"] == summary["predicted"] == int(np.argmax(summary["logits"]))
    ig = summary["methods"]["ig"]
    assert abs(ig["completeness_gap"]) < 1e-2 * max(1.0, abs(ig["sum"]))
    np.testing.assert_allclose(ig["sum"], arrays["ig"].sum(), rtol=1e-5)
    assert (out / "attributions.png").stat().st_size > 0
    assert _main(argv) == 2  # an existing output needs --force
    assert "--force" in capsys.readouterr().err


@pytest.mark.parametrize("extra, message", [
    (["--methods", "grad,lime"], "unknown attribution method 'lime'"),
    (["--index", "100000"], "--index 100000 is out of range"),
    (["--methods", "gradcam", "--layer", "Conv_7"], "no layer 'Conv_7'"),
    (["--target", "12"], "--target 12 is out of range"),
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


def test_explain_run_all_methods_on_an_mlp_skips_gradcam(tmp_path, digits):
    from repair_jax.runs import write_run
    from repair_jax.train import TrainConfig, train_model

    cfg = TrainConfig(model="mlp", model_kwargs={"hidden": (8,)}, epochs=1, seed=0)
    _, state, _, ds = train_model(cfg, dataset=digits, progress=False)
    write_run(tmp_path, {"config": dataclasses.asdict(cfg), "class_names": list(ds.class_names),
                         "input_shape": list(ds.input_shape)}, {"params": state.params, "batch_stats": {}})
    s = explain_run(tmp_path, 0, tmp_path / "out", methods="all", steps=4, samples=2, progress=False)
    assert s["skipped"] == ["gradcam", "gradcam_pp"]
    assert set(s["methods"]) == set(ATTRIBUTIONS) - {"gradcam", "gradcam_pp"}
    with pytest.raises(UserError, match="no convolutional layer"):
        explain_run(tmp_path, 0, tmp_path / "out2", methods="gradcam", progress=False)
