"""Training entry point: `accelerate launch -m retrofit.train RECIPE.yaml [key=value ...]`.

One process (`retrofit train RECIPE.yaml`, or `python -m retrofit.train`) or many (accelerate /
torchrun / Slurm; see `recipes/`). Steps: recipe -> tokenizer -> datasets -> model
(`retrofit.training.model_builder`: graft + LoRA, MDM baseline + LoRA, or full-parameter
pretraining; the builder `retrofit train --dry-run` counts) -> collator -> FlexMDMTrainer ->
train (optionally resuming) -> final checkpoint (pretraining also writes an official-layout LLaDA
folder to `<output_dir>/final`).

Resume: `training.resume_from_checkpoint=auto` continues from the newest complete checkpoint in
`output_dir` (or starts fresh; either way the choice is printed), a path resumes from that
checkpoint; either is refused with a message if the checkpoint's manifest is missing or does not
match its files, or if a DeepSpeed ZeRO checkpoint was saved by another number of processes
(`retrofit.training.resume`). The run ends by printing the final checkpoint and the
`retrofit export` command for it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch

from retrofit.training.args import Recipe
from retrofit.training.model_builder import build_model, inner_config, resolve_local, without_zero_init
from retrofit.training.recipe import format_recipe, load_recipe
from retrofit.training.resume import plan_resume, restore_collator_position

__all__ = [
    "build_collator",
    "build_datasets",
    "canvas_width",
    "main",
    "run_training",
]


def main(argv: list[str] | None = None) -> int:
    """`python -m retrofit.train RECIPE.yaml [key=value ...]`; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    recipe = load_recipe(argv[0], argv[1:])
    return run_training(recipe)


def run_training(recipe: Recipe) -> int:
    """Train one recipe on this process (a rank of a distributed launch). Returns 0 on success."""
    from transformers import AutoTokenizer, set_seed

    import retrofit.models  # noqa: F401  (registers "llada"/"flexmdm": no remote-code prompt)
    from retrofit.training.callbacks import InterruptCheckpoint
    from retrofit.training.trainer import FlexMDMTrainer

    args = recipe.training
    main_process = args.process_index == 0
    if main_process:
        print(f"[retrofit] recipe {recipe.source}\n" + format_recipe(recipe), flush=True)
    resume, resume_line = plan_resume(args)  # refused before any model loads
    if main_process and resume_line:
        print(f"[retrofit] {resume_line}", flush=True)
    set_seed(args.seed)
    base = resolve_local(recipe.model.base)
    tokenizer = AutoTokenizer.from_pretrained(base)
    # data first: a bad data file fails in seconds, not after an 8B model has loaded (every
    # shuffle in it is seeded explicitly, so the order does not change the model's init)
    train_ds, eval_ds = build_datasets(recipe, tokenizer)
    with without_zero_init(args):  # full weights per rank; ZeRO-3 partitions them in deepspeed.initialize
        model, info = build_model(recipe, base, canvas_width(recipe, tokenizer))
    collator = build_collator(recipe, model, tokenizer, args)
    full_row_tokens = info.pop("full_row_tokens")
    interrupt = InterruptCheckpoint() if args.save_on_interrupt else None
    trainer = FlexMDMTrainer(
        model=model,
        args=args,
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        data_collator=collator,
        eval_data_collator=build_collator(recipe, model, tokenizer, args) if eval_ds is not None else None,
        callbacks=[interrupt] if interrupt else None,
        manifest_info=info,
        full_row_tokens=full_row_tokens,
    )
    if main_process:
        print(f"[retrofit] {describe_parallelism(trainer)}", flush=True)
    if resume is not None:
        restore_collator_position(collator, resume, args.gradient_accumulation_steps)
    trainer.train(resume_from_checkpoint=resume)
    if interrupt is not None and interrupt.interrupted_at is not None:
        if main_process:
            print(
                f"[retrofit] interrupted: checkpoint-{interrupt.interrupted_at} saved in {args.output_dir}; "
                "rerun with training.resume_from_checkpoint=auto",
                flush=True,
            )
        close_process_group()
        return 0
    final = _save_final(trainer, recipe, tokenizer, base)
    if main_process:
        print(describe_outcome(recipe, final, trainer.state.global_step), flush=True)
    close_process_group()
    return 0


