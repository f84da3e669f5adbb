"""Tests for retrofit.evaluation.sandbox: HumanEval-infilling execution in a sandbox (docs/method.md §6.2)."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

import pytest

from retrofit.evaluation.humaneval_data import read_problems
from retrofit.evaluation.sandbox import (
    build_program,
    evaluate_completions,
    isolation,
    run_completion,
    sandbox_info,
)

DATA_DIR = Path(os.environ.get("RETROFIT_DATA_DIR", ""))  # set by conftest.py (the local data copy)
# A toy task whose hole is one statement inside f: the completion runs when check() calls f.
TOY = {
    "task_id": "toy/0",
    "prompt": "def f(x):\n",
    "suffix": "    return 2 * x\n",
    "test": "def check(candidate):\n    assert candidate(2) == 4\n",
    "entry_point": "f",
}


@pytest.fixture(scope="module")
def single_line():
    return list(read_problems("single-line", data_dir=DATA_DIR).values())


def test_build_program_layout():
    assert build_program(TOY, "    pass\n") == (
        "def f(x):\n    pass\n    return 2 * x\n\n"
        "def check(candidate):\n    assert candidate(2) == 4\n\ncheck(f)"
    )
    with pytest.raises(ValueError, match="entry_point"):
        build_program({"prompt": "", "test": ""}, "")


def test_first_50_canonical_single_line_solutions_pass(single_line):
    problems = single_line[:50]
    results = evaluate_completions(problems, [p["canonical_solution"] for p in problems], n_workers=2)
    assert [r.status for r in results] == ["passed"] * 50
    assert all(r.passed for r in results)


def test_wrong_and_broken_completions_fail(single_line):
    problem = single_line[0]  # has_close_elements, hole = the outer for-loop header
    wrong = run_completion(problem, "    for idx, elem in enumerate(numbers[:1]):\n")
    assert (wrong.passed, wrong.status) == (False, "failed") and "AssertionError" in wrong.detail
    broken = run_completion(problem, "    for idx, elem in enumerate(numbers)\n")  # missing colon
    assert (broken.passed, broken.status) == (False, "error") and "SyntaxError" in broken.detail


def test_infinite_loop_times_out_within_limit():
    start = time.monotonic()
    result = run_completion(TOY, "    while True:\n        pass\n", timeout_s=1.0)
    elapsed = time.monotonic() - start
    assert (result.passed, result.status) == (False, "timeout")
    assert elapsed < 1.0 + 2.0


def test_exit_before_tests_is_not_a_pass():
    result = run_completion(TOY, "    exit(0)\n")
    assert (result.passed, result.status) == (False, "error") and "exit(0)" in result.detail


def test_memory_limit():
    result = run_completion(TOY, "    big = bytearray(2 * 1024**3)\n", memory_mb=256)
    assert (result.passed, result.status) == (False, "error") and "MemoryError" in result.detail


@pytest.mark.parametrize(
    "action",
    [
        "os.remove(SENTINEL)",
        "os.unlink(SENTINEL)",
        "pathlib.Path(SENTINEL).unlink()",
        "shutil.rmtree(os.path.dirname(SENTINEL))",
        "os.rename(SENTINEL, SENTINEL + '.moved')",
        "open(SENTINEL, 'w').write('gone')",
        "open(NEW_FILE, 'w').write('x')",
        "pathlib.Path(NEW_FILE).write_text('x')",
        "os.close(os.open(NEW_FILE, os.O_CREAT | os.O_WRONLY))",
        "os.mkdir(NEW_FILE)",
        "os.system('rm ' + SENTINEL)",
        "subprocess.run(['rm', SENTINEL])",
        "os.fork()",
    ],
)
def test_destructive_completion_fails_and_leaves_files_untouched(tmp_path, action):
    sentinel = tmp_path / "sentinel.txt"
    sentinel.write_text("keep me")
    before = sorted(os.listdir(tmp_path))
    completion = (
        "    import os, pathlib, shutil, subprocess\n"
        f"    SENTINEL, NEW_FILE = {str(sentinel)!r}, {str(tmp_path / 'new.txt')!r}\n"
        f"    {action}\n"
    )
    result = run_completion(TOY, completion)
    assert (result.passed, result.status) == (False, "error")
    assert "PermissionError: sandbox:" in result.detail
    assert sentinel.read_text() == "keep me"
    assert sorted(os.listdir(tmp_path)) == before


def test_writes_inside_the_sandbox_dir_are_allowed():
    completion = "    open('scratch.txt', 'w').write('hi')\n    assert open('scratch.txt').read() == 'hi'\n"
    result = run_completion(TOY, completion)
    assert result.status == "passed", result.detail


def test_network_follows_the_probed_isolation():
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        completion = (
            f"    import socket\n    socket.create_connection(('127.0.0.1', {port}), timeout=1).close()\n"
        )
        result = run_completion(TOY, completion)
    if isolation().network_isolated:  # own network namespace: the host's listener is unreachable
        assert (result.passed, result.status) == (False, "error") and "Error" in result.detail
    else:
        assert result.passed, result.detail


def test_sandbox_info_is_json_and_consistent():
    info = sandbox_info()
    json.dumps(info)
    assert info["network_isolated"] == bool(info["prefix"])
    assert info["unprivileged"] == (info["uid"] is not None or os.geteuid() != 0)


def test_evaluate_completions_checks_lengths():
    with pytest.raises(ValueError, match="2 problems but 1 completions"):
        evaluate_completions([TOY, TOY], ["    pass\n"])
