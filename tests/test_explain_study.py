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
    assert table["table"]["tag"]["grad"]["ccm"]["mean"] == summary["table"]["tag"]["grad"]["ccm"]["mean"]
