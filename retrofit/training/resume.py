"""Resume of `retrofit train`: which checkpoint a run continues from, and whether it may.

`training.resume_from_checkpoint=auto` picks the newest complete checkpoint in `output_dir` (or
starts fresh), a path picks that checkpoint; either is refused if its manifest
(`retrofit.training.checkpoint`) is missing or does not match its files
(`resolve_resume`), or if it holds DeepSpeed ZeRO shards saved by another number of processes
(`check_resume_parallelism`). `plan_resume` runs both for a launch and returns the line
`retrofit train` prints about the choice (`describe_resume`); `restore_collator_position` puts
the collator's micro-batch counter (time bands, RNG streams) where the checkpoint stopped.

Usage:
    >>> resume, line = plan_resume(recipe.training)   # before any model loads
    >>> trainer.train(resume_from_checkpoint=resume)
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from retrofit.training.checkpoint import CheckpointError, read_manifest, verify_checkpoint

__all__ = [
    "check_resume_parallelism",
    "describe_resume",
    "plan_resume",
    "resolve_resume",
    "restore_collator_position",
    "saved_parallelism",
    "zero_stage",
]


def plan_resume(args: Any) -> tuple[str | None, str | None]:
    """The checkpoint this launch resumes from, checked, and the line to print about it.

    Args:
        args: the run's TrainingArguments (`resume_from_checkpoint`, `output_dir`, `world_size`,
            and accelerate's `deepspeed_plugin` when DeepSpeed is on).

    Returns:
        (checkpoint folder or None for a fresh start, line for the log or None).

    Raises:
        CheckpointError: see `resolve_resume` and `check_resume_parallelism`.
    """
    resume = resolve_resume(args.resume_from_checkpoint, args.output_dir)
    if resume is not None:
        check_resume_parallelism(resume, args.world_size, zero_stage(args))
    return resume, describe_resume(args.resume_from_checkpoint, resume, args.output_dir)


def zero_stage(args: Any) -> int | None:
    """DeepSpeed ZeRO stage of this launch (None without DeepSpeed)."""
    plugin = getattr(args, "deepspeed_plugin", None)
    return int(plugin.zero_stage) if plugin is not None else None


def restore_collator_position(collator: Any, checkpoint: str, grad_accum: int) -> None:
    """Set the collator's micro-batch counter to where the checkpoint stopped (time bands, RNG)."""
    state = json.loads((Path(checkpoint) / "trainer_state.json").read_text())
    collator.load_state_dict({"calls": int(state["global_step"]) * grad_accum})


def saved_parallelism(checkpoint_dir: str | os.PathLike) -> tuple[int | None, int | None]:
    """(world size, ZeRO stage) a checkpoint was saved with.

    Read from the manifest's `parallelism`; for checkpoints written before it was recorded, the
    world size is the number of DeepSpeed per-rank optimizer shards
    (`global_step*/*zero_pp_rank_<r>_mp_rank_00_optim_states.pt`) and the stage is unknown (None).

    Returns:
        (world size or None if unknown, ZeRO stage or None for no DeepSpeed / unknown).
    """
    ckpt = Path(checkpoint_dir)
    try:
        recorded = read_manifest(ckpt).get("parallelism") or {}
    except CheckpointError:
        recorded = {}
    if recorded.get("world_size") is not None:
        stage = recorded.get("zero_stage")
        return int(recorded["world_size"]), (int(stage) if stage is not None else None)
    ranks = {
        p.name.split("zero_pp_rank_")[1].split("_")[0] for p in ckpt.glob("global_step*/*optim_states.pt")
    }
    return (len(ranks) or None), None


def check_resume_parallelism(
    checkpoint_dir: str | os.PathLike, world_size: int, zero_stage: int | None
) -> None:
    """Refuse to resume a DeepSpeed ZeRO checkpoint under another number of processes.

    ZeRO splits the optimizer state (Adam moments, fp32 master weights) into one shard per
    process. Resumed by a different number of processes -- or without DeepSpeed -- the Trainer
    restores the weights but silently starts the optimizer afresh. Checkpoints without ZeRO
    shards (one process, DDP) hold the whole optimizer state and resume under any world size.

    Args:
        checkpoint_dir: the checkpoint to resume from.
        world_size: processes of this run.
        zero_stage: this run's DeepSpeed ZeRO stage; None when it does not use DeepSpeed.

    Raises:
        CheckpointError: naming both world sizes and the two ways forward (resume with the
            saved number of processes, or `model.init_from` for a new run from its weights).
    """
    ckpt = Path(checkpoint_dir)
    saved_size, saved_stage = saved_parallelism(ckpt)
    zero_saved = saved_stage is not None or any(p.is_dir() for p in ckpt.glob("global_step*"))
    if not zero_saved or saved_size is None:
        return
    if zero_stage is not None and saved_size == world_size:
        return
    stage = f"ZeRO-{saved_stage}" if saved_stage is not None else "ZeRO"
    now = f"{world_size} process(es)" + (
        " without DeepSpeed" if zero_stage is None else f" (ZeRO-{zero_stage})"
    )
    raise CheckpointError(
        f"refusing to resume from {ckpt}: it was saved by {saved_size} process(es) under DeepSpeed {stage}, "
        f"and this run has {now}. ZeRO keeps one optimizer shard per process, so the weights would be "
        "restored but the optimizer state and its step counter silently reset. Either resume with "
        f"{saved_size} processes (accelerate launch --num_processes {saved_size} with the same DeepSpeed "
        f"config), or start a new run from its trained weights: model.init_from={ckpt} (LoRA stages; "
        "fresh optimizer and LR schedule, training.resume_from_checkpoint unset)"
    )


def resolve_resume(value: str | None, output_dir: str) -> str | None:
    """Checkpoint to resume from: None, `auto` (newest in output_dir, or None) or a path.

    Raises:
        CheckpointError: the checkpoint is incomplete or corrupt (message lists the problems).
    """
    from transformers.trainer_utils import get_last_checkpoint

    if value in (None, "", "none", "None"):
        return None
    if value == "auto":
        value = get_last_checkpoint(output_dir) if Path(output_dir).is_dir() else None
        if value is None:
            return None
    problems = verify_checkpoint(value, check_hashes=True)
    if problems:
        raise CheckpointError(
            f"refusing to resume from {value}: it is incomplete or corrupt ("
            + "; ".join(problems)
            + "). Delete it or pass an earlier checkpoint as training.resume_from_checkpoint=PATH."
        )
    return str(value)


def describe_resume(value: str | None, resume: str | None, output_dir: str) -> str | None:
    """One line saying which checkpoint training resumes from, or that `auto` found none.

    Returns:
        the line, or None when no resume was asked for.
    """
    if resume is None:
        if value == "auto":
            return f"training.resume_from_checkpoint=auto: no checkpoint in {output_dir}; starting fresh"
        return None
    how = (
        "the newest complete checkpoint, picked by training.resume_from_checkpoint=auto"
        if value == "auto"
        else "training.resume_from_checkpoint"
    )
    return f"resuming from {resume} ({how})"
