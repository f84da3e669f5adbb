"""generation_config.json of an export: special ids, sampler defaults, the training prompt template.

`prompt_template` records how prompts were formatted in training ("chat": the tokenizer's chat
template, as the sft template "gsm8k" does; "plain": raw text; null: unknown or mixed), read from
the checkpoint manifest's recipe (`data.train`). `retrofit.evaluation.prompt_template` applies it
in generate / infill / eval.

Usage:
    >>> prompt_template_of([{"format": "sft", "source": "gsm8k"}])
    'chat'
    >>> generation_defaults(config, "flexmdm", prompt_template="plain")["prompt_template"]
    'plain'
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

# sft data template (retrofit.data.sft.SFT_TEMPLATES) -> how prompts are formatted at inference
PROMPT_TEMPLATE_OF_SFT = {"gsm8k": "chat", "plain": "plain"}


def train_specs(manifest: dict) -> Any:
    """The recipe's `data.train` list from a checkpoint manifest (None when not recorded)."""
    data = (manifest.get("recipe") or {}).get("data")
    return data.get("train") if isinstance(data, dict) else None


def prompt_template_of(data_specs: Any) -> str | None:
    """How prompts were formatted in training: "chat", "plain", or None (unknown or mixed).

    Args:
        data_specs: the recipe's `data.train` list of data-spec dicts (`retrofit.data.builder`).
            Only `format: sft` specs have prompts; their `template` defaults to "gsm8k" for
            source gsm8k, else "plain" (as `retrofit.data.builder` resolves it).

    Returns:
        "chat" when every sft spec used template "gsm8k" (the tokenizer's chat template is
        applied to prompts), "plain" when every one used "plain" (raw text), None when there is
        no sft spec, the specs mix templates, or an entry is not a spec dict.
    """
    if not isinstance(data_specs, list) or not all(isinstance(s, dict) for s in data_specs):
        return None
    found = {PROMPT_TEMPLATE_OF_SFT.get(_sft_template(s)) for s in data_specs if s.get("format") == "sft"}
    return found.pop() if len(found) == 1 else None


def _sft_template(spec: dict) -> str:
    """The sft template `retrofit.data.builder` applies to a data spec."""
    return spec.get("template", "gsm8k" if spec.get("source") == "gsm8k" else "plain")


def generation_defaults(config: Any, kind: str, prompt_template: str | None = None) -> dict[str, Any]:
    """generation_config.json: special ids, the sampler defaults and the prompt template.

    For FlexMDM: every `FlexMDMSamplerConfig` field as the sampler will resolve it from this
    config (`sampler_defaults` over the sampler's defaults) plus the training schedules.
    `prompt_template` ("chat" / "plain" / None, from `prompt_template_of`) is stored as is;
    `retrofit.evaluation.prompt_template` reads it in generate / infill / eval.
    """
    ids = dict(getattr(config, "backbone", None) or {})  # FlexMDM keeps eos / bos in the backbone config
    ids.update({k: v for k, v in config.to_dict().items() if v is not None})
    out = {k: ids.get(k) for k in ("mask_token_id", "pad_token_id", "eos_token_id", "bos_token_id")}
    if kind == "flexmdm":
        from types import SimpleNamespace

        from retrofit.sampling.flexmdm_config import FlexMDMSamplerConfig

        sampler = FlexMDMSamplerConfig.from_model(SimpleNamespace(config=config))
        out["sampler"] = {"name": "flexmdm", **json.loads(json.dumps(dataclasses.asdict(sampler)))}
        out["insertion_schedule"] = config.insertion_schedule
        out["unmasking_schedule"] = config.unmasking_schedule
    else:
        out["sampler"] = {"name": "mdm"}
    out["prompt_template"] = prompt_template
    return out
