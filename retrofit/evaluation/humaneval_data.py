"""Read the HumanEval-infilling benchmark files (docs/method.md §6.2).

The four benchmarks of openai/human-eval-infilling are read from local copies:
`$RETROFIT_DATA_DIR/humaneval-infilling/HumanEval-<Name>Infilling.jsonl.gz`. (The PyPI package
`human-eval-infilling` ships no data, so there is no download fallback.)

Example:
    >>> problems = read_problems("single-line")          # 1033 tasks, keyed by task_id
    >>> problems["SingleLineInfilling/HumanEval/0/L0"]["entry_point"]
    'has_close_elements'
"""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

BENCHMARKS: dict[str, str] = {
    "single-line": "HumanEval-SingleLineInfilling.jsonl.gz",
    "multi-line": "HumanEval-MultiLineInfilling.jsonl.gz",
    "random-span": "HumanEval-RandomSpanInfilling.jsonl.gz",
    "random-span-light": "HumanEval-RandomSpanInfillingLight.jsonl.gz",
}
REQUIRED_FIELDS = ("task_id", "prompt", "suffix", "canonical_solution", "test", "entry_point")
SOURCE_URL = "https://github.com/openai/human-eval-infilling/tree/master/data"


def benchmark_path(benchmark: str, data_dir: str | os.PathLike | None = None) -> Path:
    """Path of a benchmark's `.jsonl.gz` file.

    Args:
        benchmark: one of "single-line", "multi-line", "random-span", "random-span-light".
        data_dir: folder laid out like `../shared/data`; defaults to env RETROFIT_DATA_DIR.

    Returns:
        `<data_dir>/humaneval-infilling/<file>` (it is checked to exist).

    Raises:
        ValueError: unknown benchmark name.
        FileNotFoundError: no data dir configured, or the file is missing; the message names the
            file and where to get it.
    """
    if benchmark not in BENCHMARKS:
        raise ValueError(
            f"unknown HumanEval-infilling benchmark {benchmark!r}; choose from {list(BENCHMARKS)}"
        )
    name = BENCHMARKS[benchmark]
    data_dir = data_dir if data_dir is not None else os.environ.get("RETROFIT_DATA_DIR") or None
    how = (
        f"Download {name} from {SOURCE_URL} into <data_dir>/humaneval-infilling/ and set "
        "RETROFIT_DATA_DIR=<data_dir> (or pass data_dir= / --data-dir)."
    )
    if data_dir is None:
        raise FileNotFoundError(f"HumanEval-infilling file {name}: no data dir is set. {how}")
    path = Path(data_dir) / "humaneval-infilling" / name
    if not path.is_file():
        raise FileNotFoundError(f"HumanEval-infilling file {path} not found. {how}")
    return path


def read_problems(
    benchmark: str = "single-line", data_dir: str | os.PathLike | None = None
) -> dict[str, dict]:
    """Load one HumanEval-infilling benchmark.

    Args:
        benchmark: "single-line" (1033 tasks), "multi-line" (5815), "random-span" (1640) or
            "random-span-light" (164).
        data_dir: folder laid out like `../shared/data`; defaults to env RETROFIT_DATA_DIR.

    Returns:
        `{task_id: problem}` in file order; each problem has at least the fields
        task_id, prompt, suffix, canonical_solution, test, entry_point (all str).

    Raises:
        ValueError: unknown benchmark, or a row lacks a field (the message names file and line).
        FileNotFoundError: see `benchmark_path`.
    """
    path = benchmark_path(benchmark, data_dir)
    problems: dict[str, dict] = {}
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            row = json.loads(line)
            missing = [k for k in REQUIRED_FIELDS if k not in row]
            if missing:
                raise ValueError(f"{path}:{line_no}: HumanEval-infilling row lacks field(s) {missing}")
            problems[row["task_id"]] = row
    return problems
