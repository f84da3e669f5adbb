"""Read the trained tensors (LoRA factors + `modules_to_save` graft modules) of a training checkpoint.

Three sources, one result (`TrainedWeights`, names relative to the un-wrapped model, e.g.
`backbone.model.transformer.blocks.0.q_proj` / `time_mlp.0.weight`):

- `adapter_model.safetensors` (peft `save_pretrained`, keys `base_model.model.<module>.lora_A.weight`
  and `base_model.model.<module>.<param>` for modules_to_save): loaded without question once its
  sha256 matches the checkpoint manifest.
- `adapter_model.bin` (pickle): only with `trust=True`.
- DeepSpeed ZeRO-2/3 shards (`global_step*/`, pickle): consolidated with DeepSpeed's own
  `get_fp32_state_dict_from_zero_checkpoint` (lazily imported), only with `trust=True`. Keys carry
  the live peft names (`...lora_A.default.weight`, `...modules_to_save.default.<param>`).

LoRA scaling follows peft (docs/method.md §2.8): alpha / r, or alpha / sqrt(r) with rsLoRA, with
`rank_pattern` / `alpha_pattern` resolved per module like peft's `get_pattern_key`.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from retrofit.training.checkpoint import CheckpointError, verify_files

PEFT_PREFIX = "base_model.model."
TRUST_HINT = (
    "it needs pickle (torch.load), which can run arbitrary code; pass --trust-checkpoint "
    "(trust=True) only if you trust where this checkpoint came from"
)
_LORA_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<ab>[AB])(?:\.(?P<adapter>[^.]+))?\.weight$")
_UNSUPPORTED_LORA = ("lora_embedding_", "lora_magnitude_vector", ".lora_bias", "lora_E")
# adapter_config.json fields whose non-default values export cannot merge.
_UNSUPPORTED_CONFIG = {
    "use_dora": (False, None),
    "fan_in_fan_out": (False, None),
    "lora_bias": (False, None),
    "layer_replication": (None,),
    "target_parameters": (None, []),
    "trainable_token_indices": (None,),
}


@dataclass
class LoraDelta:
    """One LoRA-adapted Linear: delta W = scaling * B @ A (docs/method.md §2.8).

    Attributes:
        A: [r, in_features] lora_A weight (any float dtype, as stored).
        B: [out_features, r] lora_B weight.
        scaling: lora_alpha / r (or / sqrt(r) with rsLoRA).
    """

    A: torch.Tensor
    B: torch.Tensor
    scaling: float


@dataclass
class TrainedWeights:
    """Trained tensors of a checkpoint, keyed by un-wrapped model names.

    Attributes:
        lora: {module name: LoraDelta}, e.g. "backbone.model.transformer.blocks.0.q_proj".
        full: {parameter name: tensor} of modules_to_save, e.g. "time_mlp.0.weight".
        source: human-readable origin (file or ZeRO tag), for reports.
        adapter_config: the peft adapter config dict used for scaling.
    """

    lora: dict[str, LoraDelta] = field(default_factory=dict)
    full: dict[str, torch.Tensor] = field(default_factory=dict)
    source: str = ""
    adapter_config: dict = field(default_factory=dict)


def load_adapter_config(ckpt: Path, manifest: dict) -> dict:
    """adapter_config.json of the checkpoint (JSON, safe), or the manifest's `lora` dict.

    Raises:
        CheckpointError: neither exists, the peft type is not LORA, or an option that cannot be
            merged into plain weights is set (DoRA, fan_in_fan_out, LoRA bias, ...).
    """
    path = ckpt / "adapter_config.json"
    if path.is_file():
        config = json.loads(path.read_text(encoding="utf-8"))
    elif manifest.get("lora"):
        config, path = dict(manifest["lora"]), ckpt / "retrofit_checkpoint.json"
    elif (ckpt / "model.safetensors").is_file() or (ckpt / "model.safetensors.index.json").is_file():
        raise CheckpointError(
            f"{path}: not found: {ckpt} is a full-parameter checkpoint (no LoRA to merge); its config.json "
            "and model*.safetensors already form a model folder that loads with AutoModel.from_pretrained"
        )
    else:
        raise CheckpointError(f"{path}: not found, and the manifest has no 'lora' settings")
    if config.get("peft_type", "LORA") != "LORA":
        raise CheckpointError(f"{path}: peft_type={config['peft_type']!r}; export merges LoRA adapters only")
    for key, allowed in _UNSUPPORTED_CONFIG.items():
        if config.get(key, allowed[0]) not in allowed:
            raise CheckpointError(f"{path}: {key}={config[key]!r} cannot be merged by retrofit export")
    return config


def lora_scaling(config: dict, module: str, rank: int) -> float:
    """peft's scaling for `module`: alpha / r, or alpha / sqrt(r) with use_rslora (docs/method.md §2.8)."""
    alpha = config.get("lora_alpha", 8)
    for pattern, value in (config.get("alpha_pattern") or {}).items():
        if re.match(rf"(.*\.)?({pattern})$", module):
            alpha = value
            break
    return alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank


