"""Bad local data fails with the file, the line (or the counts) and the fix (issue #16, item 2).

Cases: an empty file, a broken JSON row, a non-UTF-8 file, a path that does not exist, and rows
longer than ``max_length`` (all of them: an error before training; some: dropped and reported).
The tokenizer is the byte-level one: an ASCII character is one token, so lengths are exact.
"""

from __future__ import annotations

import json
import logging

import pytest

from retrofit.data.builder import build_dataset, build_mixture
from retrofit.data.file_checks import DataFileError, check_local_file
from retrofit.data.report import NoSamplesError
from retrofit.data.sources import load_source
from retrofit.models.tokenizer import build_tokenizer

ROWS = [{"prompt": "Q: 1+1?", "response": "2"}, {"prompt": "Q: 2+2?", "response": "4"}]


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


def _jsonl(path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.mark.parametrize("content", ["", "\n  \n\n"])
def test_empty_file_names_the_file_and_the_fix(tmp_path, content) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_text(content)
    with pytest.raises(DataFileError) as err:
        load_source(str(path))
    message = str(err.value)
    assert message.startswith(f"{path}: the file is empty (no rows).")
    assert "one JSON object per line" in message and "remove this source from data.train" in message


@pytest.mark.parametrize(
    ("bad_line", "where"),
    [  # columns are 1-based: the token after the missing comma; the opening quote of the string
        ('{"prompt": "Q: 3+3?" "response": "6"}', "column 22: not valid JSON (Expecting ',' delimiter)"),
        (
            '{"prompt": "Q: 3+3?", "response": "6',
            "column 35: not valid JSON (Unterminated string starting at column 35)",
        ),
    ],
)
def test_broken_json_row_names_file_line_and_column(tmp_path, bad_line, where) -> None:
    path = tmp_path / "broken.jsonl"
    path.write_text("\n".join([json.dumps(ROWS[0]), json.dumps(ROWS[1]), bad_line]) + "\n")
    with pytest.raises(DataFileError) as err:
        build_dataset({"format": "sft", "source": str(path)}, build_tokenizer(), max_length=32)
    message = str(err.value)
    assert message.startswith(f"{path}: line 3, {where}.")
    assert "Fix or delete that line: each line must be one JSON object" in message


def test_jsonl_row_that_is_not_an_object_names_its_line(tmp_path) -> None:
    path = tmp_path / "lists.jsonl"
    path.write_text(json.dumps(ROWS[0]) + "\n\n[1, 2]\n")
    with pytest.raises(DataFileError, match=r"lists.jsonl: line 3: a JSON list, not an object"):
        load_source(str(path))


def test_broken_json_array_file_names_the_line(tmp_path) -> None:
    path = tmp_path / "rows.json"
    path.write_text('[\n {"prompt": "a", "response": "b"},\n {"prompt": "c" "response": "d"}\n]\n')
    with pytest.raises(DataFileError) as err:
        load_source(str(path))
    assert str(err.value).startswith(f"{path}: line 3, column 17: not valid JSON (Expecting ',' delimiter)")
    assert "write the file as JSON lines" in str(err.value)


def test_non_utf8_file_names_line_byte_offset_and_reencoding(tmp_path) -> None:
    path = tmp_path / "latin1.jsonl"
    first = (json.dumps(ROWS[0]) + "\n").encode()
    second = '{"prompt": "Café?", "response": "oui"}\n'.encode("latin-1")  # é = 0xe9
    path.write_bytes(first + second)
    with pytest.raises(DataFileError) as err:
        load_source(str(path))
    offset = len(first) + second.index(b"\xe9")
    message = str(err.value)
    assert message.startswith(f"{path}: line 2 (byte offset {offset}, column 16): byte 0xe9 is not UTF-8")
    assert "Re-encode the file as UTF-8" in message and "iconv -f latin1 -t utf-8 latin1.jsonl" in message


def test_non_utf8_text_and_csv_files_are_caught_too(tmp_path) -> None:
    for name in ("doc.txt", "rows.csv"):
        path = tmp_path / name
        path.write_bytes(b"text\nok\n\xff\n")
        with pytest.raises(DataFileError, match=rf"{name}: line 3 \(byte offset 8, column 1\): byte 0xff"):
            check_local_file(path)


@pytest.mark.parametrize(
    "source", ["{tmp}/missing.jsonl", "{tmp}/nested/dir", "./no/such/folder", "data.csv"]
)
def test_missing_local_path_says_no_such_file(tmp_path, monkeypatch, source) -> None:
    monkeypatch.chdir(tmp_path)
    source = source.format(tmp=tmp_path)
    with pytest.raises(FileNotFoundError) as err:
        load_source(source)
    message = str(err.value)
    assert message.startswith("no such file: ") and "RETROFIT_DATA_DIR" not in message
    assert f"Fix the path in data.train / data.eval (source: {source!r})" in message
    if not source.startswith("/"):
        assert f"(relative paths are read from {tmp_path})" in message


def test_csv_with_only_a_header_has_no_rows(tmp_path) -> None:
    path = tmp_path / "header.csv"
    path.write_text("prompt,response\n")
    with pytest.raises(DataFileError, match=rf"{path}: no rows \(only a header\?\)\. Add rows"):
        load_source(str(path))


def test_every_row_too_long_fails_with_counts_and_the_max_length_to_use(tok, tmp_path) -> None:
    rows = [{"prompt": "Q: ", "response": "x" * n} for n in (20, 40, 30)]  # 23, 43, 33 tokens
    path = _jsonl(tmp_path / "long.jsonl", rows)
    with pytest.raises(NoSamplesError) as err:
        build_mixture([{"format": "sft", "source": path}], tok, max_length=16)
    message = str(err.value)
    assert message.startswith(f"data {path}/train [sft]: no sample left: 3 rows read, 3 dropped as too long.")
    assert (
        "The longest row has 43 tokens but data.max_length=16: raise it, e.g. data.max_length=43" in message
    )
    ds, report = build_mixture([{"format": "sft", "source": path}], tok, max_length=43)  # the advice works
    assert (len(ds), report.samples, report.num_skipped) == (3, 3, 0)


def test_every_text_document_too_long_suggests_overflow_split(tok, tmp_path) -> None:
    path = _jsonl(tmp_path / "docs.jsonl", [{"text": "a" * 12}, {"text": "b" * 9}])
    with pytest.raises(NoSamplesError) as err:
        build_mixture([{"format": "text", "source": path, "overflow": "skip"}], tok, max_length=8)
    assert "2 rows read, 2 dropped as too long" in str(err.value)
    assert "data.max_length=12 (or set overflow: split / truncate in the data spec)" in str(err.value)


def test_every_row_bad_names_the_reason_and_the_fields(tok, tmp_path) -> None:
    path = _jsonl(tmp_path / "fields.jsonl", [{"prompt": "a", "response": None}] * 2)
    with pytest.raises(NoSamplesError) as err:
        build_mixture([{"format": "sft", "source": path}], tok, max_length=16)
    message = str(err.value)
    assert "2 rows read, 2 dropped as bad row. (bad row: a required field is missing" in message
    assert "name the right columns in the data spec (prompt_field / response_field" in message


def test_some_rows_too_long_are_dropped_and_reported(tok, tmp_path, caplog) -> None:
    rows = [{"prompt": "Q: ", "response": "x" * n} for n in (5, 40, 9)]  # 8, 43, 12 tokens
    path = _jsonl(tmp_path / "mixed.jsonl", rows)
    with caplog.at_level(logging.INFO, logger="retrofit.data.report"):
        ds, report = build_mixture([{"format": "sft", "source": path}], tok, max_length=16)
    assert sorted(len(x) for x in ds["input_ids"]) == [8, 12]
    assert (report.rows, report.samples, dict(report.skipped), report.longest) == (3, 2, {"too_long": 1}, 43)
    assert "3 rows -> 2 samples; skipped: too_long=1; longest row: 43 tokens" in caplog.text
