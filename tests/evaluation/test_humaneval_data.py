"""Tests for retrofit.evaluation.humaneval_data: reading the HumanEval-infilling files
(docs/method.md §6.2)."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pytest

from retrofit.evaluation.humaneval_data import BENCHMARKS, REQUIRED_FIELDS, benchmark_path, read_problems

DATA_DIR = Path(os.environ.get("RETROFIT_DATA_DIR", ""))  # set by conftest.py (the local data copy)


@pytest.mark.parametrize(
    ("benchmark", "count", "first_id"),
    [
        ("single-line", 1033, "SingleLineInfilling/HumanEval/0/L0"),
        ("multi-line", 5815, "MultiLineInfilling/HumanEval/0/L0_L0"),
        ("random-span", 1640, "RandomSpanInfilling/HumanEval/0/1"),
        ("random-span-light", 164, "RandomSpanInfillingLight/HumanEval/0/1"),
    ],
)
def test_read_problems_counts_and_fields(benchmark, count, first_id):
    problems = read_problems(benchmark, data_dir=DATA_DIR)
    assert len(problems) == count
    assert next(iter(problems)) == first_id
    assert all(task_id == p["task_id"] for task_id, p in problems.items())
    assert all(isinstance(p[k], str) for p in problems.values() for k in REQUIRED_FIELDS)


def test_single_line_first_task():
    problem = read_problems("single-line", data_dir=DATA_DIR)["SingleLineInfilling/HumanEval/0/L0"]
    assert problem["entry_point"] == "has_close_elements"
    assert problem["canonical_solution"] == "    for idx, elem in enumerate(numbers):\n"


def test_env_var_is_the_default(monkeypatch):
    monkeypatch.setenv("RETROFIT_DATA_DIR", str(DATA_DIR))
    assert (
        benchmark_path("random-span-light")
        == DATA_DIR / "humaneval-infilling" / BENCHMARKS["random-span-light"]
    )


def test_errors_name_the_file_and_the_fix(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="choose from"):
        read_problems("two-line", data_dir=DATA_DIR)
    with pytest.raises(
        FileNotFoundError, match=r"HumanEval-SingleLineInfilling\.jsonl\.gz not found.*github"
    ):
        read_problems("single-line", data_dir=tmp_path)
    monkeypatch.delenv("RETROFIT_DATA_DIR", raising=False)
    with pytest.raises(FileNotFoundError, match="no data dir is set.*RETROFIT_DATA_DIR"):
        read_problems("single-line")


def test_row_missing_a_field_names_file_and_line(tmp_path):
    folder = tmp_path / "humaneval-infilling"
    folder.mkdir()
    with gzip.open(folder / BENCHMARKS["single-line"], "wt") as f:
        f.write(json.dumps({"task_id": "x", "prompt": ""}) + "\n")
    with pytest.raises(ValueError, match=r"jsonl\.gz:1: .*lacks field"):
        read_problems("single-line", data_dir=tmp_path)
