"""Tests for retrofit.data.gsm8k_format: prompt / target layout, gold parsing, loading
(docs/method.md §5.2, §6.1)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from tokenizers import Tokenizer, models
from transformers import PreTrainedTokenizerFast

from retrofit.data.gsm8k_format import (
    SYSTEM_PROMPT,
    build_prompt,
    build_target,
    load_gsm8k,
    normalize_number,
    parse_gold,
    user_turn,
)
from retrofit.evaluation.answers import extract_answer

DATA_DIR = Path(os.environ.get("RETROFIT_DATA_DIR", ""))  # set by conftest.py (the local data copy)
# LLaDA-style chat template (docs/method.md §8.4), enough to exercise apply_chat_template for real.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
    "{{ m['content'] }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
ANSWER = "Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs a day.\nShe makes 9 * 2 = $<<9*2=18>>18.\n#### 18"


def _tiny_tokenizer(chat_template: str | None) -> PreTrainedTokenizerFast:
    tok = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(models.WordLevel({"<unk>": 0, "<|startoftext|>": 1}, unk_token="<unk>")),
        bos_token="<|startoftext|>",
        unk_token="<unk>",
    )
    tok.chat_template = chat_template
    return tok


def test_system_prompt_only_has_placeholder_boxes():
    # answer extraction over prompt + generation relies on this (docs/method.md §6.1 step 1)
    assert "\\boxed{}" in SYSTEM_PROMPT and "\\boxed{...}" in SYSTEM_PROMPT
    assert extract_answer(SYSTEM_PROMPT) is None


def test_build_prompt_plain_text():
    q = "What is 2 + 3?"
    assert user_turn(q) == SYSTEM_PROMPT + "\n\n" + q
    assert build_prompt(q) == SYSTEM_PROMPT + "\n\n" + q + "\n\n<reasoning>"
    assert build_prompt(q, _tiny_tokenizer(None)) == build_prompt(q)


def test_build_prompt_applies_chat_template():
    q = "What is 2 + 3?"
    expected = (
        "<|startoftext|><|start_header_id|>user<|end_header_id|>\n\n"
        + SYSTEM_PROMPT
        + "\n\n"
        + q
        + "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n<reasoning>"
    )
    assert build_prompt(q, _tiny_tokenizer(CHAT_TEMPLATE)) == expected


def test_build_target_keeps_rationale_and_boxes_answer():
    expected = (
        "Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs a day.\nShe makes 9 * 2 = $<<9*2=18>>18.\n"
        "</reasoning>\n<answer>\\boxed{18}</answer>"
    )
    assert build_target(ANSWER) == expected
    with pytest.raises(ValueError, match="####"):
        build_target("no final answer here")


@pytest.mark.parametrize(
    ("answer", "gold"),
    [
        ("x\n#### 18", "18"),
        ("x\n#### 1,000", "1000"),
        ("x\n#### -5", "-5"),  # the research regex loses the minus sign; we keep it
        ("x\n#### $3.50", "3.5"),
        ("x\n#### 72.0", "72"),
        ("a #### b\n#### 7", "7"),  # the last marker counts
        ("x\n#### twelve", None),
        ("no marker 18", None),
    ],
)
def test_parse_gold(answer, gold):
    assert parse_gold(answer) == gold


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (" 1,234,567 ", "1234567"),
        ("\\$18", "18"),
        ("72.", "72"),
        ("+4", "4"),
        ("\u22123", "-3"),
        ("0.50", "0.5"),
        (".25", "0.25"),
        ("3/4", "0.75"),
        ("\\frac{1}{2}", "0.5"),
        ("1/0", None),
        ("1.2.3", None),
        ("12 apples", None),
        ("", None),
        (None, None),
    ],
)
def test_normalize_number(text, expected):
    assert normalize_number(text) == expected


def test_load_gsm8k_local_files_and_gold_round_trip():
    test = load_gsm8k("test", data_dir=DATA_DIR)
    train = load_gsm8k("train", data_dir=DATA_DIR)
    assert (len(train), len(test)) == (7473, 1319)
    assert test[0]["question"].startswith("Janet\u2019s ducks lay 16 eggs")
    assert set(test[0]) == {"question", "answer"}
    # every example's own target yields its gold answer, also with the prompt decoded in front
    for row in test + train:
        gold = parse_gold(row["answer"])
        assert gold is not None
        assert extract_answer(build_prompt(row["question"]) + build_target(row["answer"])) == gold


def test_load_gsm8k_reads_env_var(monkeypatch):
    monkeypatch.setenv("RETROFIT_DATA_DIR", str(DATA_DIR))
    assert len(load_gsm8k("test")) == 1319


def test_load_gsm8k_missing_file_names_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"gsm8k[/\\]test\.jsonl.*RETROFIT_DATA_DIR"):
        load_gsm8k("test", data_dir=tmp_path)


def test_load_gsm8k_bad_row_names_line(tmp_path):
    (tmp_path / "gsm8k").mkdir()
    (tmp_path / "gsm8k" / "test.jsonl").write_text(json.dumps({"question": "q"}) + "\n")
    with pytest.raises(ValueError, match=r"test\.jsonl:1"):
        load_gsm8k("test", data_dir=tmp_path)


def test_load_gsm8k_falls_back_to_hub(monkeypatch):
    import datasets

    calls = []

    def fake_load_dataset(path, name, split):
        calls.append((path, name, split))
        return [{"question": "q", "answer": "a\n#### 1", "extra": 0}]

    monkeypatch.delenv("RETROFIT_DATA_DIR", raising=False)
    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    assert load_gsm8k("train") == [{"question": "q", "answer": "a\n#### 1"}]
    assert calls == [("openai/gsm8k", "main", "train")]


def test_load_gsm8k_offline_error_says_how_to_fix_it(monkeypatch):
    import datasets

    def offline(path, name, split):
        raise ConnectionError("Couldn't reach 'openai/gsm8k' on the Hub (OfflineModeIsEnabled)")

    monkeypatch.delenv("RETROFIT_DATA_DIR", raising=False)
    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(ConnectionError, match="RETROFIT_DATA_DIR .* gsm8k/test.jsonl"):
        load_gsm8k("test")
