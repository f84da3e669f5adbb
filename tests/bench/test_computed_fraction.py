"""`retrofit bench computed-fraction` (issue #15): positions fed to the trunk with emulated ranks.

* Trimmed rows agree with the closed form of `retrofit.bench.trim_cost` (a fixed-seed Monte
  Carlo estimate; tolerance 0.02 absolute, several standard errors at these sizes).
* Packed rows on one rank cost exactly the documents' positions (slot_fraction), and W ranks
  cost W x the slowest rank's (slowest_rank_excess >= 1).
* A recipe's own examples are measured through the same data builder as `retrofit train`.
"""

from __future__ import annotations

import json

import pytest

from retrofit.bench.computed_fraction import FractionOptions, emulate_fraction
from retrofit.bench.trim_cost import expected_computed_fraction
from retrofit.cli import main


def test_trimmed_rows_match_the_closed_form() -> None:
    opts = FractionOptions(canvas=256, batch=4, accum=2, world_size=4, steps=24, mask_id=1000, pad_id=999)
    got = emulate_fraction(opts, "trimmed")["computed_fraction"]
    want = expected_computed_fraction("geometric", [256], 256, "banded", 4, 4, 2)
    assert got == pytest.approx(want, abs=0.02)


def test_packed_rows_cost_the_documents_and_ranks_wait_for_the_slowest() -> None:
    one = FractionOptions(canvas=128, batch=4, accum=2, world_size=1, steps=8, mask_id=1000, pad_id=999)
    packed, trimmed = emulate_fraction(one, "packed"), emulate_fraction(one, "trimmed")
    assert packed["computed_fraction"] == pytest.approx(packed["slot_fraction"], rel=1e-12)
    assert packed["slot_fraction"] == pytest.approx(trimmed["slot_fraction"], rel=1e-12)  # same draws
    assert packed["computed_fraction"] < trimmed["computed_fraction"] and packed["slowest_rank_excess"] == 1.0
    many = FractionOptions(canvas=128, batch=4, accum=2, world_size=4, steps=8, mask_id=1000, pad_id=999)
    spread = emulate_fraction(many, "packed")
    assert spread["slowest_rank_excess"] > 1.0
    assert spread["computed_fraction"] == pytest.approx(
        spread["slot_fraction"] * spread["slowest_rank_excess"]
    )


def test_recipe_workload_cli(tiny_flexmdm_dir, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "mode: retrofit\n"
        f"model: {{base: {tiny_flexmdm_dir}}}\n"
        "data:\n  train:\n    - {format: sft, source: gsm8k, split: train, template: gsm8k, limit: 32}\n"
        "  max_length: 1400\n"
        "training: {output_dir: out, per_device_train_batch_size: 4, gradient_accumulation_steps: 2}\n"
    )
    argv = ["bench", "computed-fraction", "--recipe", str(recipe), "--world-size", "1", "--steps", "3",
            "--layouts", "trimmed", "packed", "--out", str(tmp_path), "--name", "cf"]  # fmt: skip
    assert main(argv) == 0
    payload = json.loads((tmp_path / "cf.json").read_text())
    rows = {r["layout"]: r for r in payload["layouts"]}
    assert payload["options"]["canvas"] == 1400 and payload["options"]["batch"] == 4
    assert payload["workload"]["examples"] > 8
    assert rows["packed"]["computed_fraction"] == pytest.approx(rows["packed"]["slot_fraction"])
    assert rows["packed"]["computed_fraction"] <= rows["trimmed"]["computed_fraction"] <= 1.0
