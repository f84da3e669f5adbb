"""HumanEval infilling runner: generate middles, execute them in the sandbox, report pass@k
(docs/method.md §6.2).

For each task the model fills the middle between `prompt` and `suffix`: a FlexMDM in the
boundary format with a length of its own choosing (prefix = prompt + B, suffix = B + suffix;
docs/method.md §4.4), the LLaDA baseline in its FIM format with a fixed budget of `gen_length` tokens cut
at the first EOS. The executed program is prompt + middle + suffix + test
(`sandbox.run_completion`). Metrics: pass@k (unbiased estimator, k <= n) with standard errors
over tasks, and the exact-length rate: the share of middles with exactly the canonical middle's
token count under the model's tokenizer.

The generator is injected as a function, so the runner is testable without a model:

    infill_fn(prefixes: list[str], suffixes: list[str], num_samples: int, seed: int,
              example_ids: list[int]) -> list[Completion]

(num_samples completions per pair, pair-major; example_ids = the tasks' indices in the benchmark,
so sample j of task i is keyed by (seed, i, j) whatever the chunk, batch or rank). Under `accelerate launch` rank r takes
tasks[r::world], executes its own completions, and rank 0 gathers and writes the files.

Example:
    retrofit eval humaneval-infill runs/flexmdm-code --benchmark single-line --steps 4096 --limit 50
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from retrofit.evaluation.generation import Completion, gather_to_main, rank_and_world
from retrofit.evaluation.humaneval_data import read_problems
from retrofit.evaluation.passk import mean_and_stderr, pass_at_k
from retrofit.evaluation.results import write_results
from retrofit.evaluation.sandbox import evaluate_completions, sandbox_info

InfillFn = Callable[[list[str], list[str], int, int, list[int]], list[Completion]]
DETAIL_CHARS = 300


def cost_estimate(
    num_tasks: int, num_samples: int, steps: int, batch_size: int, seconds_per_pass: float | None
) -> str:
    """One line: tasks x samples x steps forward passes, batched passes, and the time if known.

    Example: "1033 tasks × 1 sample × 4096 steps ≈ 4.2M forward passes (≈ 1.1M batched passes of
    4 rows, ≈ 3.1 h at 0.01 s/pass)".
    """
    rows = num_tasks * num_samples
    passes = rows * steps
    batched = -(-rows // max(1, batch_size)) * steps
    line = (f"{num_tasks} tasks × {num_samples} sample{'s' * (num_samples != 1)} × {steps} steps "
            f"≈ {_human(passes)} forward passes (≈ {_human(batched)} batched passes of {batch_size} rows")  # fmt: skip
    if seconds_per_pass:
        line += f", ≈ {_duration(batched * seconds_per_pass)} at {seconds_per_pass:.3g} s/pass"
    return line + ")"


def _human(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f}{unit}"
    return str(int(n))


def _duration(seconds: float) -> str:
    return (
        f"{seconds / 3600:.1f} h"
        if seconds >= 3600
        else f"{seconds / 60:.1f} min"
        if seconds >= 60
        else f"{seconds:.0f} s"
    )


def canonical_token_counts(problems: Sequence[dict], tokenizer: Any) -> list[int]:
    """Token count of each task's canonical middle (add_special_tokens=False)."""
    return [len(tokenizer(p["canonical_solution"], add_special_tokens=False)["input_ids"]) for p in problems]


def generate_middles(
    infill_fn: InfillFn,
    problems: Sequence[dict],
    num_samples: int,
    seed: int,
    chunk: int,
    offsets: Sequence[int],
) -> list[Completion]:
    """Completions for `problems` in chunks of `chunk` tasks (num_samples each, task-major).

    `offsets[k]` is problem k's index in the benchmark, passed on as its example id, so a task's
    draws do not depend on the chunking or on how many processes share the work. Prints progress
    and an ETA after each chunk.
    """
    out: list[Completion] = []
    start = time.monotonic()
    for lo in range(0, len(problems), chunk):
        part = problems[lo : lo + chunk]
        out.extend(infill_fn([p["prompt"] for p in part], [p["suffix"] for p in part], num_samples, seed,
                             list(offsets[lo : lo + chunk])))  # fmt: skip
        done = lo + len(part)
        eta = (time.monotonic() - start) / done * (len(problems) - done)
        print(f"humaneval-infill: {done}/{len(problems)} tasks generated, ETA {_duration(eta)}", flush=True)
    return out


