"""Where raw rows come from: local files, directories of code, or Hub datasets.

Data-directory resolution: a ``data_dir=`` argument, else the env var RETROFIT_DATA_DIR, else the
public Hub datasets. A local data dir is laid out like ``../shared/data``
(``gsm8k/{train,test}.jsonl``, ``humaneval-infilling/*.jsonl.gz``).

Source names understood by :func:`load_source`:

| source | rows |
|---|---|
| ``gsm8k`` | ``question``, ``answer`` (local jsonl, else Hub ``openai/gsm8k`` / ``main``) |
| ``humaneval`` | ``prompt``, ``solution`` (local infilling files, else Hub ``openai/openai_humaneval``) |
| ``opc-sft`` | ``instruction``, ``output`` (Hub ``OpenCoder-LLM/opc-sft-stage2`` / ``educational_instruct``) |
| ``stdlib`` | ``text``, ``path``: the ``.py`` files of this Python's standard library |
| ``code:DIR`` or a directory | ``text``, ``path``: every ``*.py`` file below DIR (sorted) |
| a ``.json/.jsonl/.parquet/.csv/.txt`` file | its rows (``.txt``: one row per file, column ``text``) |
| anything else, e.g. ``owner/name`` or ``owner/name:config`` | the Hub dataset |

Example:
    >>> ds = load_source("gsm8k", "test", data_dir="../shared/data")   # 1319 rows
"""

from __future__ import annotations

import gzip
import json
import os
import sysconfig
from pathlib import Path
from typing import Any

import datasets

from retrofit.data.file_checks import DataFileError, check_local_file, missing_file_message
from retrofit.data.skip_dirs import SKIP_DIRS, STDLIB_EXCLUDE

__all__ = [
    "HUB_DEFAULTS",
    "SOURCE_FIELDS",
    "load_source",
    "names_a_file",
    "read_code_files",
    "read_humaneval_local",
    "resolve_data_dir",
]

HUB_DEFAULTS: dict[str, tuple[str, str | None]] = {
    "gsm8k": ("openai/gsm8k", "main"),
    "humaneval": ("openai/openai_humaneval", None),
    "opc-sft": ("OpenCoder-LLM/opc-sft-stage2", "educational_instruct"),
}
"""Short source name -> (Hub dataset, config) used when no local copy exists."""

SOURCE_FIELDS: dict[str, dict[str, str]] = {
    "gsm8k": {"prompt_field": "question", "response_field": "answer"},
    "humaneval": {"prompt_field": "prompt", "response_field": "solution"},
    "opc-sft": {"prompt_field": "instruction", "response_field": "output"},
}
"""Default field names per short source name (spec keys a builder may override)."""


_FILE_BUILDERS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv", ".txt": "text"}
_HUMANEVAL_LOCAL = "humaneval-infilling/HumanEval-SingleLineInfilling.jsonl.gz"


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path | None:
    """``data_dir`` if given, else $RETROFIT_DATA_DIR if set and non-empty, else None (use the Hub).

    Raises:
        FileNotFoundError: if the resolved folder does not exist.
    """
    chosen = data_dir if data_dir is not None else os.environ.get("RETROFIT_DATA_DIR") or None
    if chosen is None:
        return None
    path = Path(chosen).expanduser()
    if not path.is_dir():
        origin = "data_dir" if data_dir is not None else "RETROFIT_DATA_DIR"
        raise FileNotFoundError(f"{origin}={chosen!s} is not a folder; point it at a copy of ../shared/data")
    return path


def load_source(
    source: str,
    split: str = "train",
    *,
    data_dir: str | os.PathLike | None = None,
    streaming: bool = False,
) -> datasets.Dataset | datasets.IterableDataset:
    """Load the raw rows of ``source`` (see the module table).

    Args:
        source: a short name, ``code:DIR``, a directory, a local file, or a Hub name
            (``owner/name`` or ``owner/name:config``).
        split: split name ("train", "test", ...); ignored for directories and local files.
        data_dir: local data folder (overrides RETROFIT_DATA_DIR).
        streaming: return an IterableDataset (Hub and local files only).

    Returns:
        A datasets.Dataset (or IterableDataset when streaming).

    Raises:
        FileNotFoundError: a local file / folder named by the source is missing ("no such file:
            PATH" for a source that looks like a path: a file suffix, a leading / . ~, or two /).
        DataFileError: a local file is empty, not UTF-8 or holds a broken JSON row (see
            `retrofit.data.file_checks`; the message names the file, the line and the fix).
        RuntimeError: a Hub dataset could not be loaded (offline, wrong name); the message says
            how to use local data instead.
    """
    if source == "stdlib":  # the library itself, without its test suite
        return read_code_files(sysconfig.get_paths()["stdlib"], exclude=STDLIB_EXCLUDE)
    if source.startswith("code:"):
        return read_code_files(source[len("code:") :])
    local = resolve_data_dir(data_dir)
    if source == "gsm8k" and local is not None:
        return _load_file(_require(local / "gsm8k" / f"{split}.jsonl", source), streaming)
    if source == "humaneval" and local is not None:
        return read_humaneval_local(_require(local / _HUMANEVAL_LOCAL, source))
    path = Path(source).expanduser()
    if path.is_dir():
        return read_code_files(path)
    if names_a_file(source):
        if not path.is_file():
            raise FileNotFoundError(missing_file_message(path, source))
        return _load_file(path, streaming)
    if source == "humaneval":  # the Hub dataset has one "test" split; name the solution as locally
        return _load_hub(source, "test", streaming).rename_column("canonical_solution", "solution")
    return _load_hub(source, split, streaming)


