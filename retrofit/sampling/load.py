"""Load a FlexMDM or LLaDA checkpoint folder and build the matching sampler.

The kind is read from config.json ``model_type`` ("flexmdm" or "llada"); the weights are loaded
with transformers' ``AutoModel`` after ``import retrofit.models`` registered both types (no remote
code, safetensors only). A training checkpoint (LoRA / ZeRO) is refused with the export command
that turns it into a model folder.

Example::

    model, tokenizer, kind = load_model("runs/flexmdm-ift", device="cuda", dtype="bf16")
    sampler = make_sampler(model, tokenizer, kind, steps=256)   # FlexMDMSampler or MDMSampler
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from retrofit.dtypes import torch_dtype

__all__ = ["KINDS", "load_model", "make_sampler", "resolve_dtype"]

KINDS = ("flexmdm", "llada")


def resolve_dtype(dtype: str | torch.dtype | None, device: str) -> torch.dtype:
    """Torch dtype of a spelling (`retrofit.dtypes`) or a torch.dtype; None = bf16 on CUDA, fp32 elsewhere.

    Raises:
        ValueError: an unknown dtype name.
    """
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is None:
        return torch.bfloat16 if str(device).startswith("cuda") else torch.float32
    return torch_dtype(dtype)


def load_model(
    model_dir: str | Path, device: str | None = None, dtype: str | torch.dtype | None = None
) -> tuple[Any, Any, str]:
    """Load a checkpoint folder -> (model in eval mode, tokenizer or None, kind).

    Args:
        model_dir: folder with config.json (model_type "flexmdm" or "llada"), safetensors
            weights and (usually) tokenizer files.
        device: "cpu", "cuda", "cuda:1", ...; None = "cuda" when available, else "cpu".
        dtype: see :func:`resolve_dtype`.

    Returns:
        (model, tokenizer, kind); tokenizer is None when the folder has no tokenizer files.

    Raises:
        FileNotFoundError: no such folder, the folder has no config.json, or a weight shard is
            missing.
        CheckpointError: a training checkpoint ("export it first: retrofit export PATH --out
            OUT"), or a shard is truncated / unreadable (the message names it).
        ValueError: config.json has another model_type, or a bad dtype.
    """
    folder = Path(model_dir).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(
            f"no such folder: {model_dir} (MODEL_DIR must be a FlexMDM or LLaDA model folder: config.json + safetensors)"
        )
    from transformers import AutoModel, AutoTokenizer

    import retrofit.models  # noqa: F401  (registers "llada" and "flexmdm" with the Auto classes)
    from retrofit.models.loading import read_shapes, refuse_training_checkpoint, weight_files

    refuse_training_checkpoint(folder)  # a Trainer checkpoint: say how to export it
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(
            f"{config_path} not found: MODEL_DIR must be a FlexMDM or LLaDA checkpoint folder"
        )
    kind = json.loads(config_path.read_text()).get("model_type")
    if kind not in KINDS:
        raise ValueError(
            f"{config_path}: model_type {kind!r} is not one of {KINDS}; pick a FlexMDM or LLaDA folder"
        )
    # Same shard check as load_llada / graft / inspect: a missing or truncated shard is named.
    read_shapes(weight_files(folder))
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = AutoModel.from_pretrained(str(folder), dtype=resolve_dtype(dtype, device), use_safetensors=True)
    tokenizer = None
    if any(
        (folder / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")
    ):
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
    return model.to(device).eval(), tokenizer, kind


def make_sampler(model: Any, tokenizer: Any, kind: str, **overrides: Any) -> Any:
    """The sampler of ``kind`` with config overrides (None values keep the defaults).

    FlexMDM: ``FlexMDMSamplerConfig.from_model`` (model.config.sampler_defaults < overrides);
    keys that only the LLaDA sampler knows (gen_length, block_length, remasking, cfg_scale) are
    ignored. LLaDA: ``MDMSamplerConfig``; keys only FlexMDM knows are ignored, and block_length
    defaults to gen_length (one block).

    Raises:
        ValueError: unknown kind or an invalid setting.
    """
    from dataclasses import fields

    from retrofit.sampling.flexmdm import FlexMDMSampler
    from retrofit.sampling.flexmdm_config import FlexMDMSamplerConfig
    from retrofit.sampling.mdm import MDMSampler, MDMSamplerConfig

    if kind not in KINDS:
        raise ValueError(f"unknown model kind {kind!r}; expected one of {KINDS}")
    cls = FlexMDMSamplerConfig if kind == "flexmdm" else MDMSamplerConfig
    known = {f.name for f in fields(cls)}
    chosen = {k: v for k, v in overrides.items() if v is not None and k in known}
    if kind == "flexmdm":
        return FlexMDMSampler(model, FlexMDMSamplerConfig.from_model(model, **chosen), tokenizer)
    if "gen_length" in chosen:
        chosen.setdefault("block_length", chosen["gen_length"])
    return MDMSampler(model, MDMSamplerConfig(**chosen), tokenizer)
