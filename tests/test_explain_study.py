"""The Table 4.1 analogue config at smoke size through the one experiment driver."""

import json

from repair_jax.experiment import load_config, run_experiment


def test_spurious_attribution_study_smoke_runs_and_resumes(tmp_path):
    config = load_config("experiments/configs/explain_spurious_table4_1.py", smoke=True)
    summary = run_experiment(config, tmp_path, progress=False)
    assert summary["records"] == 2 and set(summary["table"]) == {"tag", "stripe"}
    for signal, methods in summary["table"].items():
        assert set(methods) == {"grad", "guided_backprop"}
        for cells in methods.values():
            assert set(cells) == {"k_ssd", "ccm", "fam", "fam_gt"}
            assert all(-1 <= c["mean"] <= 1 and c["sem"] >= 0 for c in cells.values())
    records = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()[1:]]
    assert [r["signal"] for r in records] == ["tag", "stripe"]
    assert all(0 <= r["spurious_score"] <= 1 and 0 <= r["normal_max_score"] <= 1 for r in records)
    again = run_experiment(config, tmp_path, progress=False)  # resumed: nothing retrained, same numbers
    assert again == summary
    table = json.loads((tmp_path / "table.json").read_text())
    md = (tmp_path / "table.md").read_text()  # the same numbers as table.json, after the preconditions' line
    assert md.startswith("**Preconditions:") and "| seed | signal |" in md
    assert f"| K-SSD | {summary['table']['tag']['grad']['k_ssd']['mean']:.3f} (" in md
    assert table["table"]["tag"]["grad"]["ccm"]["mean"] == summary["table"]["tag"]["grad"]["ccm"]["mean"]


def test_spurious_condition_explains_both_models_on_both_inputs():
    """spurious_condition: x_spu and masks are add_signal(x_norm); each measure is its SSIM of the returned
    explanations (Adebayo 2022, Sec. 4.2.1); the spurious model is trained on the contaminated data (it differs)."""
    import dataclasses

    import numpy as np

    from repair_jax.data import load_dataset
    from repair_jax.explain import add_signal, attribute, ccm, fam, fam_gt, k_ssd
    from repair_jax.studies.explain_spurious import spurious_condition, train_study_model

    config = load_config("experiments/configs/explain_spurious_table4_1.py", smoke=True)
    config = dataclasses.replace(config, train=dataclasses.replace(config.train, epochs=1), methods=("grad",),
                                 explain_examples=4)
    ds = load_dataset(config.train.dataset, seed=0)
    normal = train_study_model(dataclasses.replace(config.train, seed=0), ds)
    cond = spurious_condition(config, ds, normal, "tag", 0)
    x_spu, masks = add_signal("tag", ds.test.x[:4])
    np.testing.assert_array_equal(cond.x_norm, ds.test.x[:4])
    np.testing.assert_array_equal(cond.x_spu, x_spu)
    np.testing.assert_array_equal(cond.masks, masks)
    e = {k: v["grad"] for k, v in cond.explanations.items()}
    np.testing.assert_allclose(e["norm_spu"], attribute("grad", normal.apply_fn, normal.params, x_spu))
    assert cond.measures["grad"] == {"k_ssd": k_ssd(e["spu_spu"], masks), "ccm": ccm(e["spu_norm"], e["norm_norm"]),
                                     "fam": fam(e["norm_spu"], e["spu_spu"]), "fam_gt": fam_gt(e["norm_spu"], masks)}
    assert not np.allclose(e["spu_norm"], e["norm_norm"])
    assert 0 <= cond.spurious_score <= 1


def test_explain_spurious_notebook_runs_at_smoke_size(run_notebook):
    import math
    import re

    outputs, text = run_notebook("explain_spurious.ipynb", timeout=300)
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 3  # signals; spurious, normal model
    scores = re.findall(r"stripe: spurious score ([\d.]+) .* vs ([\d.]+) \(normal", text)
    assert len(scores) == 1 and all(0 <= float(s) <= 1 for s in scores[0])
    rows = [line for line in text.splitlines() if line.startswith("| stripe |")]
    assert [r.split("|")[2].strip() for r in rows] == ["grad", "ig", "guided_backprop", "gradcam", "lime"]
    for row in rows:
        means = [float(cell.split("±")[0]) for cell in row.split("|")[3:7]]
        assert len(means) == 4 and all(math.isfinite(m) and -1 <= m <= 1 for m in means), row
    readings = re.findall(r"^  (\w+) +K-SSD ([-+][\d.]+) vs FAM-GT ([-+][\d.]+): ", text, flags=re.M)
    assert [r[0] for r in readings] == ["grad", "ig", "guided_backprop", "gradcam", "lime"]
    spurious, normal = map(float, scores[0])  # the reading states what the two scores say, either way
    assert ("the spurious model is more sensitive" in text) == (spurious > normal)
    assert ("the spurious model is NOT more sensitive" in text) == (spurious <= normal)
