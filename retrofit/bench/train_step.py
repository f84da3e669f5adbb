"""Training-step benchmark: x1 tokens/s and peak memory of one optimizer step (issue #9).

One timed call = one optimizer step = ``accum`` (G) micro-steps of forward + backward on
``batch`` (B) sequences each, then AdamW (a warm-up call runs one micro-step and AdamW). LoRA on q/k/v + the LM head and the graft modules are
trainable (`retrofit.training.lora.wrap_with_lora`, spec §2.8-2.9); every base weight is frozen.
Batches come from the real collators (`retrofit.training.collator`), built before timing.

Variants (same x1 samples, same seeds):
  * ``full-width``: research style: the canvas is always L wide, every column attended
    (``pad_attention="full"``), per-micro-batch stratified t (spec §2.2, §3.5).
  * ``trimmed``: ``pad_attention="slots"``, each micro-batch cut to its longest x_t; stratified t
    (early and late t mixed in one micro-batch, so the longest x_t is usually near full).
  * ``banded``: trimmed + banded t: micro-step k of an optimizer step covers one contiguous band of
    t; one timed call cycles through all G bands, so its average is fair.
  * ``mdm``: the LLaDA baseline (LLaDA + LoRA, MDM loss, full width L; spec §3.6).

Token logits are computed only at the masked slots in every variant (the LM head is the costly
part at small d_model), so the comparison isolates the canvas width.

    retrofit bench train-step --size 100m --canvas 512 --lengths full --batch 4 --accum 8
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import torch

from retrofit.bench.closed_form import expected_computed_fraction
from retrofit.bench.common import (
    autocast,
    machine_info,
    peak_memory,
    release_memory,
    resolve_dtype,
    summarize,
    time_calls,
    torch_threads,
)
from retrofit.bench.configs import SIZES, build_llada, parameter_counts
from retrofit.bench.lengths import LengthTable, gsm8k_length_table, make_features
from retrofit.loss import flexmdm_loss, mdm_loss

__all__ = ["VARIANTS", "TrainStepOptions", "run_train_step"]

VARIANTS = ("full-width", "trimmed", "banded", "mdm")
H100_BF16_PEAK_FLOPS = 989e12
"""Dense bf16 peak of an H100 / H200 SXM (FLOP/s), the MFU denominator."""


@dataclass
class TrainStepOptions:
    """Settings of the training-step benchmark (see the module docstring).

    Attributes:
        size: "tiny" | "100m" | "8b". layers: blocks (None = the size's own; "8b": a few on a GPU).
        device: "cpu" | "cuda" | "cuda:0" ... dtype: "fp32" | "bf16" (base weights in dtype,
            trainable weights fp32, bf16 autocast; spec §2.9).
        grad_ckpt: gradient checkpointing of the blocks (non-reentrant).
        batch: B, sequences per micro-batch. accum: G, micro-steps per optimizer step (= bands).
        canvas: L, the canvas width. lengths: "full" | "gsm8k" (see `retrofit.bench.lengths`).
        warmup, repeats: untimed and timed optimizer steps per variant.
        lora_r: LoRA rank (alpha = r); None = the size's default.
        variants: which variants to run, in order ("full-width" first for the ratios).
        seed: seed of data, times and weights. data_dir: GSM8K folder (None = RETROFIT_DATA_DIR).
        insertion_schedule: alpha of the interpolant (default geometric(10, 0.01), spec §1.2).
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

    def validate(self) -> None:
        """Raise ValueError naming the option if a value is invalid."""
        bad = [v for v in self.variants if v not in VARIANTS]
        if bad:
            raise ValueError(f"--variants: unknown {bad}; choose from {VARIANTS}")
        if min(self.batch, self.accum, self.canvas, self.repeats) < 1 or self.warmup < 0:
            raise ValueError("--batch, --accum, --canvas, --repeats must be >= 1 and --warmup >= 0")
        if self.size not in SIZES:
            raise ValueError(f"--size must be one of {sorted(SIZES)}, got {self.size!r}")


def _collator(variant: str, opts: TrainStepOptions) -> Any:
    from retrofit.training.collator import FlexMDMCollator, MDMCollator

    s = SIZES[opts.size]
    common = dict(mask_id=s.mask_id, pad_id=s.pad_id, canvas_width=opts.canvas, seed=opts.seed)
    if variant == "mdm":
        return MDMCollator(time_mode="uniform", **common)
    return FlexMDMCollator(
        insertion_schedule=opts.insertion_schedule,
        unmasking_schedule="linear",
        time_mode="banded" if variant == "banded" else "stratified",
        grad_accum=opts.accum,
        trim=variant != "full-width",
        **common,
    )


def _batches(variant: str, opts: TrainStepOptions, table: LengthTable | None) -> list[list[dict[str, Any]]]:
    """[step][micro-step] collated batches on the device; the x1 draws do not depend on the variant.

    Warm-up steps hold one micro-batch (enough to allocate the optimizer state and warm caches);
    timed steps hold G.
    """
    s, device = SIZES[opts.size], torch.device(opts.device)
    gen = torch.Generator().manual_seed(opts.seed)
    collate = _collator(variant, opts)
    steps = []
    for i in range(opts.warmup + opts.repeats):
        micro = []
        for k in range(1 if i < opts.warmup else opts.accum):  # a warm-up step is one micro-step
            collate.calls = i * opts.accum + k  # micro-step k of optimizer step i (sets the band)
            feats = make_features(
                opts.lengths,
                opts.batch,
                opts.canvas,
                vocab_limit=min(s.mask_id, s.pad_id),
                table=table,
                generator=gen,
            )
            micro.append({k: v.to(device) for k, v in collate(feats).items()})
        steps.append(micro)
    return steps


def _model(variant: str, opts: TrainStepOptions) -> tuple[torch.nn.Module, dict[str, int]]:
    """LoRA-wrapped FlexMDM (graft modules trainable) or LLaDA, trainable weights in fp32."""
    from retrofit.models.flexmdm import FlexMDMModel
    from retrofit.training.args import LoraRecipe
    from retrofit.training.lora import cast_trainable, wrap_with_lora

    dtype, device = resolve_dtype(opts.dtype), torch.device(opts.device)
    llada = build_llada(opts.size, layers=opts.layers, device=device, dtype=dtype, seed=opts.seed)
    counts = parameter_counts(llada)
    model, to_save = llada, []
    if variant != "mdm":
        pad_attention = "full" if variant == "full-width" else "slots"
        model = FlexMDMModel.from_llada(
            llada, seed=opts.seed, canvas_width=opts.canvas, pad_attention=pad_attention
        )
        model = model.to(device=device, dtype=dtype)
        to_save = model.new_module_names()
    if opts.grad_ckpt:
        _enable_checkpointing(model)
    r = opts.lora_r or SIZES[opts.size].lora_r
    model = wrap_with_lora(model, LoraRecipe(r=r, alpha=r), modules_to_save=to_save)
    cast_trainable(model, torch.float32)
    counts["trainable"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return model.train(), counts


def _enable_checkpointing(model: torch.nn.Module) -> None:
    """Non-reentrant activation checkpointing of every block (transformers 5.x name, else the old one)."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    blocks = model.get_base_model() if hasattr(model, "get_base_model") else model
    if not any(getattr(m, "gradient_checkpointing", False) for m in blocks.modules()):
        raise RuntimeError("--grad-ckpt on: no block was switched to gradient checkpointing")


def _loss(
    variant: str, model: torch.nn.Module, batch: dict[str, torch.Tensor], normalizer: float
) -> torch.Tensor:
    """Loss of one micro-batch; token logits only at the masked slots (spec §3.2, §3.6)."""
    if variant == "mdm":
        hidden = model(input_ids=batch["input_ids"], return_logits=False).last_hidden_state  # [B, L, D]
        logits = model.get_base_model().compute_logits(hidden[batch["mask_slots"]])  # [N, V]
        return mdm_loss(
            logits,
            batch["targets"],
            batch["mask_prob"],
            normalizer=normalizer,
            mask_slots=batch["mask_slots"],
        )
    out = model(
        input_ids=batch["input_ids"],
        t=batch["t"],
        attention_mask=batch["attention_mask"],
        logits_mask=batch["mask_slots"],
    )
    loss = flexmdm_loss(
        out.logits,
        batch["targets"],
        out.expected_gaps,
        batch["gaps"],
        batch["gap_mask"],
        batch["weight_unmask"],
        batch["weight_insert"],
        normalizer=normalizer,
        mask_slots=batch["mask_slots"],
    )
    return loss.total


def _step_counts(steps: list[list[dict[str, Any]]], opts: TrainStepOptions) -> dict[str, float]:
    """Per-optimizer-step means over the timed steps: x1 tokens, computed positions, logit rows."""
    timed = steps[opts.warmup :]
    full = opts.batch * (opts.canvas + 1) * opts.accum
    x1 = sum(int(b["num_x1_tokens"]) for s in timed for b in s) / len(timed)
    computed = sum(int(b["num_computed_tokens"]) for s in timed for b in s) / len(timed)
    rows = sum(int(b["mask_slots"].sum()) for s in timed for b in s) / len(timed)
    return {
        "x1_tokens": x1,
        "computed_positions": computed,
        "logit_rows": rows,
        "computed_fraction": computed / full,
    }


def _time_steps(
    variant: str, model: torch.nn.Module, steps: list, opts: TrainStepOptions
) -> tuple[list, dict]:
    """Warm-up and timed optimizer steps (AdamW over the trainable parameters); (times s, memory)."""
    device, dtype = torch.device(opts.device), resolve_dtype(opts.dtype)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def optimizer_step(i: int) -> None:
        for batch in steps[i]:
            with autocast(device, dtype):
                loss = _loss(variant, model, batch, float(opts.canvas)) / opts.accum
            loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    with peak_memory(device) as memory:
        times = time_calls(optimizer_step, warmup=opts.warmup, repeats=opts.repeats, device=device)
    return times, memory


def run_variant(variant: str, opts: TrainStepOptions, table: LengthTable | None) -> dict[str, Any]:
    """Build, warm up and time one variant; returns its result row (timings in seconds).

    Memory is released before the build, so each variant's peak starts from a clean state.
    """
    release_memory(opts.device)
    steps = _batches(variant, opts, table)
    model, counts = _model(variant, opts)
    times, memory = _time_steps(variant, model, steps, opts)
    row = {"variant": variant, **summarize(times), **_step_counts(steps, opts), **memory, "params": counts}
    row["x1_tokens_per_s"] = row["x1_tokens"] / row["median_s"]
    row["computed_per_s"] = row["computed_positions"] / row["median_s"]
    return row


def _mfu(row: dict[str, Any], opts: TrainStepOptions) -> float:
    """4 · (N_trunk · positions + N_head · logit rows) / (t · 989 TFLOP/s): frozen base + LoRA (spec §2.9)."""
    p = row["params"]
    flops = 4.0 * (p["trunk"] * row["computed_positions"] + p["lm_head"] * row["logit_rows"])
    return flops / row["median_s"] / H100_BF16_PEAK_FLOPS


def run_train_step(opts: TrainStepOptions, log=print) -> dict[str, Any]:
    """Run every requested variant; returns the JSON payload (ratios vs full-width included).

    Raises:
        ValueError: invalid options. FileNotFoundError: "gsm8k" lengths without local data.
    """
    opts.validate()
    table = gsm8k_length_table(opts.data_dir) if opts.lengths == "gsm8k" else None
    rows = []
    with torch_threads(opts.threads):
        machine = machine_info(opts.device)
        for variant in opts.variants:
            start = time.perf_counter()
            rows.append(run_variant(variant, opts, table))
            elapsed = time.perf_counter() - start
            log(f"  train-step {variant}: {rows[-1]['x1_tokens_per_s']:.1f} x1 tok/s ({elapsed:.0f} s)")
    base = next((r for r in rows if r["variant"] == "full-width"), None)
    for row in rows:
        row["ratio_vs_full_width"] = row["x1_tokens_per_s"] / base["x1_tokens_per_s"] if base else None
        row["mfu"] = _mfu(row, opts) if torch.device(opts.device).type == "cuda" else None
        if row["variant"] != "mdm":
            row["closed_form_fraction"] = expected_computed_fraction(
                batch=opts.batch,
                canvas=opts.canvas,
                time_mode="banded" if row["variant"] == "banded" else "stratified",
                grad_accum=opts.accum,
                trim=row["variant"] != "full-width",
                table=table,
                insertion_schedule=opts.insertion_schedule,
                seed=opts.seed,
            )
            row["expected_ratio"] = 1.0 / row["closed_form_fraction"]
    return {
        "benchmark": "train-step",
        "machine": machine,
        "options": asdict(opts),
        "x1_lengths": table.summary() if table is not None else {"mean_total": opts.canvas, "mean_prompt": 0},
        "variants": rows,
        "notes": [
            "token logits only at the masked slots in every variant",
            "x1_tokens_per_s = real x1 tokens per optimizer step / median step time",
            "computed_fraction = positions fed to the trunk (B*(w+1) per micro-batch) / B*(L+1)",
            "expected_ratio = 1 / closed_form_fraction (cost proportional to positions; attention and "
            "optimizer overheads make the measured ratio lower)",
            "mfu = 4*(N_trunk*positions + N_head*logit_rows)/(t*989e12): forward 2N + activation-backward 2N "
            "(frozen base + LoRA, no weight grads), H100/H200 bf16 dense peak; attention scores excluded",
        ],
    }