def _under_any(param: str, modules: list[str]) -> bool:
    """True if some dotted prefix of `param` equals or ends with one of `modules` (peft's rule)."""
    parts = param.split(".")
    prefixes = [".".join(parts[:i]) for i in range(1, len(parts))]
    return any(p == m or p.endswith("." + m) for p in prefixes for m in modules)


def split_peft_state(
    state: dict[str, torch.Tensor], config: dict, origin: str, *, live_names: bool
) -> TrainedWeights:
    """Sort peft-named tensors into LoRA pairs and modules_to_save parameters.

    Args:
        state: {name: tensor} with peft names (saved-adapter form, or live module names when
            `live_names`, as in a ZeRO consolidation, which also holds frozen base weights).
        config: adapter config dict (for scaling and modules_to_save).
        origin: file / tag named in errors.
        live_names: keys are live module names (`.lora_A.<adapter>.weight`,
            `.modules_to_save.<adapter>.`); frozen tensors are then skipped.

    Raises:
        CheckpointError: unsupported LoRA tensors, an A without its B, or (saved form) a tensor
            that is neither LoRA nor under a modules_to_save entry.
    """
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    full: dict[str, torch.Tensor] = {}
    to_save = list(config.get("modules_to_save") or [])
    for key, tensor in state.items():
        tensor = tensor.detach()
        name = key[len(PEFT_PREFIX) :] if key.startswith(PEFT_PREFIX) else key
        if any(tag in name for tag in _UNSUPPORTED_LORA):
            raise CheckpointError(f"{origin}: tensor {key!r} is a LoRA variant export cannot merge")
        match = _LORA_KEY.match(name)
        if match:
            pairs.setdefault(match["module"], {})[match["ab"]] = tensor
        elif live_names:
            wrapped = re.sub(r"\.modules_to_save\.[^.]+\.", ".", name)
            if wrapped != name:
                full[wrapped] = tensor
        elif _under_any(name, to_save):
            full[name] = tensor
        else:
            raise CheckpointError(
                f"{origin}: tensor {key!r} is neither LoRA nor under modules_to_save {to_save}"
            )
    lora = {}
    for module, ab in pairs.items():
        if set(ab) != {"A", "B"}:
            raise CheckpointError(f"{origin}: module {module!r} has lora_{'A' if 'A' in ab else 'B'} only")
        rank = ab["A"].shape[0]
        if ab["A"].dim() != 2 or ab["B"].dim() != 2 or ab["B"].shape[1] != rank or rank == 0:
            raise CheckpointError(
                f"{origin}: LoRA shapes of {module!r} are A{list(ab['A'].shape)} B{list(ab['B'].shape)}; "
                "expected A [r, in] and B [out, r] with r > 0 (a ZeRO-3 adapter saved without gathering? "
                "then export from the shards: --source zero --trust-checkpoint)"
            )
        lora[module] = LoraDelta(ab["A"], ab["B"], lora_scaling(config, module, rank))
    return TrainedWeights(lora=lora, full=full, source=origin, adapter_config=config)


def _zero_tag(ckpt: Path) -> str | None:
    """The ZeRO tag to consolidate: the `latest` file's content, else the only global_step* dir."""
    latest = ckpt / "latest"
    if latest.is_file():
        return latest.read_text().strip()
    tags = sorted(p.name for p in ckpt.glob("global_step*") if p.is_dir())
    if len(tags) > 1:
        raise CheckpointError(f"{ckpt}: several ZeRO folders {tags} and no 'latest' file; keep one")
    return tags[0] if tags else None


