"""Tests of the `text` format, the data report, sources and mixtures (retrofit.data.*).

The tokenizer is the data-free byte-level one (`build_tokenizer()`): an ASCII character is one
token with id = its byte value, so expected ids and lengths are exact.
"""

from __future__ import annotations

import json
import logging

import datasets
import pytest

from retrofit.data.builder import build_dataset, build_mixture
from retrofit.data.report import DataReport
from retrofit.data.sources import load_source, resolve_data_dir
from retrofit.data.text import chunk_ids
from retrofit.models.tokenizer import build_tokenizer

DOCS = ["a" * 10, "b" * 25, "", "c" * 3]


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


@pytest.fixture
def docs_file(tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in DOCS))
    return path


def test_chunk_ids_split_truncate_skip() -> None:
    ids = list(range(25))
    assert chunk_ids(ids, 10, "split") == ([ids[:10], ids[10:20], ids[20:]], "")
    assert chunk_ids(ids, 10, "truncate") == ([ids[:10]], "")
    assert chunk_ids(ids, 10, "skip") == ([], "too_long")
    assert chunk_ids([], 10, "split") == ([], "empty")
    assert chunk_ids(ids[:10], 10, "skip") == ([ids[:10]], "")
    with pytest.raises(ValueError, match="overflow"):
        chunk_ids(ids, 10, "pack")


@pytest.mark.parametrize(
    ("overflow", "lengths", "skipped", "truncated", "extra"),
    [
        ("split", [10, 10, 10, 5, 3], {"empty": 1}, 0, 2),
        ("truncate", [10, 10, 3], {"empty": 1}, 1, 0),
        ("skip", [10, 3], {"empty": 1, "too_long": 1}, 0, 0),
    ],
)
def test_text_builder_split_vs_truncate_and_counts(
    tok, docs_file, overflow, lengths, skipped, truncated, extra
):
    spec = {"format": "text", "source": str(docs_file), "overflow": overflow}
    ds, report = build_dataset(spec, tok, max_length=10, seed=0)
    assert [len(x) for x in ds["input_ids"]] == lengths
    assert ds.column_names == ["input_ids", "prompt_length", "infill_cutoff", "anchors"]
    assert set(ds["prompt_length"]) == {0} and set(ds["infill_cutoff"]) == {-1} and not any(ds["anchors"])
    assert ds[0]["input_ids"] == [ord("a")] * 10  # no special tokens, one sample per document
    assert (report.rows, report.samples, dict(report.skipped)) == (4, len(lengths), skipped)
    assert (report.truncated, report.split_extra) == (truncated, extra)


def test_report_is_logged_with_reasons(tok, docs_file, caplog) -> None:
    with caplog.at_level(logging.INFO, logger="retrofit.data.report"):
        build_dataset({"format": "text", "source": str(docs_file), "overflow": "skip"}, tok, 10)
    assert "skipped: empty=1, too_long=1" in caplog.text
    merged = DataReport("a", 2, 1, skipped={"empty": 1}).merge(DataReport("b", 3, 3))
    assert (merged.name, merged.rows, merged.samples, merged.num_skipped) == ("a + b", 5, 4, 1)
    with pytest.raises(ValueError, match="unknown skip reasons"):
        DataReport().count_reasons(["oops"])


def test_txt_file_is_one_document_and_limit_shuffle(tok, tmp_path) -> None:
    path = tmp_path / "doc.txt"
    path.write_text("line one\nline two\n")
    ds, _ = build_dataset({"format": "text", "source": str(path)}, tok, max_length=64)
    assert ds["input_ids"] == [list(b"line one\nline two\n")]
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"body": f"doc {i}"}) + "\n" for i in range(20)))
    spec = {"format": "text", "source": str(rows), "text_field": "body", "limit": 5}
    ds, report = build_dataset(spec, tok, max_length=64)
    assert [bytes(x).decode() for x in ds["input_ids"]] == [f"doc {i}" for i in range(5)] and report.rows == 5
    shuffled, _ = build_dataset({**spec, "shuffle": True}, tok, max_length=64, seed=3)
    again, _ = build_dataset({**spec, "shuffle": True}, tok, max_length=64, seed=3)
    assert shuffled["input_ids"] == again["input_ids"] != ds["input_ids"]


