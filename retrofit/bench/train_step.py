"""Training-step benchmark: x1 tokens/s and peak memory of one optimizer step (issue #9).

One timed call = one optimizer step = ``accum`` (G) micro-steps of forward + backward on
``batch`` (B) sequences each, then AdamW (a warm-up call runs one micro-step and AdamW). LoRA on
q/k/v + the LM head and the graft modules are trainable (`retrofit.training.lora.wrap_with_lora`,
docs/method.md §2.8-2.9); every base weight is frozen.
Batches come from the real collators (`retrofit.training.collator`), built before timing.

Variants (same x1 samples, same seeds):
  * ``full-width``: research style: the canvas is always L wide, every column attended
    (``pad_attention="full"``), per-micro-batch stratified t (docs/method.md §2.2, §3.5).
  * ``trimmed``: ``pad_attention="slots"``, each micro-batch cut to its longest x_t; stratified t
    (early and late t mixed in one micro-batch, so the longest x_t is usually near full).
  * ``banded``: trimmed + banded t: micro-step k of an optimizer step covers one contiguous band of
    t; one timed call cycles through all G bands, so its average is fair.
  * ``packed``: banded t, each micro-batch's documents (x_t trimmed to its own n_b, plus the
    length slot) packed side by side into one row, each attending only to itself
    (``data.packing``; docs/method.md §3.7): no position is spent on padding.
  * ``mdm``: the LLaDA baseline (LLaDA + LoRA, MDM loss, full width L; docs/method.md §3.6).

All variants are built first, then timed round by round (one optimizer step of each in turn), so
drifting load on a shared machine hits every variant alike; the process CPU time of each step is
recorded too (with ``--threads 1`` it hardly depends on other processes, unlike wall time). Memory per variant = resident
(weights, optimizer state) + the transient peak of its step (activations, gradients).

Token logits are computed only at the masked slots in every variant (the LM head is the costly
part at small d_model), so the comparison isolates the canvas width.

    retrofit bench train-step --size 100m --canvas 512 --lengths full --batch 4 --accum 8
    retrofit bench train-step --size 100m --recipe recipes/tiny/flexmdm-sft.yaml \
        --override model.base=demo-out/flexmdm-init --variants banded packed   # the demo's data
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any

import torch

from retrofit.bench import TRAIN_STEP_VARIANTS
from retrofit.bench.closed_form import monte_carlo_computed_fraction
from retrofit.bench.common import (
    autocast,
    machine_info,
    peak_memory,
    release_memory,
    resident_mib,
    resolve_dtype,
    summarize,
    time_once,
    torch_threads,
)
from retrofit.bench.configs import SIZES
from retrofit.bench.lengths import LengthTable, gsm8k_length_table
from retrofit.bench.train_setup import build_batches, build_model, micro_loss

__all__ = ["VARIANTS", "TrainStepOptions", "run_train_step"]

VARIANTS = TRAIN_STEP_VARIANTS
H100_BF16_PEAK_FLOPS = 989e12
"""Dense bf16 peak of an H100 / H200 SXM (FLOP/s), the MFU denominator."""


@dataclass
class TrainStepOptions:
    """Settings of the training-step benchmark (see the module docstring).

    Attributes:
        size: "tiny" | "100m" | "8b". layers: blocks (None = the size's own; "8b": a few on a GPU).
        device: "cpu" | "cuda" | "cuda:0" ... dtype: "fp32" | "bf16" (base weights in dtype,
            trainable weights fp32, bf16 autocast; docs/method.md §2.9).
        grad_ckpt: gradient checkpointing of the blocks (non-reentrant).
        batch: B, sequences per micro-batch. accum: G, micro-steps per optimizer step (= bands).
        canvas: L, the canvas width. lengths: "full" | "gsm8k" (see `retrofit.bench.lengths`).
        warmup, repeats: untimed and timed optimizer steps per variant.
        lora_r: LoRA rank (alpha = r); None = the size's default.
        variants: which variants to run, in order ("full-width" first for the ratios).
        seed: seed of data, times and weights. data_dir: GSM8K folder (None = RETROFIT_DATA_DIR).
        recipe, overrides: instead of `lengths`, a training recipe's own examples (and canvas);
            see `retrofit.bench.recipe_workload`.
        insertion_schedule: alpha of the interpolant (default geometric(10, 0.01), docs/method.md §1.2).
        threads: torch CPU threads (None = unchanged).
    """

    size: str = "tiny"
    layers: int | None = None
    device: str = "cpu"
    dtype: str = "fp32"
    grad_ckpt: bool = False
    batch: int = 4
    accum: int = 8
    canvas: int = 512
    lengths: str = "full"
    warmup: int = 1
    repeats: int = 3
    lora_r: int | None = None
    variants: tuple[str, ...] = VARIANTS
    seed: int = 0
    data_dir: str | None = None
    insertion_schedule: str = "geometric"
    threads: int | None = None
    recipe: str | None = None
    overrides: tuple[str, ...] = ()

    def validate(self) -> None:
        """Raise ValueError naming the option if a value is invalid."""
        bad = [v for v in self.variants if v not in VARIANTS]
        if bad:
            raise ValueError(f"--variants: unknown {bad}; choose from {VARIANTS}")
        if min(self.batch, self.accum, self.canvas, self.repeats) < 1 or self.warmup < 0:
            raise ValueError("--batch, --accum, --canvas, --repeats must be >= 1 and --warmup >= 0")
        if self.size not in SIZES:
            raise ValueError(f"--size must be one of {sorted(SIZES)}, got {self.size!r}")


def _step_counts(steps: list[list[dict[str, Any]]], opts: TrainStepOptions) -> dict[str, float | None]:
    """Per-optimizer-step means over the timed steps: x1 tokens, computed positions, logit rows.

    ``row_length_fraction`` = sum_b (n_b + 1) / B (L + 1): every row at its own length (perfect
    packing), the floor trimming can approach (FlexMDM variants only).
    """
    batches = [b for s in steps[opts.warmup :] for b in s]
    per_step = lambda values: sum(values) / opts.repeats  # noqa: E731
    full = opts.batch * (opts.canvas + 1) * opts.accum
    computed = per_step(int(b["num_computed_tokens"]) for b in batches)
    own = [int(b["gap_mask"].sum()) for b in batches if "gap_mask" in b]  # n_b + 1 per row
    return {
        "x1_tokens": per_step(int(b["num_x1_tokens"]) for b in batches),
        "computed_positions": computed,
        "logit_rows": per_step(int(b["mask_slots"].sum()) for b in batches),
        "computed_fraction": computed / full,
        "row_length_fraction": per_step(own) / full if own else None,
    }


@dataclass
class _Run:
    """One variant under test: its trainable model, AdamW, batches and measurements."""

    variant: str
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    steps: list[list[dict[str, Any]]]
    counts: dict[str, int]
    times: list[float] = field(default_factory=list)
    cpu_times: list[float] = field(default_factory=list)
    transient_mib: list[float] = field(default_factory=list)
    memory_kind: str = ""


def _build(variant: str, opts: TrainStepOptions, source: Any) -> _Run:
    steps = build_batches(variant, opts, source)
    model, counts = build_model(variant, opts)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    return _Run(variant, model, optimizer, steps, counts)


def _optimizer_step(run: _Run, i: int, opts: TrainStepOptions) -> None:
    """Optimizer step i of a run: its micro-steps (forward + backward, loss / G), then AdamW."""
    device, dtype = torch.device(opts.device), resolve_dtype(opts.dtype)
    for batch in run.steps[i]:
        with autocast(device, dtype):
            loss = micro_loss(run.variant, run.model, batch, float(opts.canvas)) / opts.accum
        loss.backward()
    run.optimizer.step()
    run.optimizer.zero_grad(set_to_none=True)


def _measure(runs: list[_Run], opts: TrainStepOptions, log) -> None:
    """Warm-up steps, then ``repeats`` rounds that time one optimizer step of every run in turn.

    Interleaving the variants round by round spreads drifting machine load (a shared CPU) over all
    of them instead of biasing whichever ran during a busy spell.
    """
    device = torch.device(opts.device)
    for i in range(opts.warmup):
        for run in runs:
            _optimizer_step(run, i, opts)
    for i in range(opts.warmup, opts.warmup + opts.repeats):
        for run in runs:
            release_memory(device)  # so the step's transient memory is measured from a clean heap
            cpu_start = time.process_time()
            with peak_memory(device) as memory:
                run.times.append(time_once(partial(_optimizer_step, run, i, opts), device))
            run.cpu_times.append(time.process_time() - cpu_start)
            run.transient_mib.append(memory["transient_mib"])
            run.memory_kind = memory["kind"]
        log(
            f"  round {i - opts.warmup + 1}/{opts.repeats}: "
            + ", ".join(f"{r.variant} {r.times[-1]:.2f} s" for r in runs)
        )


def _row(run: _Run, opts: TrainStepOptions) -> dict[str, Any]:
    """Result row of a measured run: timings (s), counts per optimizer step, memory (MiB)."""
    resident = resident_mib(run.model, run.optimizer)
    row = {"variant": run.variant, **summarize(run.times), **_step_counts(run.steps, opts)}
    row.update(
        resident_mib=resident,
        transient_mib=max(run.transient_mib),
        peak_mib=resident + max(run.transient_mib),
        memory_kind=run.memory_kind,
        params=run.counts,
    )
    row["cpu_median_s"] = summarize(run.cpu_times)["median_s"]
    row["x1_tokens_per_s"] = row["x1_tokens"] / row["median_s"]
    row["x1_tokens_per_cpu_s"] = row["x1_tokens"] / row["cpu_median_s"]
    row["computed_per_s"] = row["computed_positions"] / row["median_s"]
    return row


def _closed_form(variant: str, opts: TrainStepOptions, table: Any) -> float | None:
    """Expected computed fraction of a FlexMDM variant (1 for full-width; None for packed rows
    and recipe workloads, whose fraction is measured only).

    Prompt-free x1 (``--lengths full``): the training module's exact quadrature
    (`retrofit.bench.trim_cost`); GSM8K lengths with a protected prompt:
    `retrofit.bench.closed_form` (binomial max over the prompt-shifted rows).
    """
    if variant == "full-width":
        return 1.0
    if variant == "packed" or not (table is None or isinstance(table, LengthTable)):
        return None
    mode = "banded" if variant == "banded" else "stratified"
    if table is None:
        from retrofit.bench.trim_cost import expected_computed_fraction as exact

        return exact(opts.insertion_schedule, [opts.canvas], opts.canvas, mode, opts.batch, 1, opts.accum)
    return monte_carlo_computed_fraction(
        batch=opts.batch,
        canvas=opts.canvas,
        time_mode=mode,
        grad_accum=opts.accum,
        table=table,
        insertion_schedule=opts.insertion_schedule,
        seed=opts.seed,
    )


def _length_summary(source: Any, opts: TrainStepOptions) -> dict[str, Any]:
    """Mean x1 lengths of the workload (tokens)."""
    if isinstance(source, LengthTable):
        return source.summary()
    if source is None:
        return {"mean_total": opts.canvas, "mean_prompt": 0}
    lengths = [len(f["input_ids"]) for f in source.features]
    return {"recipe": opts.recipe, "examples": len(lengths), "mean_total": sum(lengths) / len(lengths)}


def _mfu(row: dict[str, Any], opts: TrainStepOptions) -> float:
    """4 · (N_trunk · positions + N_head · logit rows) / (t · 989 TFLOP/s): frozen base + LoRA
    (docs/method.md §2.9)."""
    p = row["params"]
    flops = 4.0 * (p["trunk"] * row["computed_positions"] + p["lm_head"] * row["logit_rows"])
    return flops / row["median_s"] / H100_BF16_PEAK_FLOPS


def run_train_step(opts: TrainStepOptions, log=print) -> dict[str, Any]:
    """Run every requested variant; returns the JSON payload (ratios vs full-width included).

    Raises:
        ValueError: invalid options. FileNotFoundError: "gsm8k" lengths without local data.
    """
    opts.validate()
    table: Any = gsm8k_length_table(opts.data_dir) if opts.lengths == "gsm8k" else None
    if opts.recipe is not None:
        from retrofit.bench.recipe_workload import recipe_workload

        table = recipe_workload(opts.recipe, opts.overrides)
        opts.canvas, opts.lengths = table.canvas, "recipe"
    with torch_threads(opts.threads):
        machine = machine_info(opts.device)
        start = time.perf_counter()
        runs = [_build(variant, opts, table) for variant in opts.variants]
        log(f"  train-step: built {len(runs)} variants ({time.perf_counter() - start:.0f} s)")
        _measure(runs, opts, log)
    rows = [_row(run, opts) for run in runs]
    del runs
    release_memory(opts.device)
    base = next((r for r in rows if r["variant"] == "full-width"), None)
    banded = next((r for r in rows if r["variant"] == "banded"), None)
    for row in rows:
        row["ratio_vs_full_width"] = row["x1_tokens_per_s"] / base["x1_tokens_per_s"] if base else None
        row["cpu_ratio_vs_full_width"] = (
            row["x1_tokens_per_cpu_s"] / base["x1_tokens_per_cpu_s"] if base else None
        )
        row["cpu_ratio_vs_banded"] = (
            row["x1_tokens_per_cpu_s"] / banded["x1_tokens_per_cpu_s"] if banded else None
        )
        row["mfu"] = _mfu(row, opts) if torch.device(opts.device).type == "cuda" else None
        if row["variant"] != "mdm":
            row["closed_form_fraction"] = _closed_form(row["variant"], opts, table)
            fraction = row["closed_form_fraction"] or row["computed_fraction"]
            row["expected_ratio"] = 1.0 / fraction
    return {
        "benchmark": "train-step",
        "machine": machine,
        "options": asdict(opts),
        "x1_lengths": _length_summary(table, opts),
        "variants": rows,
        "notes": [
            "token logits only at the masked slots in every variant",
            "x1_tokens_per_s = real x1 tokens per optimizer step / median step time",
            "cpu_* = process CPU time (user + sys, all threads) instead of wall time: on a shared CPU with "
            "--threads 1 it is far less sensitive to other processes than wall time (meaningless on GPU)",
            "computed_fraction = positions fed to the trunk (B*(w+1) per micro-batch) / B*(L+1)",
            "expected_ratio = 1 / closed_form_fraction, the speed-up if cost were proportional to positions: "
            "quadratic attention pushes the measured ratio above it, the fixed LM-head (masked slots) and "
            "optimizer costs below",
            "mfu = 4*(N_trunk*positions + N_head*logit_rows)/(t*989e12): forward 2N + activation-backward 2N "
            "(frozen base + LoRA, no weight grads), H100/H200 bf16 dense peak; attention scores excluded",
        ],
    }
