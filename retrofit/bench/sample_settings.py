"""Sampler settings on trained models: trunk cost and quality against the exact sampler (issue #14).

For each setting (sampler steps plus the fast-sampling options of
`retrofit.sampling.fast_options`), each model of a `retrofit repro` run (MDM, FlexMDM from scratch,
retrofit; every seed found) and each task (brackets, maze), the models are reloaded from their
folders and sampled on the seed's test cases exactly as `retrofit repro` samples them, with the
same per-row seeds. Reported per (task, model, setting), as means over seeds:

* trunk position-layers per sample: positions fed to the trunk (counted from every forward's
  ``trunk_positions``; a cached call feeds only the live columns) x layers / samples. Trunk FLOPs
  are proportional to it (2 x parameters per block per position, attention scores aside);
* forward passes per sample (model calls a row goes through) and wall seconds per sample;
* quality: maze success (all levels, and the hard level), brackets validity and length TV to
  the training law, each with its difference to the exact setting (``exact``).

    retrofit bench sample --repro repro-out                     # every seed under repro-out/work
    retrofit bench sample --repro repro-out --tasks maze --settings exact-256 fast-64
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "SETTINGS",
    "chosen_settings",
    "count_calls",
    "measure_repro",
    "run_sample_settings",
    "summarize_settings",
]

OFF = {"unmask_threshold": None, "prompt_cache": False}
THRESHOLD = {"unmask_threshold": 0.9, "prompt_cache": False}
FAST = {"unmask_threshold": 0.9, "prompt_cache": True, "cache_refresh": 4}
SETTINGS: dict[str, dict[str, Any]] = {
    "exact-256": {"steps": 256, **OFF},
    "steps-64": {"steps": 64, **OFF},
    "threshold-64": {"steps": 64, **THRESHOLD},
    "threshold-32": {"steps": 32, **THRESHOLD},
    "fast-64": {"steps": 64, **FAST},
    "fast-32": {"steps": 32, **FAST},
}
"""Named settings: ``steps`` plus sampler config fields, every fast-sampling field spelled out (the
sampler defaults do not leak in). ``exact-256`` is the sampler without threshold or cache at 256
steps, the reference every other setting is compared with; ``threshold-32`` is the FlexMDM's
default (the LLaDA sampler's default is the threshold at 2 tokens per step)."""

EXACT = "exact-256"


@dataclass
class CallCount:
    """Model calls and positions fed to the trunk, summed over a block of code."""

    calls: int = 0
    rows: int = 0
    trunk_positions: int = 0


@contextmanager
def count_calls(model: Any) -> Iterator[CallCount]:
    """Count the forwards of ``model`` inside the block (a forward hook; removed afterwards).

    Yields:
        CallCount: calls, rows (batch rows over calls) and trunk positions (the outputs'
        ``trunk_positions``, else input_ids.numel()).
    """
    count = CallCount()

    def hook(module: Any, args: tuple, kwargs: dict, out: Any) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        count.calls += 1
        count.rows += int(ids.shape[0]) if ids is not None else 0
        fed = getattr(out, "trunk_positions", None)
        count.trunk_positions += int(fed if fed is not None else (ids.numel() if ids is not None else 0))

    handle = model.register_forward_hook(hook, with_kwargs=True)
    try:
        yield count
    finally:
        handle.remove()


def _layers(model: Any) -> int:
    config = model.config
    return int(getattr(config, "num_hidden_layers", None) or config.n_layers)


def measure_repro(
    repro_dir: Path,
    settings: dict[str, dict[str, Any]],
    tasks: Sequence[str] = ("brackets", "maze"),
    echo: Any = print,
) -> list[dict[str, Any]]:
    """One record per (task, seed, model, setting, level) with cost and metrics.

    Args:
        repro_dir: the ``--out`` folder of a `retrofit repro` run (its ``work/<task>/seed<k>``).
        settings: name -> {"steps": S, sampler fields...}.
        tasks: task names. echo: progress printer.

    Raises:
        FileNotFoundError: no trained seed of a task under ``repro_dir/work``.
    """
    from retrofit.repro.tasks import TASKS
    from retrofit.repro.train import model_dirs
    from retrofit.sampling.load import load_model

    records = []
    for name in tasks:
        task = TASKS[name]()
        seeds = sorted((repro_dir / "work" / name).glob("seed*"), key=lambda p: int(p.name[4:]))
        if not seeds:
            raise FileNotFoundError(
                f"bench sample --repro: no {repro_dir}/work/{name}/seed*: run `retrofit repro {name}` first"
            )
        for work in seeds:
            seed = int(work.name[4:])
            cases = task.test_cases(seed, task.full.test_cases)
            for model_name, path in model_dirs(work).items():
                model, tokenizer, kind = load_model(path, dtype="fp32", device="cpu")
                for setting, options in settings.items():
                    rest = {k: v for k, v in options.items() if k != "steps"}
                    start = time.perf_counter()
                    with count_calls(model) as count:
                        outputs = task.sample(model, kind, tokenizer, cases, seed, options["steps"], rest)
                    seconds = time.perf_counter() - start
                    cost = {
                        "trunk_position_layers_per_sample": count.trunk_positions
                        * _layers(model)
                        / len(cases),
                        "forward_passes_per_sample": count.rows / len(cases),
                        "seconds_per_sample": seconds / len(cases),
                    }
                    for level, metrics in task.score(cases, outputs):
                        records.append({"task": name, "seed": seed, "model": model_name, "setting": setting,
                                        "level": level, **cost, **_quality(metrics)})  # fmt: skip
                    echo(f"  {name} seed {seed} {model_name} {setting}: {seconds:.1f} s")
    return records


def _quality(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(metrics[k]) for k in ("success", "validity", "tv") if k in metrics}


def summarize_settings(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows per (task, model, setting): means over seeds (and maze levels), and vs ``exact-256``.

    Maze quality is success over all levels and at the hard level; brackets validity and TV.
    ``flops_reduction`` = exact trunk position-layers / this setting's; ``d_*`` = this - exact.
    """
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault((r["task"], r["model"], r["setting"]), []).append(r)
    rows = []
    for (task, model, setting), rs in groups.items():
        row: dict[str, Any] = {"task": task, "model": model, "setting": setting}
        for key in ("trunk_position_layers_per_sample", "forward_passes_per_sample", "seconds_per_sample"):
            per_seed = {r["seed"]: r[key] for r in rs}  # levels share their seed's cost
            row[key] = sum(per_seed.values()) / len(per_seed)
        for key in ("success", "validity", "tv"):
            values = [r[key] for r in rs if key in r]
            if values:
                row[key] = sum(values) / len(values)
        hard = [r["success"] for r in rs if r.get("level") == "hard"]
        if hard:
            row["success_hard"] = sum(hard) / len(hard)
        rows.append(row)
    exact = {(r["task"], r["model"]): r for r in rows if r["setting"] == EXACT}
    for row in rows:
        ref = exact.get((row["task"], row["model"]))
        if ref is None:
            continue
        row["flops_reduction"] = (
            ref["trunk_position_layers_per_sample"] / row["trunk_position_layers_per_sample"]
        )
        for key in ("success", "success_hard", "validity", "tv"):
            if key in row and key in ref:
                row[f"d_{key}"] = row[key] - ref[key]
    return rows


def chosen_settings(names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """{name: setting} for ``names``, the exact reference first (added when missing).

    Raises:
        ValueError: an unknown name (the message lists the known ones).
    """
    unknown = [n for n in names if n not in SETTINGS]
    if unknown:
        raise ValueError(f"--settings {unknown}: choose among {', '.join(SETTINGS)}")
    return {n: SETTINGS[n] for n in ([EXACT] + [n for n in names if n != EXACT])}


def run_sample_settings(
    repro_dir: Path, names: Sequence[str], tasks: Sequence[str], log: Any = print
) -> dict[str, Any]:
    """The `retrofit bench sample --repro DIR` payload: records, summary rows and the settings.

    Raises:
        ValueError: an unknown setting name (the message lists them).
        FileNotFoundError: no trained seed under ``repro_dir`` (see `measure_repro`).
    """
    chosen = chosen_settings(names)
    start = time.perf_counter()
    records = measure_repro(Path(repro_dir), chosen, tasks, echo=log)
    from retrofit.bench.common import machine_info

    return {
        "benchmark": "sample-settings",
        "machine": machine_info("cpu"),
        "options": {"device": "cpu", "dtype": "fp32"},
        "repro_dir": str(repro_dir),
        "settings": chosen,
        "records": records,
        "summary": summarize_settings(records),
        "wall_seconds": round(time.perf_counter() - start, 1),
        "notes": [
            "trunk_position_layers_per_sample x 2 x (block parameters / layers) = trunk FLOPs per sample",
            f"flops_reduction and d_* compare each setting with {EXACT} on the same models, seeds and rows",
        ],
    }
