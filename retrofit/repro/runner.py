"""`retrofit repro TASK`: train, export, reload, sample and score the three models per seed.

For every task and seed: a fresh tiny LLaDA with the task's word-level tokenizer
(`retrofit.repro.train.write_base`), the task's training files, the three models at equal
training compute (`retrofit.repro.train.train_models`: MDM, FlexMDM from scratch, retrofit), then
each model reloaded from its folder and sampled on the seed's test cases. Outputs in ``out``:

    results.json                  {"config": ..., "records": [...]} (a record per task x model x seed x level)
    results.md, *.png             `retrofit.repro.report`
    samples/<task>-<model>-seed<k>.jsonl   every generated test case
    work/<task>/seed<k>/...       base model, data, training runs and logs, model folders

Usage:
    >>> run_repro(["brackets"], Path("repro-out"), seeds=3, quick=False)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from retrofit.io_utils import write_json_atomic, write_jsonl_atomic
from retrofit.repro.tasks import TASKS
from retrofit.repro.train import MODELS, train_models, write_base

__all__ = ["RECIPES_DIR", "run_repro", "run_task"]

RECIPES_DIR = Path(__file__).resolve().parents[2] / "recipes" / "repro"
"""The shipped recipes (a source checkout; pass ``recipes_dir`` elsewhere)."""


def run_repro(
    tasks: list[str],
    out: Path,
    *,
    seeds: int = 1,
    quick: bool = False,
    recipes_dir: Path = RECIPES_DIR,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run every task for seeds 0..seeds-1; write results.json, results.md, the plots and samples.

    Args:
        tasks: names from `retrofit.repro.tasks.TASKS`. out: output folder (created).
        seeds: number of seeds (0, 1, ...), fixed in advance: every seed run is reported.
        quick: tiny sizes (the tests' end-to-end run); the numbers mean nothing.
        recipes_dir: folder with ``<task>-<model>.yaml``. echo: progress printer.

    Returns:
        the results dict written to results.json.

    Raises:
        ValueError: unknown task or seeds < 1. FileNotFoundError: a recipe is missing.
    """
    from retrofit.repro.report import write_report

    unknown = [t for t in tasks if t not in TASKS]
    if unknown or seeds < 1:
        raise ValueError(f"repro: tasks must be among {sorted(TASKS)} and seeds >= 1 (got {tasks}, {seeds})")
    missing = [
        f"{t}-{m}.yaml" for t in tasks for m in MODELS if not (recipes_dir / f"{t}-{m}.yaml").is_file()
    ]
    if missing:
        raise FileNotFoundError(
            f"repro: {recipes_dir} lacks the recipes {missing}; point --recipes at a folder holding "
            "<task>-<model>.yaml (a source checkout's recipes/repro)"
        )
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    results: dict[str, Any] = {"config": {"tasks": tasks, "seeds": seeds, "quick": quick}, "records": []}
    for name in tasks:
        task = TASKS[name]()
        for seed in range(seeds):
            results["records"] += run_task(task, out, seed, quick=quick, recipes_dir=recipes_dir, echo=echo)
            write_json_atomic(out / "results.json", results)
    results["config"]["wall_seconds"] = round(time.perf_counter() - start, 1)
    write_json_atomic(out / "results.json", results)
    write_report(out, results)
    return results


def run_task(
    task: Any, out: Path, seed: int, *, quick: bool, recipes_dir: Path, echo: Callable[[str], None]
) -> list[dict[str, Any]]:
    """One task, one seed: base, data, three trained models, samples, metric records."""
    from retrofit.sampling.load import load_model

    sizes = task.quick if quick else task.full
    work = out / "work" / task.name / f"seed{seed}"
    echo(f"[repro] {task.name} seed {seed}: training {', '.join(MODELS)} ({sizes.steps} steps each)")
    base = write_base(work / "init", task.words(), seed, sizes.shape())
    data = task.write_data(work / "data", seed, sizes.train_rows)
    recipes = {m: recipes_dir / f"{task.name}-{m}.yaml" for m in MODELS}
    missing = [str(p) for p in recipes.values() if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"repro: recipes not found: {missing}; run from a source checkout or pass --recipes"
        )
    overrides = {m: [f"data.train.0.source={data[m]}"] for m in MODELS}
    runs = train_models(recipes, work, base, overrides, seed=seed, steps=sizes.steps, echo=echo)
    cases = task.test_cases(seed, sizes.test_cases)
    batch = _global_batch(recipes["mdm"])
    records = []
    for name, run in runs.items():
        started = time.perf_counter()
        model, tokenizer, kind = load_model(run.path, dtype="fp32")
        outputs = task.sample(model, kind, tokenizer, cases, seed, sizes.sample_steps)
        sample_seconds = time.perf_counter() - started
        write_jsonl_atomic(
            out / "samples" / f"{task.name}-{name}-seed{seed}.jsonl", task.records(cases, outputs)
        )
        for level, metrics in task.score(cases, outputs):
            records.append({
                "task": task.name, "model": name, "seed": seed, "level": level, "metrics": metrics,
                "train_steps": run.steps, "global_batch": batch,
                "train_tokens": round(run.steps * batch * task.mean_tokens()),
                "train_seconds": round(run.seconds, 1), "sample_seconds": round(sample_seconds, 1),
                "sample_steps": sizes.sample_steps, "model_dir": str(run.path),
            })  # fmt: skip
        echo(f"[repro]   sampled {name}: {len(cases)} cases in {sample_seconds:.0f} s")
    return records


def _global_batch(recipe: Path) -> int:
    """per_device_train_batch_size x gradient_accumulation_steps of a recipe (one process)."""
    import yaml

    training = yaml.safe_load(recipe.read_text())["training"]
    return int(training["per_device_train_batch_size"]) * int(training.get("gradient_accumulation_steps", 1))
