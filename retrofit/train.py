"""Training entry point: `accelerate launch -m retrofit.train RECIPE.yaml [key=value ...]`.

One process (`retrofit train RECIPE.yaml`, or `python -m retrofit.train`) or many (accelerate /
torchrun / Slurm; see `recipes/`). Steps: recipe -> tokenizer -> model (graft + LoRA, MDM
baseline + LoRA, or full-parameter pretraining) -> datasets -> collator -> FlexMDMTrainer ->
train (optionally resuming) -> final checkpoint (pretraining also writes an official-layout LLaDA
folder to `<output_dir>/final`).

Resume: `training.resume_from_checkpoint=auto` continues from the newest complete checkpoint in
`output_dir` (or starts fresh; either way the choice is printed), a path resumes from that
checkpoint; either is refused with a message if the checkpoint's manifest is missing or does not
match its files, or if a DeepSpeed ZeRO checkpoint was saved by another number of processes.
The run ends by printing the final checkpoint and the `retrofit export` command for it.
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Any

import torch

from retrofit.dtypes import torch_dtype
from retrofit.training.args import Recipe
from retrofit.training.checkpoint import check_resume_parallelism, describe_resume, resolve_resume
from retrofit.training.recipe import format_recipe, load_recipe, recipe_to_dict

__all__ = [
    "build_collator",
    "build_datasets",
    "build_model",
    "canvas_width",
    "main",
    "resolve_resume",
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
    resume = resolve_resume(args.resume_from_checkpoint, args.output_dir)  # refused before any model loads
    if resume is not None:
        check_resume_parallelism(resume, args.world_size, _zero_stage(args))
    resume_line = describe_resume(args.resume_from_checkpoint, resume, args.output_dir)
    if main_process and resume_line:
        print(f"[retrofit] {resume_line}", flush=True)
    set_seed(args.seed)
    base = resolve_local(recipe.model.base)
    tokenizer = AutoTokenizer.from_pretrained(base)
    # data first: a bad data file fails in seconds, not after an 8B model has loaded (every
    # shuffle in it is seeded explicitly, so the order does not change the model's init)
    train_ds, eval_ds = build_datasets(recipe, tokenizer)
    with _without_zero_init(args):  # full weights per rank; ZeRO-3 partitions them in deepspeed.initialize
        model, info = build_model(recipe, base, tokenizer)
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
        _restore_collator_position(collator, resume, args.gradient_accumulation_steps)
    trainer.train(resume_from_checkpoint=resume)
    if interrupt is not None and interrupt.interrupted_at is not None:
        if main_process:
            print(
                f"[retrofit] interrupted: checkpoint-{interrupt.interrupted_at} saved in {args.output_dir}; "
                "rerun with training.resume_from_checkpoint=auto",
                flush=True,
            )
        return 0
    final = _save_final(trainer, recipe, tokenizer, base)
    if main_process:
        print(describe_outcome(recipe, final, trainer.state.global_step), flush=True)
    return 0


def _zero_stage(args: Any) -> int | None:
    """DeepSpeed ZeRO stage of this launch (None without DeepSpeed)."""
    plugin = getattr(args, "deepspeed_plugin", None)
    return int(plugin.zero_stage) if plugin is not None else None


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


@contextlib.contextmanager
def _without_zero_init(args: Any):
    """Build the model without DeepSpeed zero.Init (the graft and peft need whole tensors).

    accelerate registers a ZeRO-3 config with transformers whenever a DeepSpeed launch is
    detected, which makes `from_pretrained` partition weights while loading; the graft copies
    and peft wrapping need whole tensors, so loading is done unpartitioned and DeepSpeed
    partitions at `deepspeed.initialize`. The config is re-registered afterwards.
    """
    from transformers.integrations import is_deepspeed_zero3_enabled, unset_hf_deepspeed_config

    plugin = getattr(args, "deepspeed_plugin", None)
    if plugin is None or not is_deepspeed_zero3_enabled():
        yield
        return
    unset_hf_deepspeed_config()
    try:
        yield
    finally:
        plugin.set_deepspeed_weakref()


def describe_parallelism(trainer: Any) -> str:
    """One line: world size, distributed type, ZeRO stage (tests assert on it)."""
    state = trainer.accelerator.state
    text = f"world_size={trainer.accelerator.num_processes} distributed={state.distributed_type.value}"
    if trainer.is_deepspeed_enabled:
        text += f" zero_stage={state.deepspeed_plugin.zero_stage}"
    return text + f" device={trainer.args.device}"


def resolve_local(name_or_path: str, field: str = "model.base") -> str:
    """A local model folder for a recipe's `model.base`: the path itself, or the Hub cache snapshot.

    Raises:
        FileNotFoundError: a path that does not exist ("no such folder: PATH").
        OSError: a Hub id not in the cache while HF_HUB_OFFLINE is set (says how to download it).
        CheckpointError: a training checkpoint (use `model.init_from`, or export it first).
    """
    from retrofit.models.loading import refuse_training_checkpoint, resolve_model_dir

    folder = resolve_model_dir(name_or_path, field=field)
    refuse_training_checkpoint(folder, field=field)
    return folder


def build_model(recipe: Recipe, base: str, tokenizer: Any) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Build the model to train and the manifest info (kind, base, config, LoRA, recipe).

    - `mode: pretrain`: every parameter trainable, no LoRA: the LLaDA model itself (MDM loss), or
      the FlexMDM graft of it (FlexMDM loss: a FlexMDM from scratch on a fresh LLaDA).
    - `training.loss: mdm`: LLaDA + LoRA (baseline fine-tune, no graft).
    - otherwise: FlexMDM graft (`model.graft`, schedules from `objective`) + LoRA with the graft
      modules in `modules_to_save`; `model.init_from` loads an earlier stage's trainable weights.

    Returns:
        (model on CPU, manifest info dict incl. "full_row_tokens").
    """
    from retrofit.models.loading import load_llada
    from retrofit.training.lora import wrap_with_lora

    width = canvas_width(recipe, tokenizer)
    if base_model_type(base) == "flexmdm":  # a `retrofit graft` folder: the graft is already made
        flex = _load_grafted(recipe, base)
        model = _with_lora(recipe, flex, flex.new_module_names(), wrap_with_lora)
        return _finish_model(recipe, model, "flexmdm", base, width)
    model = load_llada(base, dtype=torch_dtype(recipe.model.dtype)).train()
    kind = "llada" if recipe.training.loss == "mdm" else "flexmdm"
    to_save: list[str] = []
    if kind == "flexmdm":
        from retrofit.models.flexmdm import FlexMDMModel

        graft = _graft_kwargs(recipe, width)
        model = FlexMDMModel.from_llada(model, seed=recipe.training.seed, **graft)
        to_save = model.new_module_names()
    if recipe.mode == "pretrain":
        model.requires_grad_(True)
    else:
        model = _with_lora(recipe, model, to_save, wrap_with_lora)
    return _finish_model(recipe, model, kind, base, width)


