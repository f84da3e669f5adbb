"""`retrofit train RECIPE.yaml [--dry-run] [key=value ...]`: train on one process, or plan a run.

Many processes: `accelerate launch --config_file recipes/accelerate/<cfg>.yaml -m retrofit.train
RECIPE.yaml [key=value ...]` (same recipe, same overrides).

`--dry-run` builds the model on the meta device (no weights are read or allocated) and prints
the effective global batch, sequence length, step count, trainable parameters per group and a
per-GPU memory estimate for DeepSpeed ZeRO-2 / ZeRO-3 (formula in `retrofit.training.memory`).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import textwrap
from pathlib import Path
from typing import Any

__all__ = ["add_arguments", "dry_run", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `retrofit train`; the epilog lists the recipe fields with their help."""
    parser.add_argument("recipe", help="recipe YAML (see recipes/)")
    parser.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. training.max_steps=20")
    parser.add_argument("--dry-run", action="store_true", help="plan only: meta-device model, counts, memory")
    parser.add_argument("--world-size", type=int, default=None, help="GPUs assumed by --dry-run")
    parser.add_argument("--accelerate-config", default=None, help="--dry-run reads num_processes from it")
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = _fields_help()


def _fields_help() -> str:
    """Every recipe field with its default and whole help text (no torch / transformers import)."""
    from retrofit.training.sections import (
        TRAINING_FIELDS,
        DataRecipe,
        LoraRecipe,
        ModelRecipe,
        ObjectiveRecipe,
    )

    lines = [
        "recipe fields (override any as section.field=value):",
        "  mode (default retrofit): retrofit | pretrain",
    ]
    for name, cls in (
        ("model", ModelRecipe),
        ("lora", LoraRecipe),
        ("data", DataRecipe),
        ("objective", ObjectiveRecipe),
    ):
        defaults = _defaults(cls)
        for key, text in _attribute_docs(cls).items():
            lines.append(_field_line(f"{name}.{key}", defaults[key], text))
    for key, (default, text) in TRAINING_FIELDS.items():
        lines.append(_field_line(f"training.{key}", default, text))
    lines.append("  training.*: every other transformers.TrainingArguments field (max_steps, bf16, ...)")
    return "\n".join(lines)


def _field_line(key: str, default: Any, text: str) -> str:
    shown = (
        "required" if default in ("", []) and key in ("model.base", "data.train") else f"default {default!r}"
    )
    return textwrap.fill(
        f"{key} ({shown}): {text}", width=100, initial_indent="  ", subsequent_indent="      "
    )


def _defaults(cls: type) -> dict[str, Any]:
    """{field: default} of a dataclass (default factories called)."""
    out = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out


def _attribute_docs(cls: type) -> dict[str, str]:
    """{field: whole doc text} from the class docstring's `Attributes:` section.

    An entry is `name: text` or `a, b, c: text` at the section's indent; deeper-indented lines
    continue the entry above.
    """
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    docs: dict[str, str] = {}
    current: list[str] = []
    indent = None
    for line in (cls.__doc__ or "").split("Attributes:")[-1].splitlines():
        if not line.strip():
            continue
        depth = len(line) - len(line.lstrip())
        head, sep, text = line.strip().partition(": ")
        keys = [k.strip() for k in head.split(",")]
        if sep and all(k in names for k in keys) and (indent is None or depth == indent):
            indent = depth
            current = keys
            docs.update(dict.fromkeys(keys, text.strip()))
        elif current and indent is not None and depth > indent:
            for k in current:
                docs[k] += " " + line.strip()
        else:
            current = []
    return {k: docs.get(k, "") for k in names}


def run(args: argparse.Namespace) -> int:
    """Train (one process) or print the dry-run plan. Returns the exit code."""
    from retrofit.training.recipe import load_recipe

    # a dry run plans a GPU recipe on any machine: use_cpu lets bf16 recipes validate without GPUs
    extra = ["training.use_cpu=true"] if args.dry_run else []
    recipe = load_recipe(args.recipe, [*args.overrides, *extra])
    if args.dry_run:
        print(dry_run(recipe, world_size=_world_size(args)))
        return 0
    from retrofit.train import run_training

    return run_training(recipe)


def _world_size(args: argparse.Namespace) -> int:
    if args.world_size:
        return int(args.world_size)
    if args.accelerate_config:
        import yaml

        return int(yaml.safe_load(Path(args.accelerate_config).read_text()).get("num_processes", 1))
    return 1


