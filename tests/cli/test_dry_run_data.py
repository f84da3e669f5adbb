"""`retrofit train --dry-run` reports a missing local data file instead of skipping it as a Hub id."""

from __future__ import annotations

from pathlib import Path

from retrofit.cli import main
from retrofit.data.sources import names_a_file

REPO = Path(__file__).resolve().parents[2]


def test_names_a_file():
    assert names_a_file("rows.jsonl") and names_a_file("data/rows.jsonl.gz") and names_a_file("./x")
    assert names_a_file("/abs/folder") and names_a_file("a/b/c")
    assert not names_a_file("openai/gsm8k") and not names_a_file("gsm8k")


def test_dry_run_names_the_missing_file(capsys, tmp_path):
    missing = tmp_path / "missing-rows.jsonl"
    argv = [
        "train",
        str(REPO / "recipes/llada8b/gsm8k-ift.yaml"),
        "--dry-run",
        f"data.train.0.source={missing}",
    ]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert f"no such file: {missing}" in err and "Hub sources are not counted" not in err


def test_dry_run_gives_the_run_advice_for_model_base(capsys, trained_checkpoint):
    recipe = str(REPO / "recipes/tiny/flexmdm-sft.yaml")
    assert main(["train", recipe, "--dry-run", "model.base=./no-such-base"]) == 1
    assert "model.base: no such folder: ./no-such-base" in capsys.readouterr().err
    assert main(["train", recipe, "--dry-run", f"model.base={trained_checkpoint.ckpt}"]) == 1
    err = capsys.readouterr().err
    assert "is a training checkpoint" in err and "model.init_from" in err
