"""Tests of the infilling formats and builder (retrofit.data.infill_format, retrofit.data.infill).

Split ranges are checked over 200 seeds x 64 rows against docs/method.md §1.7:
flexmdm e in [c, l-3], f in [e+1, l-1]; fim e in [c, l-1], f in [e+1, l] (suffix may be empty).
"""

from __future__ import annotations

import json

import pytest
import torch

from retrofit.data.builder import build_dataset
from retrofit.data.infill_format import (
    BOUNDARY,
    FIM_DELIMITERS,
    boundary_ids,
    boundary_layout,
    draw_infill_split,
    encode_segments,
    extract_middle,
    fim_ids,
    fim_layout,
    fim_overhead,
    fim_prompt_ids,
    infill_canvas_width,
    infill_prompt_ids,
)
from retrofit.data.sources import load_source
from retrofit.models.tokenizer import build_tokenizer
from retrofit.training.collator import FlexMDMCollator, MDMCollator

PAD = 0


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


def random_rows(seed: int, rows: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    cutoffs = torch.randint(0, 20, (rows,), generator=gen)
    lengths = cutoffs + 3 + torch.randint(0, 40, (rows,), generator=gen)
    return lengths, cutoffs


@pytest.mark.parametrize("style", ["flexmdm", "fim"])
def test_split_indices_obey_spec_ranges_over_many_seeds(style: str) -> None:
    hi_e, hi_f = (3, 1) if style == "flexmdm" else (1, 0)
    for seed in range(200):
        lengths, cutoffs = random_rows(seed)
        u = torch.rand(2, 64, generator=torch.Generator().manual_seed(10_000 + seed), dtype=torch.float64)
        e, f = draw_infill_split(lengths, cutoffs, u[0], u[1], style=style)
        assert bool(((cutoffs <= e) & (e <= lengths - hi_e)).all()), seed
        assert bool(((e + 1 <= f) & (f <= lengths - hi_f)).all()), seed
    # extreme uniforms reach both ends; every admissible (e, f) of a small case is hit
    ell, c = torch.tensor([9]), torch.tensor([2])
    lo = draw_infill_split(ell, c, torch.zeros(1), torch.zeros(1), style=style)
    top = draw_infill_split(ell, c, torch.tensor([1 - 1e-12]), torch.tensor([1 - 1e-12]), style=style)
    assert (int(lo[0]), int(lo[1])) == (2, 3) and int(top[0]) == 9 - hi_e
    grid = torch.linspace(0, 1 - 1e-9, 64, dtype=torch.float64)
    e, f = draw_infill_split(
        ell.expand(64 * 64), c.expand(64 * 64), grid.repeat_interleave(64), grid.repeat(64), style=style
    )
    pairs = set(zip(e.tolist(), f.tolist()))
    expected = {(a, b) for a in range(2, 9 - hi_e + 1) for b in range(a + 1, max(8, a + 1) + 1)}
    assert pairs == expected
    with pytest.raises(ValueError, match="too short"):
        draw_infill_split(torch.tensor([4]), torch.tensor([2]), torch.zeros(1), torch.zeros(1))


def test_boundary_layout_exact_example() -> None:
    x1 = torch.tensor([[10, 11, 12, 13, 14, 15, 16, 17, PAD, PAD]])
    ids, real, protected = boundary_layout(
        x1, torch.tensor([8]), torch.tensor([3]), torch.tensor([5]), [1, 2], PAD, width=14
    )
    assert ids.tolist() == [[10, 11, 12, 1, 2, 13, 14, 1, 2, 15, 16, 17, PAD, PAD]]
    assert real.tolist() == [[True] * 12 + [False] * 2]
    assert protected.tolist() == [[True] * 5 + [False] * 2 + [True] * 5 + [False] * 2]
    with pytest.raises(ValueError, match="canvas is 11"):
        boundary_layout(x1, torch.tensor([8]), torch.tensor([3]), torch.tensor([5]), [1, 2], PAD, width=11)


def test_protected_is_prefix_plus_b_and_b_plus_suffix_over_many_seeds() -> None:
    k, width = 3, 64 + 6
    boundary = [1, 2, 3]
    for seed in range(50):
        lengths, cutoffs = random_rows(seed, rows=16)
        x1 = torch.where(torch.arange(64) < lengths[:, None], torch.arange(100, 164), PAD)
        u = torch.rand(2, 16, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        e, f = draw_infill_split(lengths, cutoffs, u[0], u[1])
        ids, real, protected = boundary_layout(x1, lengths, e, f, boundary, PAD, width)
        pos = torch.arange(width)
        middle = (pos >= (e + k)[:, None]) & (pos < (f + k)[:, None])
        assert torch.equal(protected, real & ~middle)
        assert torch.equal(real.sum(1), lengths + 2 * k)
        assert torch.equal(ids[middle], x1[(pos[:64] >= e[:, None]) & (pos[:64] < f[:, None])])  # true middle
        assert torch.equal(ids.masked_fill(~real, PAD).ne(PAD).sum(1), lengths + 2 * k)


def test_fim_layout_exact_example() -> None:
    ids_map = {"instruction": [7, 7], "<prefix>": [1], "</prefix>": [2], "<suffix>": [3], "</suffix>": [4]}
    x1 = torch.tensor([[10, 11, 12, 13, 14, 15, PAD]])
    ids, real, protected = fim_layout(
        x1, torch.tensor([6]), torch.tensor([2]), torch.tensor([4]), ids_map, PAD, 13
    )
    assert ids.tolist() == [[7, 7, 1, 10, 11, 2, 3, 14, 15, 4, 12, 13, PAD]]
    assert protected.tolist() == [[True] * 10 + [False] * 3]
    assert real.tolist() == [[True] * 12 + [False]]


def test_boundary_tokenized_segment_wise_same_at_train_and_eval(tok) -> None:
    b = boundary_ids(tok)
    assert b == tok(BOUNDARY, add_special_tokens=False)["input_ids"] and len(b) == len(BOUNDARY)
    prefix, suffix = "def add(a, b):\n    ", "\n    return c\n"
    pre_ids, suf_ids = infill_prompt_ids(tok, prefix, suffix)
    assert pre_ids == encode_segments(tok, [prefix]) + b and suf_ids == b + encode_segments(tok, [suffix])
    assert infill_canvas_width(100, tok) == 100 + 2 * len(b)
    text = tok.decode(pre_ids + tok("c = a + b", add_special_tokens=False)["input_ids"] + suf_ids)
    assert extract_middle(text) == "c = a + b" and extract_middle("no boundary") is None
    ids = fim_ids(tok)
    assert set(ids) == {"instruction", *FIM_DELIMITERS} and fim_overhead(tok) == sum(map(len, ids.values()))
    assert (
        fim_prompt_ids(tok, "x", "y")
        == ids["instruction"]
        + ids["<prefix>"]
        + list(b"x")
        + ids["</prefix>"]
        + ids["<suffix>"]
        + list(b"y")
        + ids["</suffix>"]
    )


def test_infill_builder_pairs_and_documents(tok, tmp_path) -> None:
    rows = [
        {"instruction": "Write f.", "output": "def f():\n    return 1\n"},  # kept, c = 8
        {"instruction": "Long.", "output": "x" * 100},  # too_long
        {"instruction": "Short.", "output": "ab"},  # l = 8 < c + 3 = 9: no_room
    ]
    path = tmp_path / "opc.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = {
        "format": "infill",
        "source": str(path),
        "prompt_field": "instruction",
        "response_field": "output",
    }
    ds, report = build_dataset(spec, tok, max_length=40)
    assert dict(report.skipped) == {"too_long": 1, "no_room": 1} and report.samples == 1
    assert ds[0] == {
        "input_ids": list(b"Write f.def f():\n    return 1\n"),
        "prompt_length": 0,
        "infill_cutoff": 8,
        "anchors": [],
    }
    truncated, report = build_dataset({**spec, "overflow": "truncate"}, tok, max_length=40)
    assert [len(x) for x in truncated["input_ids"]] == [30, 40] and report.truncated == 1
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "m.py").write_text("y = 2\n" * 10)  # 60 tokens -> chunks 25, 25, 10
    (tmp_path / "code" / "tiny.py").write_text("z\n")  # 2 tokens: no room for a middle and suffix
    docs, report = build_dataset({"format": "infill", "source": f"code:{tmp_path / 'code'}"}, tok, 25)
    assert [len(x) for x in docs["input_ids"]] == [25, 25, 10] and set(docs["infill_cutoff"]) == {0}
    assert dict(report.skipped) == {"no_room": 1} and report.split_extra == 2


