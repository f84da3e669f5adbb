"""The model a recipe trains: base loading, graft, `model.init_from`, LoRA wrapping.

One builder for the run and its plan: `retrofit train` calls `build_model` with the base's
weights, `retrofit train --dry-run` calls it with `meta=True`, where every tensor lives on the
meta device (the base's config.json is read, no weight is read or allocated), so the plan counts
exactly the parameters the run trains. What gets built (docs/method.md §2.4-2.10):

- `mode: pretrain`: every parameter trainable, no LoRA: the LLaDA model itself (MDM loss), or the
  FlexMDM graft of it (FlexMDM loss: a FlexMDM from scratch on a fresh LLaDA).
- `training.loss: mdm`: LLaDA + LoRA (the baseline fine-tune, no graft).
- otherwise: the FlexMDM graft (`model.graft`, schedules from `objective`) + LoRA with the graft
  modules in `modules_to_save`; a `retrofit graft` folder as `model.base` is already grafted.
  `model.init_from` loads an earlier stage's trainable weights (not on the meta device).

Usage:
    >>> model, info = build_model(recipe, resolve_local(recipe.model.base), width)
    >>> plan, _ = build_model(recipe, base, recipe.data.max_length, meta=True)
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
from retrofit.training.recipe import recipe_to_dict

__all__ = [
    "base_model_type",
    "build_model",
    "inner_config",
    "load_trainable",
    "resolve_local",
    "without_zero_init",
]


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


def build_model(
    recipe: Recipe, base: str, width: int, *, meta: bool = False
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Build the model to train and the manifest info (kind, base, config, LoRA, recipe).

    Args:
        recipe: the loaded recipe (mode, loss, graft, objective schedules, LoRA, dtypes, seed).
        base: the base model folder (`resolve_local`); with `meta=True` also a Hub id, whose
            config is then LLaDAConfig's defaults (LLaDA-8B).
        width: the canvas width L_max the graft records when it is made here (`canvas_width`).
        meta: build on the meta device from the base's config.json: no weight is read or
            allocated, `model.init_from` is not read (its tensors do not change any shape).

    Returns:
        (model, on CPU or on meta, manifest info dict incl. "full_row_tokens" = width + 1 for
        a FlexMDM, width for a LLaDA).

    Raises:
        ValueError: the recipe contradicts a grafted base (see `_load_grafted`), or
            `model.graft` sets a schedule that differs from `objective`.
        CheckpointError: `model.init_from` is incomplete or its tensors do not fit.
    """
    with torch.device("meta") if meta else contextlib.nullcontext():
        if base_model_type(base) == "flexmdm":  # a `retrofit graft` folder: the graft is already made
            flex = _load_grafted(recipe, base, meta)
            model = _with_lora(recipe, flex, flex.new_module_names(), meta)
            return _finish_model(recipe, model, "flexmdm", base, width)
        model = _load_llada(recipe, base, meta)
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
            model = _with_lora(recipe, model, to_save, meta)
        return _finish_model(recipe, model, kind, base, width)


def inner_config(model: torch.nn.Module) -> Any:
    """The config of a model, or of the model inside a peft wrapper."""
    return model.get_base_model().config if hasattr(model, "get_base_model") else model.config


def _load_llada(recipe: Recipe, base: str, meta: bool) -> torch.nn.Module:
    """The LLaDA base in `model.dtype`, train mode: its weights, or its config on meta."""
    dtype = torch_dtype(recipe.model.dtype)
    if not meta:
        from retrofit.models.loading import load_llada

        return load_llada(base, dtype=dtype).train()
    from retrofit.models.llada import LLaDAConfig, LLaDAModelLM

    config_file = Path(base) / "config.json"
    config = (
        LLaDAConfig.from_dict(json.loads(config_file.read_text())) if config_file.is_file() else LLaDAConfig()
    )
    config.dtype = dtype  # what from_pretrained records: the manifest info is the run's
    model = LLaDAModelLM(config).to(dtype).train()
    model.name_or_path = config.name_or_path = base  # the graft's and LoRA's base_model
    return model


def _finish_model(recipe: Recipe, model, kind: str, base: str, width: int) -> tuple:
    """Cast the trainable tensors and build the manifest info of :func:`build_model`."""
    from retrofit.training.lora import cast_trainable

    lora = {}
    if recipe.mode != "pretrain":
        lora = model.peft_config["default"].to_dict()
        cast_trainable(model, torch_dtype(recipe.model.trainable_dtype))
    info = {
        "kind": kind,
        "base_model": base,
        "model_config": inner_config(model).to_dict(),
        "lora": json.loads(json.dumps(lora, default=list)),
        "recipe": recipe_to_dict(recipe),
        "full_row_tokens": width + (1 if kind == "flexmdm" else 0),
    }
    return model, info


def base_model_type(base: str) -> str | None:
    """`model_type` of a local model folder's config.json (None if it has none)."""
    config = Path(base) / "config.json"
    return json.loads(config.read_text()).get("model_type") if config.is_file() else None


def _load_grafted(recipe: Recipe, base: str, meta: bool) -> torch.nn.Module:
    """Load a FlexMDM folder (`retrofit graft` output) as the base of a LoRA stage.

    Raises:
        ValueError: the recipe asks for something the folder cannot be (pretraining, the MDM
            loss), or its `model.graft` / `objective` schedules contradict the folder's config.json.
    """
    from retrofit.models.flexmdm import FlexMDMModel
    from retrofit.models.flexmdm_config import FlexMDMConfig
    from retrofit.schedules import make_schedule

    where = f"{Path(base) / 'config.json'} (model_type flexmdm)"
    if recipe.mode == "pretrain" or recipe.training.loss != "flexmdm":
        raise ValueError(f"model.base={base}: {where} needs mode: retrofit and training.loss: flexmdm")
    dtype = torch_dtype(recipe.model.dtype)
    if meta:
        config = FlexMDMConfig.from_dict(json.loads((Path(base) / "config.json").read_text()))
        flex = FlexMDMModel(config).to(dtype).train()
        flex.name_or_path = flex.config.name_or_path = base
    else:
        flex = FlexMDMModel.from_pretrained(base, dtype=dtype).train()
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


def _with_lora(recipe: Recipe, model: torch.nn.Module, to_save: list[str], meta: bool) -> torch.nn.Module:
    """Wrap with LoRA; with `model.init_from`, continue that LoRA or merge it and add a fresh one."""
    from retrofit.training.lora import wrap_with_lora

    wrapped = wrap_with_lora(model, recipe.lora, to_save)
    if not recipe.model.init_from:
        return wrapped
    if not meta:
        load_trainable(wrapped, recipe.model.init_from)
    if recipe.model.init_lora == "continue":
        return wrapped
    merged = wrapped.merge_and_unload()  # LoRA folded into the base; graft modules keep their values
    return wrap_with_lora(merged, recipe.lora, to_save)


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


@contextlib.contextmanager
def without_zero_init(args: Any):
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
