"""results.md of `retrofit repro`: means over seeds, the bracketed spread, and the target verdicts."""

from __future__ import annotations

from retrofit.repro.report import render_tables, write_report


def _record(task, model, seed, level, **metrics):
    return {"task": task, "model": model, "seed": seed, "level": level, "metrics": metrics,
            "train_steps": 1000, "global_batch": 32, "train_tokens": 1_234_000}  # fmt: skip


def _results(seeds):
    records = []
    for seed in range(seeds):
        for model, tv, validity in (
            ("mdm", 0.30, 0.2),
            ("flexmdm", 0.04 + 0.02 * seed, 0.3),
            ("retrofit", 0.2, 0.1),
        ):
            records.append(_record("brackets", model, seed, None, tv=tv, validity=validity, w1=1.0, mean_length=38.0,
                                   tv_ci=[tv - 0.01, tv + 0.01], validity_ci=[0.0, 1.0], length_histogram={"4": 1}))  # fmt: skip
        for model, success in (("mdm", 0.25), ("flexmdm", 0.5), ("retrofit", 0.47)):
            for level in ("easy", "medium", "hard"):
                records.append(_record("maze", model, seed, level, success=success, success_ci=[0.1, 0.9],
                                       optimal=success, length_error=0.5))  # fmt: skip
    return {"config": {"tasks": ["brackets", "maze"], "seeds": seeds, "quick": False}, "records": records}


def test_one_seed_shows_the_test_case_interval_and_verdicts() -> None:
    text = render_tables(_results(1))
    assert "95 % interval over the test cases" in text
    assert "| MDM (from scratch) | 0.200 [0.000, 1.000] | 0.300 [0.290, 0.310] |" in text
    assert "FlexMDM length TV <= 0.05: **met** (0.040)" in text and "a third of the MDM's: **met**" in text
    assert "validity at least the MDM's: **met** (0.300 vs 0.200)" in text
    assert "FlexMDM >= MDM + 20 points: **met** (0.500 vs 0.250)" in text
    assert "retrofit within 5 points of the FlexMDM: **met** (0.470 vs 0.500)." in text
    assert "| paper: FlexMDM | 0.923 | 0.904 | 0.900 |" in text


def test_several_seeds_average_and_show_the_range(tmp_path) -> None:
    results = _results(3)
    text = render_tables(results)
    assert "range over the 3 seeds" in text
    assert "| FlexMDM (from scratch) | 0.300 [0.300, 0.300] | 0.060 [0.040, 0.080] |" in text
    assert "FlexMDM length TV <= 0.05: **NOT met** (0.060)" in text
    results["config"]["wall_seconds"] = 600.0
    written = write_report(tmp_path, results)
    assert written.startswith("# retrofit repro") and "Wall time: 10.0 min." in written
    for r in results["records"]:
        if r["task"] == "maze" and r["model"] != "mdm":
            r["metrics"]["success"] = 0.0
    assert "**met** (0.000 vs 0.000) (vacuous: both solve nothing)." in render_tables(results)
    assert (tmp_path / "brackets-lengths.png").read_bytes()[:4] == b"\x89PNG"