def _finish_model(recipe: Recipe, model, kind: str, base: str, width: int) -> tuple:
    """Cast the trainable tensors and build the manifest info of :func:`build_model`."""
    from retrofit.training.lora import cast_trainable

    lora = {}
    if recipe.mode != "pretrain":
        lora = model.peft_config["default"].to_dict()
        cast_trainable(model, torch_dtype(recipe.model.trainable_dtype))
    config = model.get_base_model().config if hasattr(model, "get_base_model") else model.config
    info = {
        "kind": kind,
        "base_model": base,
        "model_config": config.to_dict(),
        "lora": json.loads(json.dumps(lora, default=list)),
        "recipe": recipe_to_dict(recipe),
        "full_row_tokens": width + (1 if kind == "flexmdm" else 0),
    }
    return model, info


def base_model_type(base: str) -> str | None:
    """`model_type` of a local model folder's config.json (None if it has none)."""
    config = Path(base) / "config.json"
    return json.loads(config.read_text()).get("model_type") if config.is_file() else None


def _load_grafted(recipe: Recipe, base: str) -> torch.nn.Module:
    """Load a FlexMDM folder (`retrofit graft` output) as the base of a LoRA stage.

    Raises:
        ValueError: the recipe asks for something the folder cannot be (pretraining, the MDM
            loss), or its `model.graft` / `objective` schedules contradict the folder's config.json.
    """
    from retrofit.models.flexmdm import FlexMDMModel
    from retrofit.schedules import make_schedule

    where = f"{Path(base) / 'config.json'} (model_type flexmdm)"
    if recipe.mode == "pretrain" or recipe.training.loss != "flexmdm":
        raise ValueError(f"model.base={base}: {where} needs mode: retrofit and training.loss: flexmdm")
    flex = FlexMDMModel.from_pretrained(base, dtype=torch_dtype(recipe.model.dtype)).train()
    config = flex.config
    for key, value in recipe.model.graft.items():
        if getattr(config, key, value) != value:
            raise ValueError(f"recipe model.graft.{key}={value!r} but {where} has {getattr(config, key)!r}")
    for key in ("insertion_schedule", "unmasking_schedule"):
        want = make_schedule(getattr(recipe.objective, key)).to_dict()
        if make_schedule(getattr(config, key)).to_dict() != want:
            raise ValueError(
                f"recipe objective.{key}={want} but {where} was grafted with {getattr(config, key)}: "
                f"the model records the schedules it is trained with; change one of them"
            )
    if recipe.data.max_length > int(config.canvas_width):
        print(f"[retrofit] warning: data.max_length={recipe.data.max_length} exceeds the canvas_width "
              f"{config.canvas_width} {where} was grafted with: rows longer than it train, but the sampler "
              f"stops at {config.canvas_width} tokens (graft again with --canvas-width "
              f"{recipe.data.max_length}, or set data.max_length={config.canvas_width})", file=sys.stderr, flush=True)  # fmt: skip
    return flex


