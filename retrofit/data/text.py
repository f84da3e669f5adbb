"""`text` format: one sample per document (unconditional FlexMDM transfer, tiny-base pretraining).

Each document is tokenized without special tokens (docs/method.md §1.6: "no special tokens") and becomes
one sample of its true length: documents are never packed together, because FlexMDM learns the
length distribution from them (docs/method.md §5.1). A document longer than ``max_length`` is handled by
``overflow``:

* ``"split"`` (default): consecutive chunks of ``max_length`` tokens, the last one shorter (what
  the reference's delimiter splitter amounts to on LLaDA tokens, docs/method.md §5.1);
* ``"truncate"``: its first ``max_length`` tokens (counted in ``DataReport.truncated``);
* ``"skip"``: dropped (counted as ``too_long``).

Empty documents are skipped (``empty``). Nothing is protected (``prompt_length = 0``).
"""

from __future__ import annotations

from typing import Any

from retrofit.data.report import Candidates

__all__ = ["OVERFLOW_MODES", "chunk_ids", "text_candidates"]

OVERFLOW_MODES = ("split", "truncate", "skip")


def chunk_ids(ids: list[int], max_length: int, overflow: str) -> tuple[list[list[int]], str]:
    """Cut one tokenized document to samples of at most ``max_length`` tokens.

    Args:
        ids: the document's token ids.
        max_length: maximum sample length (>= 1).
        overflow: "split", "truncate" or "skip" (see the module docstring).

    Returns:
        (samples, skip_reason): ``samples`` is empty iff ``skip_reason`` is "empty" or "too_long".

    Raises:
        ValueError: unknown overflow mode or max_length < 1.
    """
    if overflow not in OVERFLOW_MODES:
        raise ValueError(f"text overflow must be one of {OVERFLOW_MODES}, got {overflow!r}")
    if max_length < 1:
        raise ValueError(f"max_length must be >= 1, got {max_length}")
    if not ids:
        return [], "empty"
    if len(ids) <= max_length:
        return [ids], ""
    if overflow == "skip":
        return [], "too_long"
    if overflow == "truncate":
        return [ids[:max_length]], ""
    return [ids[i : i + max_length] for i in range(0, len(ids), max_length)], ""


def text_candidates(
    batch: dict[str, list[Any]],
    *,
    tokenizer: Any,
    max_length: int,
    overflow: str = "split",
    text_field: str = "text",
) -> dict[str, list]:
    """Batched ``datasets.map`` function: documents -> candidate samples (see `Candidates`).

    Args:
        batch: a batch of raw rows with a string column ``text_field``.
        tokenizer: Hugging Face tokenizer (called with ``add_special_tokens=False``).
        max_length: maximum sample length. overflow: see the module docstring.
        text_field: name of the document column.

    Returns:
        Candidate columns (`retrofit.data.report.candidate_features`).

    Raises:
        KeyError: ``text_field`` is not a column (the message lists the columns).
    """
    if text_field not in batch:
        raise KeyError(
            f"text format: column {text_field!r} not found; columns: {sorted(batch)} (set text_field)"
        )
    out = Candidates()
    texts = batch[text_field]
    good = [i for i, text in enumerate(texts) if isinstance(text, str)]
    encoded = tokenizer([texts[i] for i in good], add_special_tokens=False)["input_ids"] if good else []
    by_row = dict(zip(good, encoded))
    for i in range(len(texts)):
        if i not in by_row:
            out.add(skip="bad_row")
            continue
        chunks, reason = chunk_ids(by_row[i], max_length, overflow)
        if reason:
            out.add(by_row[i], skip=reason)
        for k, chunk in enumerate(chunks):
            truncated = overflow == "truncate" and len(by_row[i]) > max_length
            out.add(chunk, truncated=truncated, split_extra=k > 0)
    return out.columns