def test_humaneval_monitoring_set_from_local_files(tok, data_dir) -> None:
    raw = load_source("humaneval", "test", data_dir=data_dir)
    assert len(raw) == 164 and raw[0]["task_id"] == "HumanEval/0"
    assert raw[0]["prompt"].rstrip().endswith('"""') and raw[0]["solution"].endswith("    return False\n")
    for row in raw:  # prompt + solution is the whole reference program
        compile(row["prompt"] + row["solution"], row["task_id"], "exec")
    ds, report = build_dataset(
        {"format": "infill", "source": "humaneval", "split": "test"}, tok, 4096, data_dir=data_dir
    )
    assert report.samples == 164 and report.num_skipped == 0
    assert ds[0]["infill_cutoff"] == len(raw[0]["prompt"].encode())
    assert ds[0]["input_ids"] == list((raw[0]["prompt"] + raw[0]["solution"]).encode())


def test_collators_lay_out_infill_rows_with_true_middle_length(tok) -> None:
    mask_id, b = tok.convert_tokens_to_ids("<|mdm_mask|>"), boundary_ids(tok)
    sample = {"input_ids": list(b"# add\ndef add(a, b):\n    return a + b\n"), "infill_cutoff": 6}
    ell, k = len(sample["input_ids"]), len(b)
    # linear insertion: T1 >= 1e-6 > t = 0 for every token (geometric inserts ~e^-10 of them at t < 0)
    collator = FlexMDMCollator(
        tok, mask_id=mask_id, canvas_width=ell + 2 * k, seed=1, insertion_schedule="linear"
    )
    for _ in range(20):  # at t = 0 only prefix + B + B + suffix remain; the gap between the Bs is the middle
        out = collator([{**sample, "t": 0.0}])
        n = int(out["attention_mask"].sum())
        row = out["input_ids"][0, :n].tolist()
        first = next(i for i in range(n) if row[i : i + k] == b)
        assert row[first + k : first + 2 * k] == b and row[:first] == sample["input_ids"][:first]
        middle = int(out["gaps"][0, first + k])
        assert (
            middle >= 1 and first >= 6 and n - 2 * k + middle == ell and int(out["gaps"][0].sum()) == middle
        )
    mdm = MDMCollator(tok, mask_id=mask_id, canvas_width=ell + fim_overhead(tok) + 4)
    out = mdm([{**sample, "t": 1.0}])  # p = 1: every response position (middle + pad tail) is masked
    masked = out["mask_slots"][0]
    first_masked = int(masked.nonzero()[0])
    assert bool(masked[first_masked:].all()) and not bool(masked[:first_masked].any())
    tail = out["targets"][0, first_masked:].tolist()
    assert tail[-4:] == [tok.pad_token_id] * 4 and bytes(tail[:-4]) in bytes(sample["input_ids"])
