"""The prompt template a model was trained with, applied when it generates (issue #16 item 6).

Training formats prompts one of two ways (the sft data spec's `template`): "gsm8k" runs them
through the tokenizer's chat template, "plain" uses the raw text. `retrofit export` records the
outcome as ``"prompt_template": "chat" | "plain"`` in generation_config.json. `generate`, `infill`,
`eval` and the lm-eval models read it back here, so a model trained on plain text is not prompted
with the chat template (and the other way round) unless the user asks (`--prompt-template`).

"plain" switches the loaded tokenizer's chat template off (``tokenizer.chat_template = None``):
every prompt builder (`gsm8k_format.build_prompt`, the few-shot prompt, `generate`) then takes
its plain-text layout, exactly as the training data builder did for such a model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["PROMPT_TEMPLATES", "apply_prompt_template", "recorded_prompt_template"]

PROMPT_TEMPLATES = ("auto", "chat", "plain")
"""`--prompt-template` choices; "auto" = the recorded template, else chat when the tokenizer has one."""


def recorded_prompt_template(model_dir: str | Path) -> str | None:
    """The template recorded at export ("chat" / "plain"), or None (none recorded, or unreadable).

    Args:
        model_dir: a model folder; its generation_config.json is read (nothing else).
    """
    try:
        value = json.loads((Path(model_dir) / "generation_config.json").read_text()).get("prompt_template")
    except (OSError, ValueError, AttributeError):
        return None
    return value if value in ("chat", "plain") else None


def apply_prompt_template(tokenizer: Any, model_dir: str | Path, choice: str = "auto") -> str:
    """Set up `tokenizer` for the prompt template to use and return it ("chat" or "plain").

    Args:
        tokenizer: the model's Hugging Face tokenizer; with "plain" its `chat_template` is set to
            None (in place).
        model_dir: the model folder (for the recorded template).
        choice: "auto" (recorded template; else "chat" when the tokenizer has a chat template,
            else "plain"), "chat" or "plain".

    Raises:
        ValueError: an unknown choice, or "chat" (asked or recorded) with a tokenizer that has no
            chat template; the message names the folder and the fix.
    """
    if choice not in PROMPT_TEMPLATES:
        raise ValueError(f"--prompt-template {choice!r}: choose one of {', '.join(PROMPT_TEMPLATES)}")
    has_chat = bool(getattr(tokenizer, "chat_template", None))
    template = choice
    if choice == "auto":
        template = recorded_prompt_template(model_dir) or ("chat" if has_chat else "plain")
    if template == "chat" and not has_chat:
        raise ValueError(
            f"{model_dir}: prompt template 'chat' ({'asked' if choice == 'chat' else 'recorded at export'}) "
            "but the tokenizer has no chat template; use --prompt-template plain, or copy the base "
            "model's tokenizer_config.json (with its chat_template) into the folder"
        )
    if template == "plain":
        tokenizer.chat_template = None
    return template
