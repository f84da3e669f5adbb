"""The models behind an export: names/shapes on the meta device, the unmerged peft reference
and the in-memory fp32 merged model (used by `retrofit.export.pipeline` for probe-batch checks).

The reference is built exactly as training built it (LLaDA loaded by `load_llada`, grafted by
`FlexMDMModel.from_llada` with the checkpoint's config, wrapped by peft) and filled by peft's own
`set_peft_model_state_dict`, so it does not share the name mapping or scaling code of the merge.
"""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from retrofit.export.merge import iter_merged
from retrofit.export.sources import TrainedWeights
from retrofit.export.verify import model_outputs
from retrofit.training.checkpoint import MANIFEST_NAME, CheckpointError
from retrofit.training.lora import quiet_peft_rename_warning


class ExportError(RuntimeError):
    """The merged model disagrees with the trained one beyond tolerance; nothing was written."""


@dataclass
class ModelSpec:
    """What is being exported: the trained model's config and how names map.

    Attributes:
        kind: "flexmdm" or "llada" (the trained model).
        out_kind: kind of the written folder ("llada" with --to-llada).
        config: config object of the trained model.
        out_config: config object written to config.json.
        base_type: model_type of the base folder ("llada" or "flexmdm").
        expected: {model key: shape} of the trained model (built on the meta device).
    """

    kind: str
    out_kind: str
    config: Any
    out_config: Any
    base_type: str
    expected: dict[str, tuple[int, ...]]

    def base_prefix(self) -> str:
        """Prefix turning base tensor names into model names ("backbone." for LLaDA -> FlexMDM)."""
        return "backbone." if self.kind == "flexmdm" and self.base_type == "llada" else ""

    def out_name(self, key: str) -> str | None:
        """Exported name of a model key (None = not exported: graft modules under --to-llada)."""
        if self.kind == self.out_kind:
            return key
        return key.removeprefix("backbone.") if key.startswith("backbone.") else None


def model_classes(kind: str) -> tuple[type, type]:
    """(config class, model class) of a kind; importing them registers the Auto classes."""
    import retrofit.models  # noqa: F401  (registers the Auto classes)
    from retrofit.models import FlexMDMConfig, FlexMDMModel, LLaDAConfig, LLaDAModelLM

    return (FlexMDMConfig, FlexMDMModel) if kind == "flexmdm" else (LLaDAConfig, LLaDAModelLM)


def meta_model(kind: str, config: Any) -> torch.nn.Module:
    """The model of `kind` built on the meta device (names and shapes only, no memory)."""
    with torch.device("meta"):
        return model_classes(kind)[1](config)


def model_spec(manifest: dict, base: Path, to_llada: bool) -> ModelSpec:
    """Build the ModelSpec of a checkpoint from its manifest and its base folder's config.json.

    Raises:
        CheckpointError: unknown kind, a base of another model type, or an invalid model_config.
    """
    kind = manifest.get("kind")
    if kind not in ("flexmdm", "llada"):
        raise CheckpointError(f"{MANIFEST_NAME}: kind={kind!r}; export handles 'flexmdm' and 'llada'")
    base_type = json.loads((base / "config.json").read_text(encoding="utf-8")).get("model_type")
    allowed = ("llada", "flexmdm") if kind == "flexmdm" else ("llada",)
    if base_type not in allowed:
        raise CheckpointError(
            f"{base / 'config.json'}: model_type={base_type!r}; a {kind} checkpoint needs a base of type {allowed}"
        )
    config_cls = model_classes(kind)[0]
    model_config = dict(manifest.get("model_config") or {})
    if model_config.get("model_type", kind) != kind:
        raise CheckpointError(
            f"{MANIFEST_NAME}: model_config.model_type={model_config['model_type']!r} != kind {kind!r}"
        )
    try:
        config = config_cls.from_dict(model_config)
    except (TypeError, ValueError) as err:
        raise CheckpointError(
            f"{MANIFEST_NAME}: model_config is invalid for {config_cls.__name__}: {err}"
        ) from err
    out_kind = "llada" if to_llada else kind
    out_config = (
        config.backbone_config if kind == "flexmdm" and to_llada else config_cls.from_dict(model_config)
    )
    expected = {k: tuple(v.shape) for k, v in meta_model(kind, config).state_dict().items()}
    return ModelSpec(kind, out_kind, config, out_config, base_type, expected)


def _graft_kwargs(config: Any) -> dict[str, Any]:
    """FlexMDMConfig constructor fields of `config` (everything but the backbone)."""
    names = inspect.signature(type(config).__init__).parameters
    return {
        n: getattr(config, n) for n in names if n not in ("self", "backbone", "kwargs") and hasattr(config, n)
    }


def reference_model(spec: ModelSpec, base: Path, trained: TrainedWeights) -> torch.nn.Module:
    """The unmerged trained model in fp32: base loaded as in training, wrapped by peft, adapter
    tensors loaded by peft's own `set_peft_model_state_dict` (an independent path from the merge).

    Returns:
        The un-wrapped model (`peft_model.get_base_model()`, LoRA layers live), eval mode.

    Raises:
        ExportError: peft reports adapter tensors it could not place, or LoRA / modules_to_save
            tensors the checkpoint does not provide.
    """
    from peft import LoraConfig, get_peft_model, set_peft_model_state_dict

    from retrofit.models.loading import load_llada

    if spec.kind == "llada":
        model = load_llada(base, torch.float32)
    elif spec.base_type == "llada":
        model = model_classes("flexmdm")[1].from_llada(
            load_llada(base, torch.float32), **_graft_kwargs(spec.config)
        )
    else:
        model = model_classes("flexmdm")[1].from_pretrained(str(base), dtype=torch.float32)
    fields_ = inspect.signature(LoraConfig).parameters
    lora_config = LoraConfig(
        **{
            k: v
            for k, v in trained.adapter_config.items()
            if k in fields_ and k not in ("task_type", "base_model_name_or_path")
        }
    )
    with quiet_peft_rename_warning():
        peft_model = get_peft_model(model.float(), lora_config)
    state = {
        f"base_model.model.{m}.lora_{ab}.weight": getattr(d, ab)
        for m, d in trained.lora.items()
        for ab in "AB"
    }
    state.update({f"base_model.model.{k}": v for k, v in trained.full.items()})
    result = set_peft_model_state_dict(peft_model, state)
    unfilled = [k for k in result.missing_keys if ".lora_" in k or ".modules_to_save." in k]
    if result.unexpected_keys or unfilled:
        raise ExportError(
            f"peft could not place adapter tensors {sorted(result.unexpected_keys)[:5]} "
            f"or left trainable tensors unset {sorted(unfilled)[:5]}"
        )
    return peft_model.get_base_model().eval()


def merged_model(spec: ModelSpec, plan: list) -> torch.nn.Module:
    """The fp32 merged model held in memory (pre-write check), built on meta and assigned."""
    model = meta_model(spec.out_kind, spec.out_config)
    state = {item.out_key: tensor.float() for item, tensor in iter_merged(plan)}
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval()


def probe_outputs(model: torch.nn.Module, spec: ModelSpec, batch: dict, *, reference: bool) -> dict:
    """Probe outputs; for --to-llada the reference runs the (LoRA-live) backbone alone."""
    if reference and spec.kind != spec.out_kind:
        model = model.backbone
    return model_outputs(model, spec.out_kind, batch)
