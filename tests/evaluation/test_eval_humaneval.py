"""Tests of the HumanEval-infilling runner and `retrofit eval humaneval-infill` (docs/method.md §6.2)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from retrofit.cli import main as cli_main
from retrofit.evaluation.generation import Completion
from retrofit.evaluation.humaneval_data import read_problems
from retrofit.evaluation.humaneval_infill import cost_estimate, run_humaneval_infill
from retrofit.models.tokenizer import build_tokenizer

REPO = Path(__file__).resolve().parents[2]


def oracle(tokenizer, problems: dict, wrong_after: int | None = None):
    """infill_fn answering each (prompt, suffix) with its canonical middle (sample j >= wrong_after: "")."""
    by_pair = {(p["prompt"], p["suffix"]): p["canonical_solution"] for p in problems.values()}
    calls = []

    def infill_fn(prefixes, suffixes, num_samples, seed, example_ids):
        calls.append((len(prefixes), num_samples, seed, list(example_ids)))
        out = []
        for pair in zip(prefixes, suffixes):
            for j in range(num_samples):
                text = by_pair[pair] if wrong_after is None or j < wrong_after else ""
                out.append(Completion(text, [], len(tokenizer(text, add_special_tokens=False)["input_ids"])))
        return out

    return infill_fn, calls


def read_run(out: Path) -> tuple[dict, list[dict]]:
    results = json.loads((out / "results.json").read_text())
    return results, [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]


def test_canonical_middles_pass_and_have_exact_length(data_dir, tmp_path) -> None:
    tok = build_tokenizer()
    infill_fn, calls = oracle(tok, read_problems("single-line", data_dir))
    metrics = run_humaneval_infill(
        infill_fn, tok, tmp_path, limit=10, data_dir=data_dir, chunk=4, n_workers=2
    )
    assert metrics["pass@1"] == 1.0 and metrics["exact_length_rate"] == 1.0
    assert metrics["pass@1_stderr"] == 0.0 and "pass@10" not in metrics  # k > n is skipped
    assert [c[0] for c in calls] == [4, 4, 2]  # chunks of 4 tasks
    assert [c[3] for c in calls] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]  # the tasks' indices
    assert {c[2] for c in calls} == {0}  # one seed: rows are told apart by their example ids
    results, samples = read_run(tmp_path)
    assert results["config"]["num_tasks"] == 10 and results["config"]["benchmark"] == "single-line"
    assert results["metrics"]["mean_middle_tokens"] == results["metrics"]["mean_canonical_tokens"]
    assert len(samples) == 10 and all(
        s["passed"] and s["status"] == "passed" and s["exact_length"] for s in samples
    )
    assert samples[0]["task_id"] == "SingleLineInfilling/HumanEval/0/L0"


def test_pass_at_k_with_several_samples(data_dir, tmp_path) -> None:
    tok = build_tokenizer()
    infill_fn, _ = oracle(tok, read_problems("single-line", data_dir), wrong_after=1)
    metrics = run_humaneval_infill(
        infill_fn, tok, tmp_path, limit=3, num_samples=3, ks=(1, 2, 5), data_dir=data_dir
    )
    # Per task: the first sample passes, the two empty middles fail (these three tasks need their line).
    assert metrics["pass@1"] == pytest.approx(1 / 3) and metrics["pass@2"] == pytest.approx(2 / 3)
    assert "pass@5" not in metrics and metrics["exact_length_rate"] == pytest.approx(1 / 3)
    _, samples = read_run(tmp_path)
    assert [(s["sample"], s["passed"]) for s in samples[:3]] == [(0, True), (1, False), (2, False)]


def test_cost_estimate_line() -> None:
    line = cost_estimate(1033, 1, 4096, 4, 0.05)
    assert line.startswith(
        "1033 tasks × 1 sample × 4096 steps ≈ 4.2M forward passes (≈ 1.1M batched passes of 4 rows"
    )
    assert line.endswith("≈ 14.7 h at 0.05 s/pass)")


def test_cli_tiny_flexmdm_end_to_end(tiny_flexmdm_dir, data_dir, tmp_path, capsys) -> None:
    out = tmp_path / "run"
    argv = ["eval", "humaneval-infill", str(tiny_flexmdm_dir), "--limit", "3", "--steps", "2", "--max-middle", "6",
            "--batch-size", "3", "--out", str(out), "--data-dir", str(data_dir)]  # fmt: skip
    assert cli_main(argv) == 0
    printed = capsys.readouterr().out
    assert "3 tasks × 1 sample × 2 steps ≈ 6 forward passes" in printed and "pass@1:" in printed
    results, samples = read_run(out)
    assert results["sampler"]["kind"] == "flexmdm" and results["sampler"]["confidence"] == "top_prob"
    assert results["sampler"]["sliding_window"] is True and results["sampler"]["max_middle"] == 6
    assert 0.0 <= results["metrics"]["pass@1"] <= 1.0 and len(samples) == 3
    assert all(0 <= s["num_tokens"] <= 6 for s in samples)


def test_cli_tiny_llada_budget_is_reported(tiny_llada_dir, data_dir, tmp_path) -> None:
    out = tmp_path / "run"
    argv = ["eval", "humaneval-infill", str(tiny_llada_dir), "--limit", "2", "--gen-length", "8", "--steps", "4",
            "--out", str(out), "--data-dir", str(data_dir)]  # fmt: skip
    assert cli_main(argv) == 0
    results, samples = read_run(out)
    assert results["sampler"]["gen_length"] == 8 and results["sampler"]["block_length"] == 8
    assert all(s["num_tokens"] <= 8 for s in samples)


DP_SCRIPT = textwrap.dedent(
    """
    import sys
    import torch.distributed as dist
    from retrofit.evaluation.generation import Completion, rank_and_world
    from retrofit.evaluation.humaneval_data import read_problems
    from retrofit.evaluation.humaneval_infill import run_humaneval_infill
    from retrofit.models.tokenizer import build_tokenizer

    rank, world = rank_and_world()
    assert world == 2, world
    tok = build_tokenizer()
    canon = {(p["prompt"], p["suffix"]): p["canonical_solution"] for p in read_problems("single-line").values()}
    seen = []

    def infill_fn(prefixes, suffixes, n, seed, example_ids):
        assert example_ids == list(range(rank, 5, 2)), example_ids  # global task indices
        seen.extend(prefixes)
        return [Completion(canon[pair], [], len(tok(canon[pair])["input_ids"])) for pair in zip(prefixes, suffixes)]

    metrics = run_humaneval_infill(infill_fn, tok, sys.argv[1], limit=5, n_workers=1)
    assert len(seen) == (3 if rank == 0 else 2), len(seen)
    assert (metrics is None) == (rank == 1)
    if rank == 0:
        assert metrics["pass@1"] == 1.0, metrics
    dist.barrier()
    """
)


@pytest.mark.slow
def test_data_parallel_two_processes_gather_on_rank0(data_dir, tmp_path) -> None:
    script = tmp_path / "dp.py"
    script.write_text(DP_SCRIPT)
    env = {
        **os.environ,
        "RETROFIT_DATA_DIR": str(data_dir),
        "ACCELERATE_USE_CPU": "1",
        "OMP_NUM_THREADS": "1",
    }
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
           str(tmp_path / "out")]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results, samples = read_run(tmp_path / "out")
    assert results["config"]["world_size"] == 2 and results["metrics"]["pass@1"] == 1.0
    assert [s["task_id"] for s in samples] == [f"SingleLineInfilling/HumanEval/0/L{i}" for i in range(5)]


def test_sampler_overrides_defaults_flags_and_validation() -> None:
    import argparse

    from retrofit.commands import eval as eval_cmd

    parser = argparse.ArgumentParser()
    eval_cmd.add_arguments(parser)
    args = parser.parse_args(["humaneval-infill", "m", "--max-middle", "64", "--sampler-arg", "alpha-win=5"])
    flex = eval_cmd.sampler_overrides(args, "humaneval-infill", "flexmdm")
    assert flex == {"steps": 4096, "temperature": 0.0, "confidence": "top_prob", "sliding_window": True,
                    "alpha_win": 5, "max_window": 32, "max_middle": 64}  # fmt: skip
    assert eval_cmd.sampler_overrides(args, "humaneval-infill", "llada") == {
        "steps": 64,
        "gen_length": 64,
        "alpha_win": 5,
    }
    args = parser.parse_args(["gsm8k", "m", "--gen-length", "32", "--steps", "8"])
    assert eval_cmd.sampler_overrides(args, "gsm8k", "llada") == {"steps": 8, "gen_length": 32}  # one block
    args = parser.parse_args(["gsm8k", "m", "--sampler-arg", "stepz=3"])
    with pytest.raises(ValueError, match="stepz"):
        eval_cmd.sampler_overrides(args, "gsm8k", "flexmdm")