def _require(path: Path, source: str) -> Path:
    if not path.is_file():
        raise FileNotFoundError(
            f"source {source!r}: {path} not found. Point RETROFIT_DATA_DIR (or data_dir=) at a folder laid "
            "out like ../shared/data, or unset it to use the public Hub dataset."
        )
    return path


def names_a_file(source: str) -> bool:
    """Whether a source names a local file rather than a Hub id (``owner/name``): it has a data
    file suffix (.jsonl, .json, .csv, ...; also .jsonl.gz), starts with / . ~ or has two slashes."""
    path = Path(source)
    if path.suffix in _FILE_BUILDERS or path.suffixes[-2:-1] == [".jsonl"]:
        return True
    return source.startswith(("/", ".", "~")) or source.count("/") >= 2


def _load_file(path: Path, streaming: bool) -> datasets.Dataset | datasets.IterableDataset:
    """Check the file with the stdlib (`check_local_file`), then read it with `datasets`."""
    suffix = ".jsonl" if path.suffixes[-2:-1] == [".jsonl"] else path.suffix
    builder = _FILE_BUILDERS.get(suffix)
    if builder is None:
        raise DataFileError(
            f"{path}: unknown data file type {suffix or '(no suffix)'!r}; use one of "
            f"{', '.join(_FILE_BUILDERS)} (or .jsonl.gz), or pass a folder of code as code:DIR"
        )
    check_local_file(path, full=not streaming)
    kwargs: dict[str, Any] = {"sample_by": "document"} if builder == "text" else {}
    no_rows = DataFileError(
        f"{path}: no rows (only a header?). Add rows, or remove it from data.train / data.eval."
    )
    try:
        ds = datasets.load_dataset(
            builder, data_files=str(path), split="train", streaming=streaming, **kwargs
        )
    except (datasets.exceptions.DatasetGenerationError, ValueError) as err:  # pyarrow names no file
        if "corresponds to no data" in str(err):
            raise no_rows from err
        detail = err.__cause__ or err
        raise DataFileError(
            f"{path}: datasets could not read it as {builder}: {type(detail).__name__}: {detail}. "
            "Check that every row has the same fields with the same types."
        ) from err
    if not streaming and len(ds) == 0:
        raise no_rows
    return ds


def _load_hub(source: str, split: str, streaming: bool) -> datasets.Dataset | datasets.IterableDataset:
    name, config = HUB_DEFAULTS.get(source, (None, None))
    if name is None:
        name, _, config_text = source.partition(":")
        config = config_text or None
    try:
        return datasets.load_dataset(name, config, split=split, streaming=streaming)
    except Exception as err:  # datasets raises many types (offline, 404, gated); add the fix
        raise RuntimeError(
            f"could not load Hub dataset {name!r} (config {config!r}, split {split!r}): {err}. "
            "Without network, set RETROFIT_DATA_DIR to a local copy (../shared/data) or use a local file."
        ) from err


def read_code_files(
    directory: str | os.PathLike, pattern: str = "*.py", exclude: frozenset[str] = SKIP_DIRS
) -> datasets.Dataset:
    """One row per file matching ``pattern`` below ``directory`` (recursive, sorted by path).

    Files inside a folder named in ``exclude`` (default `SKIP_DIRS`) are left out. The ``stdlib``
    source also leaves out ``test`` / ``tests`` (about 700 files, 11 MB on CPython 3.11).

    Undecodable bytes are replaced (U+FFFD), so a stray Latin-1 file cannot stop a run.

    Returns:
        Dataset with string columns ``text`` and ``path`` (relative to ``directory``).

    Raises:
        FileNotFoundError: ``directory`` is not a folder or holds no matching file.
    """
    root = Path(directory).expanduser()
    found = root.rglob(pattern) if root.is_dir() else []
    files = sorted(p for p in found if p.is_file() and not exclude & set(p.relative_to(root).parts[:-1]))
    if not files:
        raise FileNotFoundError(f"code source {root}: no {pattern} files found (is it a folder of code?)")
    texts = [p.read_text(encoding="utf-8", errors="replace") for p in files]
    return datasets.Dataset.from_dict({"text": texts, "path": [str(p.relative_to(root)) for p in files]})


def read_humaneval_local(path: str | os.PathLike) -> datasets.Dataset:
    """HumanEval problems (``prompt``, ``solution``) rebuilt from the single-line infilling file.

    For each problem the single-line task with the shortest prompt is used: its prompt is the
    original HumanEval prompt (signature + docstring) when the solution's first line is a task
    (160 of 164 problems), else that prompt plus the first solution lines. ``solution`` is that
    task's canonical line + suffix, so prompt + solution is the full reference program.

    Returns:
        Dataset with string columns ``task_id``, ``prompt``, ``solution`` (one row per problem, in
        task order).
    """
    best: dict[str, dict[str, str]] = {}
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            row = json.loads(line)
            task = "/".join(row["task_id"].split("/")[1:3])  # "HumanEval/17"
            if task not in best or len(row["prompt"]) < len(best[task]["prompt"]):
                best[task] = row
    tasks = sorted(best, key=lambda name: int(name.split("/")[1]))
    return datasets.Dataset.from_dict(
        {
            "task_id": tasks,
            "prompt": [best[k]["prompt"] for k in tasks],
            "solution": [best[k]["canonical_solution"] + best[k]["suffix"] for k in tasks],
        }
    )
