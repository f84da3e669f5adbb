"""generation_config.json records the prompt template of the training data (issue #16 item 6)."""

from __future__ import annotations

import json
import shutil

import pytest

from retrofit.export.generation import prompt_template_of
from retrofit.export.pipeline import export_checkpoint
from retrofit.training.checkpoint import MANIFEST_NAME, read_manifest, write_manifest

GSM8K = {"format": "sft", "source": "gsm8k", "split": "train"}


@pytest.mark.parametrize(
    ("specs", "want"),
    [
        ([GSM8K], "chat"),  # template defaults to gsm8k for source gsm8k: chat template applied
        ([{**GSM8K, "template": "gsm8k"}, {"format": "infill", "source": "stdlib"}], "chat"),
        ([{**GSM8K, "template": "plain"}], "plain"),
        ([{"format": "sft", "source": "data/maze.jsonl"}], "plain"),  # default plain for other sources
        ([GSM8K, {"format": "sft", "source": "data/x.jsonl"}], None),  # mixed
        ([{"format": "text", "source": "stdlib"}], None),  # no prompts in training
        ([{**GSM8K, "template": "alpaca"}], None),  # unknown template
        (["gsm8k"], None),  # not a spec dict
        (None, None),
        ([], None),
    ],
)
def test_prompt_template_of(specs, want):
    assert prompt_template_of(specs) == want


@pytest.mark.parametrize(("template", "want"), [("plain", "plain"), ("gsm8k", "chat")])
def test_export_writes_the_prompt_template(trained_checkpoint, tmp_path, template, want):
    ckpt = tmp_path / "checkpoint-7"
    shutil.copytree(trained_checkpoint.ckpt, ckpt)
    old = read_manifest(ckpt)
    (ckpt / MANIFEST_NAME).unlink()
    recipe = {"data": {"train": [{**GSM8K, "template": template}]}}
    write_manifest(ckpt, kind=old["kind"], base_model=old["base_model"]["path"], model_config=old["model_config"],
                   lora=old["lora"], recipe=recipe, step=old["step"])  # fmt: skip
    export_checkpoint(ckpt, tmp_path / "out", verify="layers")
    assert json.loads((tmp_path / "out" / "generation_config.json").read_text())["prompt_template"] == want


def test_unrecorded_data_gives_null(trained_checkpoint, tmp_path):
    export_checkpoint(
        trained_checkpoint.ckpt, tmp_path / "out", verify="layers"
    )  # recipe data.train: ["gsm8k"]
    assert json.loads((tmp_path / "out" / "generation_config.json").read_text())["prompt_template"] is None
