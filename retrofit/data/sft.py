"""`sft` format: prompt/response pairs with the prompt protected (docs/method.md §1.5, §1.6, §5.2).

The prompt and the response are tokenized **separately** (``add_special_tokens=False``; a chat
template writes its own BOS, as in LLaDA's generate.py) and their ids concatenated, so the
protected prefix has exactly P = len(prompt ids) tokens and samplers that tokenize the same
prompt with :func:`encode_prompt` see the identical ids. No EOS is appended: FlexMDM learns length
from insertions (docs/method.md §1.6); the LLaDA baseline gets its pad/EOS tail from `MDMCollator`.

Templates: ``"gsm8k"`` turns a GSM8K row into ``build_prompt(question, tokenizer)`` /
``build_target(answer)`` (`retrofit.data.gsm8k_format`, the one format shared with sampling and
evaluation); ``"plain"`` uses the two fields verbatim.

Anchors (``anchor_field``): a column of response-token indices whose tokens are given rather
than generated (a maze path's start, subgoals and goal). They become the sample's ``anchors``
(positions P + i) and stay clean and present in every x_t, like the prompt, so the model learns to
fill the spans between them (`FlexMDMSampler.infill` / `MDMSampler.infill` with ``middles``).

Skips (counted in the `DataReport`): ``no_room`` (P >= max_length), ``too_long``
(P + R > max_length), ``empty`` (no response tokens), ``bad_row`` (missing / non-string field,
a GSM8K answer without ``####``, or an anchor index that is not a response-token index).
"""

from __future__ import annotations

from typing import Any

from retrofit.data.gsm8k_format import build_prompt, build_target
from retrofit.data.report import Candidates

__all__ = ["SFT_TEMPLATES", "encode_prompt", "encode_prompt_response", "format_pair", "sft_candidates"]

SFT_TEMPLATES = ("gsm8k", "plain")


def encode_prompt(tokenizer: Any, prompt: str) -> list[int]:
    """Token ids of a prompt exactly as in training: ``tokenizer(prompt, add_special_tokens=False)``."""
    return list(tokenizer(prompt, add_special_tokens=False)["input_ids"])


def encode_prompt_response(tokenizer: Any, prompt: str, response: str) -> tuple[list[int], int]:
    """(prompt ids + response ids, P = number of prompt ids); each part tokenized on its own."""
    prompt_ids = encode_prompt(tokenizer, prompt)
    return prompt_ids + list(tokenizer(response, add_special_tokens=False)["input_ids"]), len(prompt_ids)


def format_pair(prompt: Any, response: Any, template: str, tokenizer: Any = None) -> tuple[str, str] | None:
    """Prompt and response text of one row, or None if the row is unusable.

    Args:
        prompt, response: the row's two fields (GSM8K: question, answer).
        template: "gsm8k" or "plain" (see the module docstring).
        tokenizer: passed to `build_prompt` (chat template) for "gsm8k".

    Raises:
        ValueError: unknown template.
    """
    if template not in SFT_TEMPLATES:
        raise ValueError(f"sft template must be one of {SFT_TEMPLATES}, got {template!r}")
    if not isinstance(prompt, str) or not isinstance(response, str):
        return None
    if template == "plain":
        return prompt, response
    try:
        return build_prompt(prompt, tokenizer), build_target(response)
    except ValueError:  # a GSM8K answer without '####'
        return None


def sft_candidates(
    batch: dict[str, list[Any]],
    *,
    tokenizer: Any,
    max_length: int,
    prompt_field: str = "prompt",
    response_field: str = "response",
    template: str = "plain",
    anchor_field: str | None = None,
) -> dict[str, list]:
    """Batched ``datasets.map`` function: rows -> candidate samples (see `Candidates`).

    Args:
        batch: raw rows (column -> values). tokenizer, max_length: as in `build_dataset`.
        prompt_field, response_field: the two text columns. template: see the module docstring.
        anchor_field: optional column of response-token indices (list[int]) that are given.

    Returns:
        Candidate columns; kept samples have ``prompt_length`` = P and ``anchors`` = P + indices.

    Raises:
        KeyError: a field is not a column (the message lists the columns and the spec keys).
    """
    named = [("prompt_field", prompt_field), ("response_field", response_field)]
    for key, name in named + ([("anchor_field", anchor_field)] if anchor_field else []):
        if name not in batch:
            raise KeyError(f"sft format: column {name!r} not found; columns: {sorted(batch)} (set {key})")
    pairs = [
        format_pair(p, r, template, tokenizer) for p, r in zip(batch[prompt_field], batch[response_field])
    ]
    good = [i for i, pair in enumerate(pairs) if pair is not None]
    prompts = _encode([pairs[i][0] for i in good], tokenizer)
    responses = _encode([pairs[i][1] for i in good], tokenizer)
    encoded = {i: (p, r) for i, p, r in zip(good, prompts, responses)}
    out = Candidates()
    for i in range(len(pairs)):
        if i not in encoded:
            out.add(skip="bad_row")
            continue
        prompt_ids, response_ids = encoded[i]
        anchors = _anchors(batch[anchor_field][i], len(prompt_ids), len(response_ids)) if anchor_field else []
        reason = (
            _sft_skip_reason(len(prompt_ids), len(response_ids), max_length)
            if anchors is not None
            else "bad_row"
        )
        out.add(prompt_ids + response_ids, prompt_length=len(prompt_ids), anchors=anchors, skip=reason)
    return out.columns


def _anchors(indices: Any, prompt_len: int, response_len: int) -> list[int] | None:
    """Positions P + i of the anchor indices, or None if one is not a response-token index."""
    if not isinstance(indices, (list, tuple)) or not all(
        isinstance(i, int) and 0 <= i < response_len for i in indices
    ):
        return None
    return sorted(prompt_len + i for i in set(indices))


def _encode(texts: list[str], tokenizer: Any) -> list[list[int]]:
    return tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []


def _sft_skip_reason(prompt_len: int, response_len: int, max_length: int) -> str:
    if prompt_len >= max_length:
        return "no_room"
    if response_len == 0:
        return "empty"
    if prompt_len + response_len > max_length:
        return "too_long"
    return ""