def summarize(passed: np.ndarray, exact: np.ndarray, ks: Sequence[int]) -> dict[str, float]:
    """pass@k (k <= n) and exact-length rate, each with its standard error over tasks.

    Args:
        passed: bool [T, n], whether sample j of task i passed.
        exact: bool [T, n], whether its middle has the canonical token count.
        ks: the k values; those above n are skipped.
    """
    n = passed.shape[1]
    metrics: dict[str, float] = {}
    for k in sorted({k for k in ks if 1 <= k <= n}):
        per_task = pass_at_k(np.full(passed.shape[0], n), passed.sum(1), k)
        metrics[f"pass@{k}"], metrics[f"pass@{k}_stderr"] = mean_and_stderr(np.atleast_1d(per_task))
    metrics["exact_length_rate"], metrics["exact_length_rate_stderr"] = mean_and_stderr(exact.mean(1))
    return metrics


def score(
    problems: Sequence[dict], rows: Sequence[tuple], tokenizer: Any, num_samples: int, ks: Sequence[int]
) -> tuple[dict[str, float], list[dict]]:
    """Metrics and per-sample records from (task index, sample, text, tokens, passed, status, detail) rows.

    `rows` are sorted by (task, sample) and cover every task num_samples times.
    """
    canon = canonical_token_counts(problems, tokenizer)
    shape = (len(problems), num_samples)
    passed = np.array([r[4] for r in rows], dtype=bool).reshape(shape)
    exact = np.array([r[3] == canon[r[0]] for r in rows], dtype=bool).reshape(shape)
    metrics = summarize(passed, exact, ks)
    metrics["mean_middle_tokens"] = float(np.mean([r[3] for r in rows]))
    metrics["mean_canonical_tokens"] = float(np.mean(canon))
    samples = [{"task_id": problems[i]["task_id"], "sample": j, "completion": text, "num_tokens": n,
                "canonical_tokens": canon[i], "exact_length": n == canon[i], "passed": ok, "status": status,
                "detail": detail} for i, j, text, n, ok, status, detail in rows]  # fmt: skip
    return metrics, samples


def run_humaneval_infill(
    infill_fn: InfillFn,
    tokenizer: Any,
    out_dir: str | os.PathLike,
    *,
    benchmark: str = "single-line",
    limit: int | None = None,
    num_samples: int = 1,
    seed: int = 0,
    ks: Sequence[int] = (1, 10, 100),
    data_dir: str | os.PathLike | None = None,
    model_dir: str | os.PathLike | None = None,
    sampler: dict | None = None,
    config: dict | None = None,
    chunk: int = 32,
    n_workers: int = 2,
    timeout_s: float = 3.0,
) -> dict[str, float] | None:
    """Generate, execute and score; writes results.json + samples.jsonl; metrics on rank 0, else None.

    Args:
        infill_fn: see the module docstring.
        tokenizer: the model's tokenizer (canonical middle token counts).
        out_dir: output folder.
        benchmark: "single-line", "multi-line", "random-span" or "random-span-light".
        limit: first N tasks (None = all).
        num_samples: n samples per task (pass@k for every k in `ks` with k <= n).
        seed: generation seed.
        data_dir: local data folder (default env RETROFIT_DATA_DIR).
        model_dir, sampler, config: recorded in results.json (config is merged into the run config).
        chunk: tasks per infill_fn call. n_workers, timeout_s: sandbox settings.

    Raises:
        FileNotFoundError / ValueError: from `read_problems`.
    """
    start = time.monotonic()
    problems = list(read_problems(benchmark, data_dir).values())[:limit]
    rank, world = rank_and_world()
    mine = list(range(len(problems)))[rank::world]
    t0 = time.monotonic()
    comps = generate_middles(infill_fn, [problems[i] for i in mine], num_samples, seed, chunk, mine)
    gen_s = time.monotonic() - t0
    repeated = [problems[i] for i in mine for _ in range(num_samples)]
    t0 = time.monotonic()
    results = evaluate_completions(repeated, [c.text for c in comps], n_workers, timeout_s=timeout_s)
    exec_s = time.monotonic() - t0
    local = [(i, j, c.text, c.num_tokens, r.passed, r.status, r.detail[-DETAIL_CHARS:])
             for (i, j), c, r in zip(((i, j) for i in mine for j in range(num_samples)), comps, results)]  # fmt: skip
    gathered = gather_to_main(local, world)
    if gathered is None:
        return None
    metrics, samples = score(
        problems, sorted(gathered, key=lambda g: (g[0], g[1])), tokenizer, num_samples, ks
    )
    run_config = {"task": "humaneval-infill", "benchmark": benchmark, "limit": limit, "num_tasks": len(problems),
                  "num_samples": num_samples, "seed": seed, "world_size": world, "timeout_s": timeout_s,
                  "sandbox": sandbox_info(), **(config or {})}  # fmt: skip
    timings = {"generate_s": gen_s, "execute_s": exec_s, "total_s": time.monotonic() - start}
    write_results(out_dir, config=run_config, metrics=metrics, samples=samples, timings=timings,
                  model_dir=model_dir, sampler=sampler)  # fmt: skip
    return metrics