def test_bad_specs_and_fields_raise_clear_errors(tok, docs_file) -> None:
    with pytest.raises(ValueError, match="unknown keys"):
        build_dataset({"format": "text", "source": str(docs_file), "max_len": 3}, tok, 10)
    with pytest.raises(ValueError, match="'format' must be one of"):
        build_dataset({"format": "chat", "source": str(docs_file)}, tok, 10)
    with pytest.raises(KeyError, match="set text_field"):
        build_dataset({"format": "text", "source": str(docs_file), "text_field": "body"}, tok, 10)
    with pytest.raises(FileNotFoundError, match="no such file: "):
        build_dataset({"format": "text", "source": str(docs_file.with_name("nope.jsonl"))}, tok, 10)


def test_parallel_map_and_streaming_match_in_process(tok, docs_file) -> None:
    spec = {"format": "text", "source": str(docs_file), "overflow": "split"}
    serial, _ = build_dataset(spec, tok, max_length=10)
    parallel, report = build_dataset(spec, tok, max_length=10, num_proc=2)
    assert parallel["input_ids"] == serial["input_ids"] and report.samples == 5
    stream, report = build_dataset({**spec, "streaming": True}, tok, max_length=10)
    assert isinstance(stream, datasets.IterableDataset) and report.streaming
    assert [row["input_ids"] for row in stream] == serial["input_ids"]


def test_code_directory_source(tmp_path) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "b.py").write_text("x = 1\n")
    (tmp_path / "a.py").write_text("def f():\n    return 2\n")
    (tmp_path / "notes.md").write_text("ignored")
    ds = load_source(f"code:{tmp_path}")
    assert ds["path"] == ["a.py", "pkg/b.py"] and ds["text"][1] == "x = 1\n"
    assert load_source(str(tmp_path))["path"] == ds["path"]
    assert len(load_source("stdlib")) > 500  # this Python's own standard library
    with pytest.raises(FileNotFoundError, match="no \\*.py files"):
        load_source(f"code:{tmp_path / 'pkg' / 'missing'}")


def test_data_dir_resolution_order(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("RETROFIT_DATA_DIR", str(tmp_path))
    other = tmp_path / "other"
    other.mkdir()
    assert resolve_data_dir(other) == other  # argument > env
    assert resolve_data_dir() == tmp_path  # env > Hub
    monkeypatch.setenv("RETROFIT_DATA_DIR", "")
    assert resolve_data_dir() is None  # -> public Hub datasets
    with pytest.raises(FileNotFoundError, match="data_dir="):
        resolve_data_dir(tmp_path / "missing")


def test_mixture_concatenate_weights_and_interleave(tok, tmp_path) -> None:
    specs = []
    for name, n, weight in (("p", 10, 2.0), ("q", 6, 0.5)):
        path = tmp_path / f"{name}.jsonl"
        path.write_text("".join(json.dumps({"text": f"{name}{i}"}) + "\n" for i in range(n)))
        specs.append({"format": "text", "source": str(path), "weight": weight})
    mix, report = build_mixture(specs, tok, max_length=8, seed=0)
    texts = [bytes(x).decode() for x in mix["input_ids"]]
    assert len(texts) == 23 and report.samples == 16  # 2 x 10 + round(0.5 x 6)
    assert sorted(set(t for t in texts if t[0] == "p")) == sorted(f"p{i}" for i in range(10))
    assert all(texts.count(f"p{i}") == 2 for i in range(10)) and sum(t[0] == "q" for t in texts) == 3
    assert texts != sorted(texts, key=lambda t: (t[0], int(t[1:])))  # shuffled
    again, _ = build_mixture(specs, tok, max_length=8, seed=0)
    assert again["input_ids"] == mix["input_ids"]
    inter, _ = build_mixture(specs, tok, max_length=8, seed=0, strategy="interleave")
    inter_texts = {bytes(x).decode() for x in inter["input_ids"]}
    assert inter_texts == {f"p{i}" for i in range(10)} | {f"q{i}" for i in range(6)}  # all exhausted
    with pytest.raises(ValueError, match="weights"):
        build_mixture([{**specs[0], "weight": -1}], tok, 8)
