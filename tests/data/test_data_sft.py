"""Tests of the `sft` format (retrofit.data.sft) and the GSM8K source.

Uses the data-free byte-level tokenizer (one id per byte) and the local GSM8K copy in
../shared/data (conftest `data_dir`).
"""

from __future__ import annotations

import json

import pytest
import torch

from retrofit.data.builder import build_dataset
from retrofit.data.gsm8k_format import build_prompt, build_target
from retrofit.data.sft import encode_prompt, encode_prompt_response
from retrofit.data.sources import load_source
from retrofit.models.tokenizer import build_tokenizer
from retrofit.training.collator import FlexMDMCollator


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


def test_gsm8k_local_loader_reads_shared_data(data_dir) -> None:
    train = load_source("gsm8k", "train", data_dir=data_dir)
    test = load_source("gsm8k", "test", data_dir=data_dir)
    assert (len(train), len(test)) == (7473, 1319)
    assert set(train.column_names) == {"question", "answer"}
    assert train[0]["question"].startswith("Natalia sold clips to 48 of her friends")
    with pytest.raises(FileNotFoundError, match="RETROFIT_DATA_DIR"):
        load_source("gsm8k", "validation", data_dir=data_dir)


def test_sft_protects_exactly_the_prompt_tokens(tok, data_dir) -> None:
    spec = {"format": "sft", "source": "gsm8k", "split": "test", "limit": 8}
    ds, report = build_dataset(spec, tok, max_length=2048, seed=0, data_dir=data_dir)
    rows = load_source("gsm8k", "test", data_dir=data_dir).select(range(8))
    assert (report.rows, report.samples, report.num_skipped) == (8, 8, 0)
    for sample, row in zip(ds, rows):
        prompt_ids = encode_prompt(tok, build_prompt(row["question"], tok))
        response_ids = tok(build_target(row["answer"]), add_special_tokens=False)["input_ids"]
        assert sample["prompt_length"] == len(prompt_ids)
        assert sample["input_ids"] == prompt_ids + response_ids
        assert prompt_ids[0] == tok.bos_token_id and prompt_ids.count(tok.bos_token_id) == 1
        assert (sample["input_ids"], len(prompt_ids)) == encode_prompt_response(
            tok, build_prompt(row["question"], tok), build_target(row["answer"])
        )
    # In the collator the protected set is exactly ids[:P]: near t = 0 only the prompt is left and
    # the gap right after it holds the whole response.
    mask_id = tok.convert_tokens_to_ids("<|mdm_mask|>")
    collator = FlexMDMCollator(tok, mask_id=mask_id, canvas_width=2048, insertion_schedule="linear")
    batch = collator([{**s, "t": 0.0} for s in ds])
    for b, sample in enumerate(ds):
        p, n = sample["prompt_length"], len(sample["input_ids"])
        assert int(batch["attention_mask"][b].sum()) == p
        assert batch["input_ids"][b, :p].tolist() == sample["input_ids"][:p]
        assert batch["gaps"][b, : p + 1].tolist() == [0.0] * p + [float(n - p)]
    # ... and near t = 1 no prompt slot is ever masked while response slots are.
    batch = collator([{**s, "t": 0.999} for s in ds])
    protected = torch.arange(batch["mask_slots"].shape[1]) < torch.tensor(ds["prompt_length"])[:, None]
    assert not bool((batch["mask_slots"] & protected).any()) and int(batch["mask_slots"].sum()) > 0


def test_sft_skip_counters(tok, tmp_path) -> None:
    rows = [
        {"prompt": "Q: 1+1?", "response": "2"},  # kept: 7 + 1 tokens
        {"prompt": "Q: " + "x" * 20, "response": "y"},  # prompt alone fills max_length: no_room
        {"prompt": "Q: 2+2?", "response": "four " * 4},  # 7 + 20 > 16: too_long
        {"prompt": "Q: 3+3?", "response": ""},  # empty response
        {"prompt": None, "response": "z"},  # bad_row
        {"prompt": "Q:", "response": "abcdefghijklmn"},  # kept: exactly 16 tokens
    ]
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    ds, report = build_dataset({"format": "sft", "source": str(path)}, tok, max_length=16)
    assert dict(report.skipped) == {"no_room": 1, "too_long": 1, "empty": 1, "bad_row": 1}
    assert (report.rows, report.samples) == (6, 2)
    assert ds["prompt_length"] == [7, 2] and [len(x) for x in ds["input_ids"]] == [8, 16]
    assert ds[0]["input_ids"] == list(b"Q: 1+1?2")  # plain template: fields verbatim, no EOS


def test_gsm8k_answer_without_marker_is_a_bad_row(tok, tmp_path) -> None:
    path = tmp_path / "gsm.jsonl"
    good = {"question": "What is 2+3?", "answer": "2+3=5\n#### 5"}
    path.write_text(json.dumps(good) + "\n" + json.dumps({"question": "q", "answer": "no marker"}) + "\n")
    spec = {"format": "sft", "source": str(path), "template": "gsm8k", "prompt_field": "question"}
    ds, report = build_dataset({**spec, "response_field": "answer"}, tok, max_length=4096)
    assert dict(report.skipped) == {"bad_row": 1} and report.samples == 1
    text = tok.decode(ds[0]["input_ids"][ds[0]["prompt_length"] :])
    assert text == "2+3=5\n</reasoning>\n<answer>\\boxed{5}</answer>"