def _graft_kwargs(recipe: Recipe, width: int) -> dict[str, Any]:
    """Graft settings with the objective's schedules (the model records what it was trained with)."""
    from retrofit.schedules import make_schedule

    graft = dict(recipe.model.graft)
    graft.setdefault("canvas_width", width)
    for key in ("insertion_schedule", "unmasking_schedule"):
        want = make_schedule(getattr(recipe.objective, key)).to_dict()
        if key in graft and make_schedule(graft[key]).to_dict() != want:
            raise ValueError(
                f"recipe model.graft.{key} differs from objective.{key}; set it in objective only"
            )
        graft[key] = want
    return graft


def _with_lora(recipe: Recipe, model: torch.nn.Module, to_save: list[str], wrap) -> torch.nn.Module:
    """Wrap with LoRA; with `model.init_from`, continue that LoRA or merge it and add a fresh one."""
    wrapped = wrap(model, recipe.lora, to_save)
    if not recipe.model.init_from:
        return wrapped
    load_trainable(wrapped, recipe.model.init_from)
    if recipe.model.init_lora == "continue":
        return wrapped
    merged = wrapped.merge_and_unload()  # LoRA folded into the base; graft modules keep their values
    return wrap(merged, recipe.lora, to_save)


def load_trainable(model: torch.nn.Module, checkpoint: str) -> None:
    """Load an earlier stage's adapter + graft-module tensors (weights only; manifest verified).

    Raises:
        CheckpointError: the checkpoint is incomplete / corrupt, or its tensors do not fit.
    """
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    from retrofit.training.checkpoint import CheckpointError, verify_checkpoint

    problems = verify_checkpoint(checkpoint)
    if problems:
        raise CheckpointError(
            f"model.init_from={checkpoint} is not a complete checkpoint: " + "; ".join(problems)
        )
    path = Path(checkpoint) / "adapter_model.safetensors"
    if not path.is_file():
        raise CheckpointError(f"{path}: missing; model.init_from needs a LoRA training checkpoint")
    result = set_peft_model_state_dict(model, load_file(str(path)))
    if result.unexpected_keys:
        raise CheckpointError(f"{path}: tensors {result.unexpected_keys[:4]} do not exist in this model")


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

    config = model.get_base_model().config if hasattr(model, "get_base_model") else model.config
    common = {
        "tokenizer": tokenizer,
        "mask_id": int(config.mask_token_id),
        "pad_id": int(config.pad_token_id),
        "world_size": args.world_size,
        "rank": args.process_index,
        "grad_accum": args.gradient_accumulation_steps,
        "seed": args.seed,
    }
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


def _restore_collator_position(collator: Any, checkpoint: str, grad_accum: int) -> None:
    """Set the collator's micro-batch counter to where the checkpoint stopped (time bands, RNG)."""
    state = json.loads((Path(checkpoint) / "trainer_state.json").read_text())
    collator.load_state_dict({"calls": int(state["global_step"]) * grad_accum})


def _save_final(trainer: Any, recipe: Recipe, tokenizer: Any, base: str) -> Path | None:
    """Save the last step as a checkpoint (if not saved yet); pretraining also writes `final/`.

    Returns:
        the final checkpoint folder, or None when none exists (`save_strategy: no`, no step run).
    """
    step = trainer.state.global_step
    last = Path(recipe.training.output_dir) / f"checkpoint-{step}"
    if step > 0 and not last.is_dir() and trainer.args.save_strategy != "no":
        trainer._save_checkpoint(trainer.model_wrapped, trial=None)
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
