"""`retrofit repro all --quick` end to end: three models per task trained, exported, reloaded, sampled.

The sizes are tiny (a few optimizer steps), so the metric values mean nothing; what is checked is
that every stage ran through the product's pipeline and that every promised artefact is there,
in the documented format, with metrics computed from the written samples.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from retrofit.repro import brackets, maze
from retrofit.repro.runner import run_repro
from retrofit.repro.tasks import MazeTask


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("repro")
    results = run_repro(["brackets", "maze"], out, seeds=1, quick=True, echo=lambda _: None)
    return out, results


def test_records_cover_every_task_model_and_level(quick_run) -> None:
    out, results = quick_run
    keys = {(r["task"], r["model"], r["level"]) for r in results["records"]}
    models = ("mdm", "flexmdm", "retrofit")
    assert keys == {("brackets", m, None) for m in models} | {
        ("maze", m, lv) for m in models for lv in maze.LEVELS
    }
    for r in results["records"]:
        assert r["seed"] == 0 and r["train_steps"] == 4 and r["global_batch"] == 32 and r["train_tokens"] > 0
    assert json.loads((out / "results.json").read_text()) == json.loads(json.dumps(results))
    text = (out / "results.md").read_text()
    assert "## Balanced brackets" in text and "## Maze planning" in text and "paper: FlexMDM" in text
    assert (out / "brackets-lengths.png").stat().st_size > 0 and (out / "maze-success.png").stat().st_size > 0


def test_model_folders_come_from_the_pipeline(quick_run) -> None:
    out, results = quick_run
    dirs = {(r["task"], r["model"]): r["model_dir"] for r in results["records"]}
    for task in ("brackets", "maze"):
        mdm, flex, retro = (
            json.loads(Path(dirs[task, m], "config.json").read_text()) for m in ("mdm", "flexmdm", "retrofit")
        )
        assert (mdm["model_type"], flex["model_type"], retro["model_type"]) == ("llada", "flexmdm", "flexmdm")
        assert dirs[task, "retrofit"].endswith("retrofit/export")  # written by `retrofit export`
        assert (out / "work" / task / "seed0" / "mdm-half" / "config.json").is_file()


def test_samples_are_written_and_rescore_to_the_records(quick_run) -> None:
    out, results = quick_run
    for model in ("mdm", "flexmdm", "retrofit"):
        rows = [
            json.loads(x)
            for x in (out / "samples" / f"brackets-{model}-seed0.jsonl").read_text().splitlines()
        ]
        assert len(rows) == 8 and all(set(r) == {"text"} for r in rows)
        record = next(r for r in results["records"] if r["task"] == "brackets" and r["model"] == model)
        assert brackets.evaluate([r["text"] for r in rows])["validity"] == record["metrics"]["validity"]
        mazes = [
            json.loads(x) for x in (out / "samples" / f"maze-{model}-seed0.jsonl").read_text().splitlines()
        ]
        assert len(mazes) == MazeTask.quick.test_cases
        for row in mazes:
            assert set(row) == {"level", "grid", "start", "goal", "subgoals", "path"}
            assert row["path"] is None or all(len(cell) == 2 for cell in row["path"])
            check = maze.check_path(row["grid"], tuple(row["start"]), tuple(row["goal"]),
                                    [tuple(s) for s in row["subgoals"]], row["path"])  # fmt: skip
            assert check.success in (True, False)


def test_missing_recipes_fail_before_any_work(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="maze-mdm.yaml.*point --recipes"):
        run_repro(["maze"], tmp_path / "out", quick=True, recipes_dir=tmp_path / "none", echo=lambda _: None)
    assert not (tmp_path / "out").exists()
