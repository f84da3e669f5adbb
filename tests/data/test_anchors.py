"""Anchored sft samples (multi-span infilling): the builder's `anchors` column and both collators.

Anchors are response tokens that are given: they must be protected like the prompt, i.e. present
and clean in every FlexMDM x_t and never masked by the MDM baseline's forward process.
"""

from __future__ import annotations

import json

import pytest

from retrofit.data.builder import build_dataset
from retrofit.models.tokenizer import build_word_tokenizer
from retrofit.training.collator import FlexMDMCollator, MDMCollator

WORDS = [f"w{i}" for i in range(12)]


@pytest.fixture(scope="module")
def tok():
    return build_word_tokenizer(WORDS)


@pytest.fixture()
def rows_file(tmp_path):
    rows = [
        {"prompt": "w0 w1", "response": "w2 w3 w4 w5 w6", "anchors": [0, 4]},
        {"prompt": "w1", "response": "w7 w8 w9", "anchors": [1]},
        {"prompt": "w1", "response": "w7 w8", "anchors": [2]},  # not a response-token index
        {"prompt": "w1", "response": "w7 w8", "anchors": "0"},  # not a list
    ]
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_sft_anchor_field_gives_prompt_offset_positions(tok, rows_file) -> None:
    spec = {"format": "sft", "source": str(rows_file), "template": "plain", "anchor_field": "anchors"}
    ds, report = build_dataset(spec, tok, max_length=16, seed=0)
    assert (report.samples, report.skipped["bad_row"]) == (2, 2)
    assert ds[0]["input_ids"] == [0, 1, 2, 3, 4, 5, 6] and ds[0]["prompt_length"] == 2
    assert ds[0]["anchors"] == [2, 6] and ds[1]["anchors"] == [2]
    plain, _ = build_dataset({"format": "sft", "source": str(rows_file), "template": "plain"}, tok, 16)
    assert plain[0]["anchors"] == [] and plain.column_names == ds.column_names
    with pytest.raises(ValueError, match="anchor_field"):
        build_dataset({"format": "text", "source": str(rows_file), "anchor_field": "anchors"}, tok, 16)


def _features():
    return [
        {"input_ids": [0, 1, 2, 3, 4, 5, 6], "prompt_length": 2, "anchors": [2, 6]},
        {"input_ids": [1, 7, 8, 9], "prompt_length": 1, "anchors": [2]},
    ]


def test_flexmdm_collator_keeps_anchors_at_every_time(tok) -> None:
    mask = tok.convert_tokens_to_ids("<|mdm_mask|>")
    collator = FlexMDMCollator(tokenizer=tok, mask_id=mask, canvas_width=8, insertion_schedule="linear")
    at_zero = collator([dict(f, t=0.0) for f in _features()])
    # t = 0: everything but the prompt and the anchors is deleted
    assert at_zero["input_ids"][0, :4].tolist() == [0, 1, 2, 6] and at_zero["attention_mask"][0].sum() == 4
    assert at_zero["input_ids"][1, :2].tolist() == [1, 8] and at_zero["attention_mask"][1].sum() == 2
    assert at_zero["gaps"][0, :5].tolist() == [0.0, 0.0, 0.0, 3.0, 0.0]  # w3 w4 w5 missing before w6
    assert at_zero["gaps"][1, :3].tolist() == [0.0, 1.0, 1.0]
    for t in (0.3, 0.7, 0.999):
        batch = collator([dict(f, t=t) for f in _features()])
        for b, anchor_ids in enumerate(([2, 6], [8])):
            row = batch["input_ids"][b, : int(batch["attention_mask"][b].sum())].tolist()
            assert (
                all(a in row for a in anchor_ids)
                and not batch["mask_slots"][b][[row.index(a) for a in anchor_ids]].any()
            )


def test_mdm_collator_never_masks_anchors(tok) -> None:
    mask = tok.convert_tokens_to_ids("<|mdm_mask|>")
    collator = MDMCollator(tokenizer=tok, mask_id=mask, canvas_width=8)
    batch = collator([dict(f, t=1.0) for f in _features()])  # mask probability 1 on the response
    assert batch["input_ids"][0].tolist() == [0, 1, 2, mask, mask, mask, 6, mask]
    assert batch["input_ids"][1].tolist() == [1, mask, 8, mask, mask, mask, mask, mask]
