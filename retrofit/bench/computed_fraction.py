"""Computed fraction of training batches, measured on the real collators with emulated ranks.

computed fraction = positions fed to the trunk / (B x (L + 1)) summed over micro-steps, where a
data-parallel micro-step of W ranks costs W x (the largest rank's positions): every rank waits
for the slowest (docs/method.md §3.5, §3.7). A rank's positions are its collator's
`num_computed_tokens`: B x (w + 1) for trimmed rows (w = its longest x_t), R x T for packed
rows (the documents' n_b + 1, plus filler when rows have a budget).

Workloads:
  * ``full``: every x1 is `canvas` tokens with no prompt (the transfer stage; docs/method.md §1.6).
  * ``gsm8k``: GSM8K-shaped prompt + answer lengths (`retrofit.bench.lengths`).
  * a list of tokenized examples (e.g. a recipe's training set, `features=`), drawn in a
    seeded random order, or length-grouped with transformers' `LengthGroupedSampler`
    (`order="group_by_length"`, what `training.train_sampling_strategy: group_by_length` does).

No model is built: this measures the batches, not the speed (see `retrofit bench train-step`).

    retrofit bench computed-fraction --lengths full --canvas 1024 --batch 4 --accum 2 --world-size 16
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch

__all__ = ["FractionOptions", "LAYOUTS", "emulate_fraction", "options_from_workload", "run_computed_fraction"]

LAYOUTS = ("trimmed", "packed", "group_by_length")
"""trimmed: today's banded + trimmed rows; packed: data.packing; group_by_length: trimmed rows
of a length-grouped sampler (`training.train_sampling_strategy: group_by_length`)."""


@dataclass
class FractionOptions:
    """Settings of `retrofit bench computed-fraction`.

    Attributes:
        lengths: "full" | "gsm8k" | "recipe" (a label: the features were given). canvas: L.
        batch: B per rank. accum: G micro-steps per optimizer step. world_size: W emulated ranks.
        steps: optimizer steps measured. time_mode: the collator's time sampling.
        insertion_schedule: alpha. pack_tokens: packed row budget (None: one row per micro-batch).
        layouts: which layouts to measure. seed: data and collator seed. data_dir: GSM8K folder
            for lengths "gsm8k" (None = RETROFIT_DATA_DIR).
        mask_id, pad_id: token ids (random tokens stay below both).
    """

    lengths: str = "full"
    canvas: int = 1024
    batch: int = 4
    accum: int = 2
    world_size: int = 16
    steps: int = 16
    time_mode: str = "banded"
    insertion_schedule: Any = "geometric"
    pack_tokens: int | None = None
    layouts: tuple[str, ...] = LAYOUTS
    seed: int = 0
    data_dir: str | None = None
    mask_id: int = 126336
    pad_id: int = 126081

    def validate(self) -> None:
        """Raise ValueError naming the option if a value is invalid."""
        if min(self.canvas, self.batch, self.accum, self.world_size, self.steps) < 1:
            raise ValueError("--canvas, --batch, --accum, --world-size and --steps must be >= 1")
        bad = [layout for layout in self.layouts if layout not in LAYOUTS]
        if bad:
            raise ValueError(f"--layouts: unknown {bad}; choose from {LAYOUTS}")


def _collators(opts: FractionOptions, packing: bool, **collator_kwargs: Any) -> list[Any]:
    from retrofit.training.collator import FlexMDMCollator

    common = dict(
        mask_id=opts.mask_id,
        pad_id=opts.pad_id,
        canvas_width=opts.canvas,
        insertion_schedule=opts.insertion_schedule,
        time_mode=opts.time_mode,
        world_size=opts.world_size,
        grad_accum=opts.accum,
        seed=opts.seed,
        packing=packing,
        pack_tokens=opts.pack_tokens,
    )
    return [FlexMDMCollator(rank=r, **common, **collator_kwargs) for r in range(opts.world_size)]


def _random_features(opts: FractionOptions) -> list[dict[str, Any]]:
    """A pool of random examples of the `opts.lengths` workload (one per example consumed)."""
    from retrofit.bench.lengths import gsm8k_length_table, make_features

    table = gsm8k_length_table(opts.data_dir) if opts.lengths == "gsm8k" else None
    gen = torch.Generator().manual_seed(opts.seed)
    needed = opts.steps * opts.accum * opts.world_size * opts.batch
    vocab = min(opts.mask_id, opts.pad_id)
    return make_features(opts.lengths, needed, opts.canvas, vocab_limit=vocab, table=table, generator=gen)


def _example_order(features: list[dict[str, Any]], opts: FractionOptions, layout: str) -> list[int]:
    """Indices of the examples in the order the ranks consume them (rank r takes every W-th)."""
    needed = opts.steps * opts.accum * opts.world_size * opts.batch
    gen = torch.Generator().manual_seed(opts.seed)
    order: list[int] = []
    while len(order) < needed:
        if layout == "group_by_length":
            from transformers.trainer_pt_utils import LengthGroupedSampler

            lengths = [len(f["input_ids"]) for f in features]
            order += list(LengthGroupedSampler(opts.batch * opts.accum, lengths=lengths, generator=gen))
        else:
            order += torch.randperm(len(features), generator=gen).tolist()
    return order[:needed]


def emulate_fraction(
    opts: FractionOptions, layout: str, features: list[dict[str, Any]] | None = None, **collator_kwargs: Any
) -> dict[str, float]:
    """Measure one layout; returns computed_fraction and the mean x_t / x1 fraction.

    Args:
        opts: the settings. layout: one of `LAYOUTS`.
        features: tokenized examples (`input_ids`, optional prompt_length / infill_cutoff); None =
            random examples of the `opts.lengths` workload.
        **collator_kwargs: extra FlexMDMCollator fields (e.g. tokenizer for infilling rows).

    Returns:
        {"computed_fraction", "slot_fraction" (sum of n_b + 1 over B (L + 1): perfect packing),
        "slowest_rank_excess" (computed / sum over ranks of their own positions)}.
    """
    collators = _collators(opts, layout == "packed", **collator_kwargs)
    features = features if features is not None else _random_features(opts)
    order = _example_order(features, opts, layout)
    computed = own = slots = 0.0
    cursor = 0
    for step in range(opts.steps):
        for k in range(opts.accum):
            costs = []
            for collate in collators:
                collate.calls = step * opts.accum + k
                batch = collate([features[i] for i in order[cursor : cursor + opts.batch]])
                cursor += opts.batch
                costs.append(int(batch["num_computed_tokens"]))
                slots += float(batch["gap_mask"].sum())  # n_b + 1 per example
            computed += opts.world_size * max(costs)
            own += sum(costs)
    full = opts.steps * opts.accum * opts.world_size * opts.batch * (opts.canvas + 1)
    return {
        "computed_fraction": computed / full,
        "slot_fraction": slots / full,
        "slowest_rank_excess": computed / own,
    }


def options_from_workload(work: Any, world_size: int, steps: int, **kwargs: Any) -> FractionOptions:
    """FractionOptions of a `retrofit.bench.recipe_workload.RecipeWorkload` (its B, G, canvas, ids)."""
    return FractionOptions(
        canvas=work.canvas, batch=work.batch, accum=work.accum, world_size=world_size, steps=steps,
        lengths="recipe", time_mode=work.time_mode, insertion_schedule=work.insertion_schedule, mask_id=work.mask_id,
        pad_id=work.pad_id, **kwargs,
    )  # fmt: skip


def run_fraction_command(args: Any) -> dict[str, Any]:
    """`retrofit bench computed-fraction` from its parsed arguments (with or without --recipe)."""
    layouts = tuple(args.layouts)
    if args.recipe is None:
        opts = FractionOptions(
            lengths=args.lengths, canvas=args.canvas, batch=args.batch, accum=args.accum,
            world_size=args.world_size, steps=args.steps, pack_tokens=args.pack_tokens, layouts=layouts,
            seed=args.seed, data_dir=args.data_dir,
        )  # fmt: skip
        return run_computed_fraction(opts)
    from retrofit.bench.recipe_workload import recipe_workload

    work = recipe_workload(args.recipe, args.override)
    opts = options_from_workload(
        work, args.world_size, args.steps, pack_tokens=args.pack_tokens, layouts=layouts, seed=args.seed
    )
    payload = run_computed_fraction(opts, work.features, **work.collator_kwargs)
    payload["workload"] = {
        "recipe": args.recipe,
        "overrides": list(args.override),
        "examples": len(work.features),
    }
    return payload


def run_computed_fraction(
    opts: FractionOptions, features: list[dict[str, Any]] | None = None, log=print, **collator_kwargs: Any
) -> dict[str, Any]:
    """Every requested layout; returns the JSON payload of `retrofit bench computed-fraction`."""
    opts.validate()
    rows = []
    for layout in opts.layouts:
        row = {"layout": layout, **emulate_fraction(opts, layout, features, **collator_kwargs)}
        log(
            f"  {layout}: computed fraction {row['computed_fraction']:.3f} (slots {row['slot_fraction']:.3f})"
        )
        rows.append(row)
    from retrofit.bench.common import machine_info

    return {
        "benchmark": "computed-fraction",
        "machine": machine_info("cpu"),
        "options": {k: v for k, v in asdict(opts).items() if k != "layouts"}
        | {"layouts": list(opts.layouts)},
        "workload": "features" if features is not None else opts.lengths,
        "layouts": rows,
        "notes": [
            "computed_fraction = sum over micro-steps of W x max over ranks of positions / (B (L + 1))",
            "slot_fraction = sum of n_b + 1 / (B (L + 1)): the floor, every document at its own length",
        ],
    }
