"""`infill` format: code (or text) samples whose prefix / middle / suffix split is drawn later.

A sample stores the clean ids x1 and the instruction length c (``infill_cutoff``); the collator
draws e and f with fresh uniforms at every batch (`retrofit.data.infill_format.draw_infill_split`,
docs/method.md §1.7), so every epoch sees new splits, deterministically in (seed, collator step). Keeping the
split out of the cached dataset is what makes that possible; the collator's canvas must be
``max_length + 2k`` (boundary format) or ``max_length + fim_overhead`` (LLaDA FIM baseline).

Two row layouts:

* instruction / answer pairs (``prompt_field`` + ``response_field``; opc-sft: instruction /
  output, HumanEval monitoring: prompt / solution): each field tokenized on its own, ids
  concatenated, c = len(instruction ids) (docs/method.md §1.7, "prefix_cutoff");
* plain documents (``text_field``; e.g. a folder of .py files): c = 0.

Overflow: ``"skip"`` (``too_long``; default for pairs) or ``"truncate"`` (the reference cuts at
1024) for both layouts; ``"split"`` (consecutive chunks, default for documents) for documents only.
Skips: ``empty``, ``too_long``, ``no_room`` (l < c + 3: no room for a middle and a suffix),
``bad_row``.
"""

from __future__ import annotations

from typing import Any

from retrofit.data.infill_format import min_infill_length
from retrofit.data.report import Candidates
from retrofit.data.text import OVERFLOW_MODES, chunk_ids

__all__ = ["infill_candidates"]


def infill_candidates(
    batch: dict[str, list[Any]],
    *,
    tokenizer: Any,
    max_length: int,
    prompt_field: str | None = None,
    response_field: str | None = None,
    text_field: str = "text",
    overflow: str | None = None,
) -> dict[str, list]:
    """Batched ``datasets.map`` function: rows -> candidate infilling samples (see `Candidates`).

    Args:
        batch: raw rows.
        tokenizer: Hugging Face tokenizer (segments tokenized with ``add_special_tokens=False``).
        max_length: maximum length of x1 (without boundary tokens).
        prompt_field, response_field: pair layout when both are given.
        text_field: document column of the plain layout.
        overflow: "skip", "truncate" or "split" (documents only); default "skip" for pairs,
            "split" for documents.

    Returns:
        Candidate columns with ``infill_cutoff`` = c and ``prompt_length`` = 0.

    Raises:
        KeyError: a field is not a column. ValueError: bad overflow for the layout.
    """
    pairs = prompt_field is not None and response_field is not None
    overflow = overflow or ("skip" if pairs else "split")
    if overflow not in OVERFLOW_MODES or (pairs and overflow == "split"):
        raise ValueError(f"infill overflow {overflow!r}: use 'skip' or 'truncate' (or 'split' for documents)")
    fields = (prompt_field, response_field) if pairs else (text_field,)
    for name in fields:
        if name not in batch:
            raise KeyError(f"infill format: column {name!r} not found; columns: {sorted(batch)}")
    out = Candidates()
    for instruction_ids, body_ids in _encode_rows(batch, fields, tokenizer):
        if body_ids is None:
            out.add(skip="bad_row")
            continue
        ids = instruction_ids + body_ids
        chunks, reason = chunk_ids(ids, max_length, overflow)
        if reason:
            out.add(ids, skip=reason)
        for k, chunk in enumerate(chunks):
            cutoff = len(instruction_ids) if k == 0 else 0
            too_short = len(chunk) < min_infill_length(cutoff)
            out.add(
                chunk,
                infill_cutoff=cutoff,
                skip="no_room" if too_short else "",
                truncated=overflow == "truncate" and len(ids) > max_length,
                split_extra=k > 0,
            )
    return out.columns


def _encode_rows(batch: dict[str, list[Any]], fields: tuple, tokenizer: Any):
    """Yield (instruction ids, body ids) per row; body ids None for a row with a non-string field."""
    columns = [batch[name] for name in fields]
    rows = list(zip(*columns))
    good = [i for i, row in enumerate(rows) if all(isinstance(v, str) for v in row)]
    encoded = [
        tokenizer([rows[i][j] for i in good], add_special_tokens=False)["input_ids"] if good else []
        for j in range(len(fields))
    ]
    by_row = {i: [enc[n] for enc in encoded] for n, i in enumerate(good)}
    for i in range(len(rows)):
        parts = by_row.get(i)
        if parts is None:
            yield [], None
        elif len(parts) == 2:
            yield list(parts[0]), list(parts[1])
        else:
            yield [], list(parts[0])