def _files_to_verify(files: dict[str, dict], source: str, tag: str | None) -> dict[str, dict]:
    """The manifest entries of the files `source` reads (so only those are hashed)."""
    names = {"adapter_config.json"} | (
        {"adapter_model.safetensors", "adapter_model.bin"} if source == "adapter" else {"latest"}
    )
    return {
        rel: info
        for rel, info in files.items()
        if rel in names or (source == "zero" and rel.startswith(f"{tag}/"))
    }


def _load_zero(ckpt: Path, tag: str, config: dict) -> TrainedWeights:
    """Consolidate ZeRO shards with DeepSpeed's own utility (fp32, trainable tensors only)."""
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    try:
        state = get_fp32_state_dict_from_zero_checkpoint(str(ckpt), tag=tag, exclude_frozen_parameters=True)
    except Exception as err:  # DeepSpeed raises ValueError / FileNotFoundError / pickle errors
        raise CheckpointError(
            f"{ckpt / tag}: DeepSpeed could not consolidate the ZeRO shards: {err}"
        ) from err
    return split_peft_state(state, config, f"{ckpt / tag} (ZeRO)", live_names=True)


def load_trained_weights(
    ckpt: Path, manifest: dict, *, source: str = "auto", trust: bool = False
) -> TrainedWeights:
    """Read the trained tensors of a verified training checkpoint.

    Args:
        ckpt: checkpoint folder (its manifest already read).
        manifest: the `retrofit_checkpoint.json` dict (its `files` table is used to verify
            every file read here before reading it).
        source: "auto" (adapter_model.safetensors, else ZeRO shards, else adapter_model.bin),
            "adapter" or "zero".
        trust: allow formats that need pickle (ZeRO shards, .bin adapters).

    Raises:
        CheckpointError: nothing to read, a file fails the manifest check, a pickle format
            without `trust` (the message says to pass --trust-checkpoint), or bad tensors.
    """
    config = load_adapter_config(ckpt, manifest)
    safe, binary, tag = ckpt / "adapter_model.safetensors", ckpt / "adapter_model.bin", _zero_tag(ckpt)
    files = manifest.get("files", {})
    if source == "auto":  # safetensors adapter > ZeRO shards > pickled adapter
        present = {p.name for p in (safe, binary) if p.is_file() or p.name in files}
        source = "adapter" if safe.name in present else "zero" if tag else "adapter" if present else ""
    if source == "zero" and tag is None:
        raise CheckpointError(f"{ckpt}: no global_step*/ ZeRO folder to consolidate")
    if source not in ("adapter", "zero"):
        raise CheckpointError(
            f"{ckpt}: no adapter_model.safetensors, adapter_model.bin or global_step*/ ZeRO folder; "
            "is this a training checkpoint folder (checkpoint-<step>)?"
        )
    problems = verify_files(ckpt, _files_to_verify(files, source, tag))
    if source == "adapter" and not safe.is_file() and not binary.is_file():
        problems.append(f"{safe}: missing")
    if problems:
        raise CheckpointError("checkpoint failed verification:\n  " + "\n  ".join(problems))
    if source == "zero":
        if not trust:
            raise CheckpointError(f"{ckpt / tag}: reading DeepSpeed ZeRO shards: {TRUST_HINT}")
        return _load_zero(ckpt, tag, config)
    if safe.is_file():
        if safe.name not in files:
            raise CheckpointError(f"{safe}: not listed in the checkpoint manifest; cannot verify it")
        return split_peft_state(_load_safetensors(safe), config, str(safe), live_names=False)
    if not trust:
        raise CheckpointError(f"{binary}: a pickled adapter: {TRUST_HINT}")
    state = torch.load(binary, map_location="cpu", weights_only=True)
    return split_peft_state(state, config, str(binary), live_names=False)


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of a (header-checked) safetensors file, with the file named in errors."""
    from safetensors.torch import load_file

    from retrofit.io_utils import read_safetensors_header

    try:
        read_safetensors_header(path)
        return load_file(path)
    except Exception as err:
        raise CheckpointError(f"{path}: unreadable safetensors file ({err})") from err