def dry_run(recipe: Any, world_size: int = 1) -> str:
    """The dry-run report of a recipe (model on the meta device; nothing is allocated).

    Args:
        recipe: a loaded Recipe.
        world_size: data-parallel GPUs assumed for the global batch, steps and memory.

    Returns:
        The multi-line report.
    """
    from retrofit.training.lora import trainable_report
    from retrofit.training.memory import estimate_memory, format_estimates
    from retrofit.training.model_builder import inner_config

    t = recipe.training
    model, backbone, note = _meta_model(recipe)
    report = trainable_report(model)
    config = inner_config(model)
    width = config.canvas_width if hasattr(config, "canvas_width") else recipe.data.max_length
    seq = width + (1 if recipe.training.loss == "flexmdm" else 0)
    global_batch = t.per_device_train_batch_size * t.gradient_accumulation_steps * world_size
    steps, step_note = _steps(recipe, global_batch)
    shape = {
        "d_model": backbone.d_model,
        "mlp_hidden": backbone.mlp_hidden_size,
        "n_layers": backbone.n_layers,
        "vocab": backbone.embedding_size,
    }
    estimates = [
        estimate_memory(
            total_params=report.trainable + report.frozen,
            trainable_params=report.trainable,
            stage=stage,
            world_size=w,
            micro_batch=t.per_device_train_batch_size,
            seq_len=seq,
            weight_bytes=2 if t.bf16 or recipe.model.dtype == "bfloat16" else 4,
            gradient_checkpointing=_recomputes_activations(t),
            head_chunk=t.token_head_chunk,
            **shape,
        )
        for stage in (2, 3)
        for w in sorted({world_size, 8, 16})
    ]
    lines = [
        f"recipe          {recipe.source} (mode {recipe.mode}, loss {t.loss})",
        f"model           {recipe.model.base} {note}",
        f"global batch    {t.per_device_train_batch_size} per device x {t.gradient_accumulation_steps} accumulation"
        f" x {world_size} GPUs = {global_batch} sequences",
        f"sequence length {seq} tokens (canvas {width}{' + length slot' if seq > width else ''})",
        _packing_line(recipe, seq),
        f"token head      {_head_line(t, seq)}",
        f"optimizer steps {steps} {step_note}",
        "parameters (trainable per group):",
        report.format(),
        "memory per GPU (DeepSpeed, estimate; formula in retrofit/training/memory.py):",
        format_estimates(estimates),
    ]
    return "\n".join(lines)


def _packing_line(recipe: Any, seq: int) -> str:
    """What one micro-batch feeds the trunk: packed rows (budget) or trimmed rows."""
    t, data = recipe.training, recipe.data
    worst = t.per_device_train_batch_size * seq
    if not data.packing and t.loss == "mdm":
        return f"packing         off: fixed-width rows (the LLaDA baseline is not trimmed): {worst} positions"
    if not data.packing:
        return (
            f"packing         off: each micro-batch trimmed to its longest x_t (at most {worst} positions); "
            "data.packing: true packs examples side by side (docs/method.md §3.7)"
        )
    budget = data.pack_tokens or worst
    rows = "one row per micro-batch" if data.pack_tokens is None else f"rows of {budget} positions"
    return (
        f"packing         on: {rows} (at most {worst} positions per micro-batch, each example n_b + 1); "
        "measure the positions with `retrofit bench computed-fraction --recipe RECIPE`"
    )


def _head_line(training: Any, seq: int) -> str:
    """The token head's chunking, as the memory estimate counts it."""
    chunk = training.token_head_chunk
    if not chunk:
        return f"one call at the masked slots (up to {training.per_device_train_batch_size * seq} x vocab logits)"
    return f"chunks of {chunk} masked slots, recomputed in backward (training.token_head_chunk)"


def _meta_model(recipe: Any) -> tuple[Any, Any, str]:
    """(model on meta, backbone LLaDAConfig, note on where the config came from).

    The model comes from the run's own builder (`retrofit.training.model_builder.build_model`)
    with `meta=True`: the same base handling, graft, LoRA wrapping and checks, no weights.
    """
    from retrofit.models.loading import looks_like_path
    from retrofit.training.model_builder import build_model, inner_config, resolve_local

    base = str(recipe.model.base)
    note = "(not a local folder: LLaDA-8B defaults of LLaDAConfig)"
    if Path(base).expanduser().exists() or looks_like_path(base):  # a local path: the same advice as a run
        base = resolve_local(base)
        if (Path(base) / "config.json").is_file():
            note = "(config.json read; no weights)"
    model, _ = build_model(recipe, base, recipe.data.max_length, meta=True)
    config = inner_config(model)
    backbone = config.backbone_config if config.model_type == "flexmdm" else config
    return model, backbone, note


def _steps(recipe: Any, global_batch: int) -> tuple[int | str, str]:
    """Optimizer steps: max_steps, or epochs x rows / global batch (local sources; rows before filtering)."""
    t = recipe.training
    if t.max_steps and t.max_steps > 0:
        return t.max_steps, "(training.max_steps)"
    if not all(_is_local(spec) for spec in recipe.data.train):
        return (
            "unknown",
            "(Hub sources are not counted in a dry run; set training.max_steps or RETROFIT_DATA_DIR)",
        )
    from retrofit.data.sources import load_source

    rows = sum(
        min(len(load_source(s["source"], s.get("split", "train"))), int(s.get("limit") or 1 << 62))
        for s in recipe.data.train
    )
    per_epoch = max(rows // global_batch, 1)
    steps = math.ceil(t.num_train_epochs * per_epoch)
    return steps, f"({t.num_train_epochs:g} epochs x {per_epoch} steps; {rows} rows)"


def _recomputes_activations(training: Any) -> bool:
    """Whether the training arguments turn activation (gradient) checkpointing on, read under the
    name the installed transformers defines (as `recipe.RENAMED_TRAINING_FIELDS` resolves it)."""
    names = {f.name for f in dataclasses.fields(training)}
    return bool(
        getattr(
            training,
            "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing",
        )
    )


def _is_local(spec: dict[str, Any]) -> bool:
    """Whether `load_source` would read this spec from disk (no network); a missing local file
    counts as local, so that the dry run reports it ("no such file") instead of skipping it."""
    from retrofit.data.sources import names_a_file, resolve_data_dir

    source = str(spec.get("source", ""))
    if source == "stdlib" or source.startswith("code:") or Path(source).expanduser().exists():
        return True
    if names_a_file(source):
        return True
    return source in ("gsm8k", "humaneval") and resolve_data_dir(spec.get("data_dir")) is not None