def close_process_group() -> None:
    """Tear down the distributed process group, if any, before the interpreter exits.

    Left to interpreter shutdown, gloo's threads can be destroyed while joinable and abort a rank
    ("terminate called without an active exception", SIGABRT) after training has finished and
    saved, which `accelerate launch` then reports as a failed run (seen once in a 2-process CPU
    demo). All ranks meet at a barrier first, so none tears down while another still saves.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def describe_outcome(recipe: Recipe, final: Path | None, step: int) -> str:
    """Where the run left its result and the next command (printed when training ends)."""
    out = Path(recipe.training.output_dir)
    if recipe.mode == "pretrain":
        folder = out / "final"
        return (
            f"[retrofit] done at step {step}; model folder: {folder}\n"
            f"[retrofit] next: use it as model.base of a retrofit recipe, or: retrofit generate {folder} --prompt TEXT"
        )
    if final is None:
        return (
            f"[retrofit] done at step {step}; no checkpoint saved (training.save_strategy="
            f"{getattr(recipe.training.save_strategy, 'value', recipe.training.save_strategy)}), so there is nothing to export"
        )
    return (
        f"[retrofit] done at step {step}; final checkpoint: {final}\n"
        f"[retrofit] next: retrofit export {final} --out exports/{out.name}"
    )


def describe_parallelism(trainer: Any) -> str:
    """One line: world size, distributed type, ZeRO stage (tests assert on it)."""
    state = trainer.accelerator.state
    text = f"world_size={trainer.accelerator.num_processes} distributed={state.distributed_type.value}"
    if trainer.is_deepspeed_enabled:
        text += f" zero_stage={state.deepspeed_plugin.zero_stage}"
    return text + f" device={trainer.args.device}"


def build_datasets(recipe: Recipe, tokenizer: Any) -> tuple[Any, Any]:
    """Train (and optional eval) datasets from the recipe's specs (`retrofit.data.builder.build_mixture`).

    The eval set gets a fixed time per row (a `t` column the collators use instead of drawing).
    """
    from retrofit.data.builder import build_mixture

    seed = recipe.training.data_seed if recipe.training.data_seed is not None else recipe.training.seed
    kw = {"max_length": recipe.data.max_length, "seed": seed}
    train, _ = build_mixture(recipe.data.train, tokenizer, strategy=recipe.data.mixture, **kw)
    if not recipe.data.eval:
        return train, None
    evalset = build_mixture(recipe.data.eval, tokenizer, **kw)[0]
    # fixed times t_i = (1 - 1e-3) i / (N - 1) + 1e-3: comparable eval losses across steps
    # (docs/method.md §5.2)
    grid = (1 - 1e-3) * torch.linspace(0, 1, len(evalset), dtype=torch.float64) + 1e-3
    return train, evalset.add_column("t", grid.tolist())


def canvas_width(recipe: Recipe, tokenizer: Any) -> int:
    """Canvas width L_max: data.max_length, plus the boundary (FlexMDM) or FIM (MDM) tokens of infilling."""
    from retrofit.data.infill_format import fim_overhead, infill_canvas_width

    if not any(spec.get("format") == "infill" for spec in recipe.data.train + recipe.data.eval):
        return recipe.data.max_length
    if recipe.training.loss == "mdm":
        return recipe.data.max_length + fim_overhead(tokenizer)
    return infill_canvas_width(recipe.data.max_length, tokenizer)


def build_collator(recipe: Recipe, model: torch.nn.Module, tokenizer: Any, args: Any) -> Any:
    """FlexMDMCollator (FlexMDM loss) or MDMCollator (baseline / pretraining) for this rank."""
    from retrofit.training.collator import FlexMDMCollator, MDMCollator

    config = inner_config(model)
    common = {
        "tokenizer": tokenizer,
        "mask_id": int(config.mask_token_id),
        "pad_id": int(config.pad_token_id),
        "world_size": args.world_size,
        "rank": args.process_index,
        "grad_accum": args.gradient_accumulation_steps,
        "seed": args.seed,
        "packing": recipe.data.packing,  # docs/method.md §3.7
        "pack_tokens": recipe.data.pack_tokens,
    }
    if recipe.data.packing and getattr(config, "pad_attention", "slots") != "slots":
        raise ValueError(
            "recipe data.packing needs a FlexMDM graft with pad_attention 'slots' (each example attends "
            f"to itself), but model.base has pad_attention {config.pad_attention!r}; set data.packing: false"
        )
    if args.loss == "mdm":
        width = canvas_width(recipe, tokenizer)
        return MDMCollator(canvas_width=width, time_mode=recipe.objective.time_sampling, **common)
    return FlexMDMCollator(
        insertion_schedule=recipe.objective.insertion_schedule,
        unmasking_schedule=recipe.objective.unmasking_schedule,
        # The data's canvas (infilling: max_length + 2k); config.canvas_width only sets the
        # length scale / normaliser, which later stages keep (docs/method.md §9.7).
        canvas_width=canvas_width(recipe, tokenizer),
        time_mode=recipe.objective.time_sampling,
        trim=recipe.objective.trim,
        **common,
    )


def _save_final(trainer: Any, recipe: Recipe, tokenizer: Any, base: str) -> Path | None:
    """The last step's checkpoint (the trainer saves the step training stops at:
    `retrofit.training.trainer.AtomicCheckpoints`); pretraining also writes `final/`.

    Returns:
        the final checkpoint folder, or None when none exists (`save_strategy: no`, no step run).
    """
    last = Path(recipe.training.output_dir) / f"checkpoint-{trainer.state.global_step}"
    if recipe.mode == "pretrain":
        save_final_folder(trainer, tokenizer, Path(recipe.training.output_dir) / "final")
    return last if last.is_dir() else None


def save_final_folder(trainer: Any, tokenizer: Any, out_dir: Path) -> None:
    """Write a fully trained model to ``out_dir`` atomically, loadable with ``from_pretrained``.

    A LLaDA model is written in the official layout (sharded safetensors + index, config.json
    with the official keys, tokenizer); a FlexMDM (`mode: pretrain` with the FlexMDM loss) as
    `save_pretrained` writes it, like `retrofit graft` and `retrofit export` folders.
    """
    from retrofit.io_utils import atomic_directory
    from retrofit.models.tiny import official_config_dict, save_sharded

    state = trainer.accelerator.get_state_dict(trainer.model_wrapped)  # gathers ZeRO-3 shards
    if not trainer.args.should_save:
        return
    model = trainer.accelerator.unwrap_model(trainer.model)
    state = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    with atomic_directory(out_dir, overwrite=True) as tmp:
        if model.config.model_type == "flexmdm":
            model.save_pretrained(tmp, state_dict=state)
        else:
            (tmp / "config.json").write_text(json.dumps(official_config_dict(model.config), indent=2) + "\n")
            save_sharded(state, tmp)
        tokenizer.save_pretrained(tmp)
    print(f"[retrofit] wrote {out_dir}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
