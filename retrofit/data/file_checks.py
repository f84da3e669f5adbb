"""Up-front checks of local data files, so a bad file fails with its name, line and the fix.

`datasets` reads JSON through pyarrow, whose errors name neither the file nor the line (an empty
file even ends in a bare ``StopIteration``), and it passes non-UTF-8 bytes through to the
tokenizer. `check_local_file` reads the file once with the standard library first (line by line:
memory stays flat, about 1 s per 100 MB of JSON lines) and raises `DataFileError` on the first
problem:

| problem | message names |
|---|---|
| empty file (or only blank lines) | the file and the fix (one JSON object per line / remove the entry) |
| bytes that are not UTF-8 | the file, the line and byte offset, and the fix (re-encode as UTF-8) |
| a JSON / JSONL row that does not parse | the file, the line (and column) and the fix |
| a JSONL row that is not an object | the file, the line and the row's type |

Run by hand::

    python -c "from retrofit.data.file_checks import check_local_file; check_local_file('my.jsonl')"
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import IO

__all__ = ["DataFileError", "check_local_file", "missing_file_message"]

_TEXT_SUFFIXES = (".json", ".jsonl", ".csv", ".txt")
_EXAMPLE_ROW = '{"prompt": "What is 2+3?", "response": "5"}'


class DataFileError(ValueError):
    """A local data file cannot be used; the message names the file, the line and the fix."""


def missing_file_message(path: Path, source: str) -> str:
    """The message for a data source that looks like a local path but is not there."""
    shown = str(path)
    where = "" if path.is_absolute() else f" (relative paths are read from {Path.cwd()})"
    return (
        f"no such file: {shown}{where}. Fix the path in data.train / data.eval (source: {source!r}), "
        "or name a Hub dataset as owner/name."
    )


def check_local_file(path: str | Path, *, full: bool = True) -> None:
    """Check that a local ``.json/.jsonl/.csv/.txt`` (optionally ``.gz``) data file is usable.

    Args:
        path: the file (``.parquet`` and other binary formats are only checked for being empty).
        full: read every line (UTF-8, and JSON for ``.json`` / ``.jsonl``); False only checks that
            the file holds a non-blank line (streaming sources, which should not be read twice).

    Raises:
        DataFileError: the file is empty, is not UTF-8, or holds a JSON row that does not parse
            (the message names the file, the 1-based line and the fix).
    """
    path = Path(path)
    suffixes = [s.lower() for s in path.suffixes[-2:]]
    gz = suffixes[-1:] == [".gz"]
    kind = suffixes[-2] if gz and len(suffixes) == 2 else suffixes[-1] if suffixes else ""
    if path.stat().st_size == 0:
        raise DataFileError(_empty_message(path, kind))
    if kind not in _TEXT_SUFFIXES:
        return
    with gzip.open(path, "rb") if gz else path.open("rb") as fh:
        if kind == ".json" and full:
            _check_json_document(path, fh)
        else:
            _check_lines(path, fh, parse_json=kind == ".jsonl" and full, full=full, kind=kind)


def _check_lines(path: Path, fh: IO[bytes], *, parse_json: bool, full: bool, kind: str) -> int:
    """Decode (and parse) line by line; return the number of non-blank lines."""
    rows = 0
    for number, offset, raw in _numbered_lines(fh):
        text = _decode(path, raw, number, offset)
        if not text.strip():
            continue
        rows += 1
        if parse_json:
            _parse_row(path, text, number)
        if not full:
            return rows
    if rows == 0:
        raise DataFileError(_empty_message(path, kind))
    return rows


def _check_json_document(path: Path, fh: IO[bytes]) -> None:
    """A ``.json`` file: one JSON document (array / object), else JSON lines (as `datasets` reads it)."""
    text = "".join(_decode(path, raw, number, offset) for number, offset, raw in _numbered_lines(fh))
    if not text.strip():
        raise DataFileError(_empty_message(path, ".json"))
    try:
        json.loads(text)
        return
    except json.JSONDecodeError as err:
        if text.lstrip()[:1] == "[" or "\n" not in text.strip():  # one document that is broken
            raise DataFileError(
                f"{path}: line {err.lineno}, column {err.colno}: not valid JSON "
                f"({_json_reason(err)}). Fix that "
                "row, or write the file as JSON lines (.jsonl: one object per line)."
            ) from err
    for number, line in enumerate(text.splitlines(), start=1):  # JSON lines in a .json file
        if line.strip():
            _parse_row(path, line, number)


def _numbered_lines(fh: IO[bytes]) -> Iterator[tuple[int, int, bytes]]:
    """(1-based line number, byte offset of the line, raw bytes) for each line of ``fh``."""
    offset = 0
    for number, raw in enumerate(fh, start=1):
        yield number, offset, raw
        offset += len(raw)


def _decode(path: Path, raw: bytes, number: int, offset: int) -> str:
    """One line as text; a non-UTF-8 byte raises with its line, byte offset in the file and column."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        at = offset + err.start
        bad = raw[err.start : err.start + 1].hex()
        raise DataFileError(
            f"{path}: line {number} (byte offset {at}, column {err.start + 1}): byte 0x{bad} is not UTF-8 "
            f"({err.reason}). Re-encode the file as UTF-8, e.g. "
            f"`iconv -f latin1 -t utf-8 {path.name} > fixed{''.join(path.suffixes)}` (if it is Latin-1)."
        ) from err


def _parse_row(path: Path, line: str, number: int) -> None:
    try:
        row = json.loads(line.rstrip("\r\n"))
    except json.JSONDecodeError as err:
        raise DataFileError(
            f"{path}: line {number}, column {err.colno}: not valid JSON ({_json_reason(err)}). "
            "Fix or delete that "
            f"line: each line must be one JSON object, e.g. {_EXAMPLE_ROW}"
        ) from err
    if not isinstance(row, dict):
        raise DataFileError(
            f"{path}: line {number}: a JSON {type(row).__name__}, not an object. Each line must be one "
            f"JSON object with named fields, e.g. {_EXAMPLE_ROW}"
        )


def _json_reason(err: json.JSONDecodeError) -> str:
    """json's reason, completed where it ends in "at" ("Unterminated string starting at column 7")."""
    return f"{err.msg} column {err.colno}" if err.msg.endswith(" at") else err.msg


def _empty_message(path: Path, kind: str) -> str:
    what = {
        ".jsonl": f"one JSON object per line, e.g. {_EXAMPLE_ROW}",
        ".json": f"a JSON array of objects or one object per line, e.g. [{_EXAMPLE_ROW}]",
        ".csv": "a header line with the column names, then one row per line",
        ".txt": "the document's text",
    }.get(kind, "rows")
    return (
        f"{path}: the file is empty (no rows). Fill it with {what}, or remove this source from "
        "data.train / data.eval."
    )
