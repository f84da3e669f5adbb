"""The smoke demo end to end (`retrofit demo --smoke`, what `make demo DEMO_SMOKE=1` runs).

Every stage runs through the public commands as subprocesses (tiny-llada, accelerate launch of
the pre-training and both fine-tunes on 2 CPU processes, graft, export, the three evals); this
test checks each stage's artefact, so a missing install step or a broken stage fails CI.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from retrofit.training.checkpoint import verify_checkpoint

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def demo_out(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "demo-out"
    proc = subprocess.run(
        [sys.executable, "-m", "retrofit.cli", "demo", "--smoke", "--quiet", "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "results.md" in proc.stdout
    return out


def _config(folder: Path) -> dict:
    return json.loads((folder / "config.json").read_text())


def test_base_is_an_official_layout_llada(demo_out):
    (base,) = demo_out.glob("cache/base-*/pretrain/final")
    config = _config(base)
    assert config["model_type"] == "llada" and config["architectures"] == ["LLaDAModelLM"]
    assert "auto_map" in config and config["mask_token_id"] is not None
    index = json.loads((base / "model.safetensors.index.json").read_text())
    shards = set(index["weight_map"].values())
    assert len(shards) >= 2 and all((base / s).is_file() for s in shards)
    assert "model.transformer.wte.weight" in index["weight_map"]
    assert (base / "tokenizer.json").is_file()


def test_graft_training_and_export_artefacts(demo_out):
    assert _config(demo_out / "flexmdm-init")["model_type"] == "flexmdm"
    for name, kind in (("flexmdm", "flexmdm"), ("mdm", "llada")):
        (ckpt,) = (demo_out / f"train-{name}").glob("checkpoint-*")
        assert verify_checkpoint(ckpt) == []
        assert json.loads((ckpt / "retrofit_checkpoint.json").read_text())["kind"] == kind
        export = demo_out / f"export-{name}"
        assert _config(export)["model_type"] == kind
        manifest = json.loads((export / "retrofit_manifest.json").read_text())
        assert manifest["complete"] is True and manifest["kind"] == kind
        errors, tolerance = manifest["verification"]["errors"], manifest["verification"]["tolerance"]
        assert tolerance and all(errors[key] <= limit for key, limit in tolerance.items())


def test_eval_results_table_and_histogram(demo_out):
    for key in ("base", "mdm", "flexmdm"):
        for bench, metric in (("gsm8k", "accuracy"), ("humaneval", "pass@1")):
            results = json.loads((demo_out / "eval" / key / bench / "results.json").read_text())
            assert 0.0 <= results["metrics"][metric] <= 1.0
    length = json.loads((demo_out / "eval" / "length" / "results.json").read_text())["metrics"]
    assert {"export-flexmdm/wasserstein1", "export-mdm/wasserstein1", "final/wasserstein1"} <= set(length)
    png = next((demo_out / "eval" / "length").glob("*.png"))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 1000
    table = (demo_out / "results.md").read_text()
    for row in ("base MDM", "MDM fine-tune", "FlexMDM", "GSM8K answers (data)", "fine-tune flexmdm"):
        assert row in table
    assert "not every model has a length result" not in table  # the base MDM is found (not "n/a")


def test_results_open_with_the_small_scale_reproduction(demo_out):
    table = (demo_out / "results.md").read_text()
    repro = table.index("## Small-scale reproduction")
    assert (
        repro < table.index("## Real-data pipeline")
        and "### Maze planning" in table
        and "paper: FlexMDM" in table
    )
    records = json.loads((demo_out / "repro" / "results.json").read_text())["records"]
    assert {(r["model"], r["level"]) for r in records} >= {
        ("flexmdm", "hard"),
        ("mdm", "hard"),
        ("retrofit", "hard"),
    }
