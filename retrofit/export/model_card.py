"""README.md model card of an exported checkpoint: what it is, how to load it, how it was made.

Everything comes from files retrofit wrote (the checkpoint manifest's recipe, the Trainer's
`trainer_state.json`, the export report); nothing is invented when a fact is unknown.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

_LOAD_SNIPPETS = {
    "flexmdm": (
        "import retrofit.models  # registers model_type 'flexmdm'\n"
        "from transformers import AutoModel\n"
        "from retrofit.sampling import FlexMDMSampler, FlexMDMSamplerConfig\n\n"
        'model = AutoModel.from_pretrained("PATH", dtype="auto")\n'
        "sampler = FlexMDMSampler(model, FlexMDMSamplerConfig.from_model(model))"
    ),
    "llada": (
        "import retrofit.models  # registers model_type 'llada'\n"
        "from transformers import AutoModel\n\n"
        'model = AutoModel.from_pretrained("PATH", dtype="auto")'
    ),
}


def training_metrics(checkpoint_dir: str | Path) -> dict[str, Any]:
    """Last logged training loss and eval metrics from the Trainer's `trainer_state.json` (JSON).

    Returns:
        {"global_step": int, "loss": float, "eval_*": float, ...}; {} when the file is absent
        or unreadable.
    """
    path = Path(checkpoint_dir) / "trainer_state.json"
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    metrics: dict[str, Any] = {"global_step": state.get("global_step")}
    for entry in state.get("log_history", []):
        for key, value in entry.items():
            if isinstance(value, (int, float)) and (
                key == "loss" or key.startswith("eval_") or key.endswith("_loss")
            ):
                metrics[key] = value
    return {k: v for k, v in metrics.items() if v is not None}


def render_model_card(
    *, manifest: dict, report: Any, source: dict, metrics: dict, tokenizer: list[str]
) -> str:
    """Markdown model card (with Hub-style YAML front matter).

    Args:
        manifest: the training checkpoint manifest (base model, recipe, LoRA settings, step).
        report: the `ExportReport` (kind, dtype, params, shards, verification numbers).
        source: {"checkpoint", "step", "weights_from", ...} provenance.
        metrics: from `training_metrics` ({} if unknown).
        tokenizer: names of the tokenizer files copied from the base.

    Returns:
        The README.md text.
    """
    recipe = manifest.get("recipe") or {}
    base = manifest.get("base_model", {}).get("path", "unknown")
    kind = report.kind
    title = "FlexMDM (variable-length masked diffusion)" if kind == "flexmdm" else "LLaDA (masked diffusion)"
    lines = [
        "---",
        "library_name: transformers",
        f"base_model: {json.dumps(str(base))}",
        f"tags: [retrofit, masked-diffusion, {kind}]",
        "---",
        "",
        f"# {title}, exported by retrofit",
        "",
        f"Merged from training checkpoint `{source.get('checkpoint')}` (step {source.get('step')}) on top of "
        f"`{base}`; trained model kind: {manifest.get('kind')}. LoRA factors were merged in fp32 "
        f"(W + (alpha/r) B A) and written as {report.dtype} safetensors ({report.n_params:,} parameters, "
        f"{len(report.shards)} shard(s)).",
        "",
        "## Load",
        "",
        "```python",
        _LOAD_SNIPPETS[kind],
        "```",
        "",
        *_remote_code_note(report),
        "## Training",
        "",
        f"- LoRA: {json.dumps(_lora_summary(manifest.get('lora') or {}))}",
        f"- Data: {json.dumps(recipe.get('data', 'not recorded'), default=str)}",
        f"- Metrics (last logged): {json.dumps(metrics) if metrics else 'not recorded'}",
        "",
        "<details><summary>Recipe</summary>",
        "",
        "```json",
        json.dumps(recipe, indent=2, default=str),
        "```",
        "</details>",
        "",
        "## Export verification",
        "",
        f"Mode: {report.mode}. Relative-ish errors max|a-b| / max(1, max|ref|) and tolerances:",
        "",
        "| check | error | tolerance |",
        "|---|---|---|",
        *(f"| {k} | {v:.3g} | {report.tolerance.get(k, '-')} |" for k, v in report.errors.items()),
        "",
        f"Tokenizer files: {', '.join(tokenizer) if tokenizer else 'none found in the base folder'}.",
        "Every file's sha256 is in `retrofit_manifest.json`; check with `retrofit inspect`.",
        "",
    ]
    return "\n".join(lines)


def _remote_code_note(report: Any) -> list[str]:
    """Card lines on loading a LLaDA export without retrofit (its modeling code / auto_map)."""
    files = getattr(report, "modeling_code", None)
    if files:
        return [
            f"Without retrofit: the folder ships the base's modeling code ({', '.join(files)}, copied "
            f"from `{report.modeling_code_from}`), named by config.json `auto_map`, so "
            '`AutoModel.from_pretrained("PATH", trust_remote_code=True)` runs that code offline. '
            "After `import retrofit.models` on transformers 5.x the same call returns retrofit's "
            "native `LLaDAModelLM` instead (registered classes take precedence over `auto_map`).",
            "",
        ]
    if getattr(report, "auto_map_dropped", False):
        return [
            "config.json has no `auto_map`: the base's `auto_map` named modeling files (e.g. "
            "modeling_llada.py) that neither the base folder nor the folder it was grafted from "
            "holds, so none are shipped. Load it with retrofit as above (`import retrofit.models` "
            "registers model_type 'llada'; `trust_remote_code` is not needed), or copy the official "
            "configuration_llada.py / modeling_llada.py into the folder and add their `auto_map`.",
            "",
        ]
    return []


def _lora_summary(lora: dict) -> dict:
    keys = ("r", "lora_alpha", "lora_dropout", "target_modules", "modules_to_save", "use_rslora")
    return {k: lora[k] for k in keys if k in lora}
