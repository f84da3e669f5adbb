"""Help shows real defaults and whole field docs (#16 item 5)."""

from __future__ import annotations

import re

import pytest

from retrofit.cli import main
from retrofit.commands.eval import DEFAULTS
from retrofit.sampling import FlexMDMSamplerConfig, MDMSamplerConfig


def help_text(capsys, *argv: str) -> str:
    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--help"])
    assert exit_.value.code == 0
    return " ".join(capsys.readouterr().out.split())  # argparse wraps lines: compare word by word


def test_generate_help_shows_the_samplers_defaults(capsys):
    text = help_text(capsys, "generate")
    flex, mdm = FlexMDMSamplerConfig(), MDMSamplerConfig()
    assert f"else FlexMDM {flex.steps}, LLaDA {mdm.steps})" in text
    assert f"(default FlexMDM {flex.temperature}, LLaDA {mdm.temperature})" in text
    assert f"LLaDA: generated tokens (default {mdm.gen_length})" in text
    assert f"(default {flex.confidence};" in text and "--prompt-template {auto,chat,plain}" in text


@pytest.mark.parametrize("task", ["gsm8k", "humaneval-infill", "length"])
def test_eval_tasks_have_a_description_and_their_defaults(capsys, task):
    text = help_text(capsys, "eval", task)
    assert re.search(r"model_dir|model_dirs", text)
    usage_end = text.index("positional arguments")
    assert "results.json" in text[:usage_end]  # the description sits between usage and arguments
    steps = DEFAULTS[task]
    assert (
        f"sampler steps (default FlexMDM {steps['flexmdm']['steps']}, LLaDA {steps['llada']['steps']})"
        in text
    )


def test_train_help_lists_whole_field_docs_with_defaults(capsys):
    text = help_text(capsys, "train")
    # a docstring entry that spans three lines is printed whole
    assert (
        "model.init_from (default None): optional training checkpoint of an earlier stage whose trainable "
        "weights (LoRA + graft modules) initialise this run (weights only: fresh optimizer and schedule)."
    ) in text
    assert "objective.time_sampling (default 'banded'):" in text and '"stratified" (per micro-batch' in text
    assert "data.max_length (default 1024):" in text and "training.loss (default 'flexmdm'):" in text
    assert (
        "lora.train_token_head (default False): train the LM head" in text and "(docs/method.md §9.2)" in text
    )
