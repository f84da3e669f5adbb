"""The infilling formats, shared by training (collators), samplers and the HumanEval evaluation.

FlexMDM boundary format (docs/method.md §1.7, §4.4): for a clean x1 of length l whose first c tokens are
the instruction, draw

    e = c + floor(U (l - 2 - c))          in [c, l - 3]
    f = e + 1 + floor(U' (l - e - 1))     in [e + 1, l - 1]

and lay out ``x1[0:e] ‖ B ‖ x1[e:f] ‖ B ‖ x1[f:l]`` with B = the ids of "<infill-boundary>";
prefix + first B and second B + suffix are protected, the middle keeps its true length. The
canvas is ``max_length + 2k`` (k = len(B), :func:`infill_canvas_width`).

LLaDA baseline FIM format (docs/method.md §1.7, second part): e = c + floor(U (l - c)), f as above, and
``I ‖ <prefix> ‖ x1[0:e] ‖ </prefix> ‖ <suffix> ‖ x1[f:l] ‖ </suffix> ‖ x1[e:f]`` with I a fixed
instruction; everything before the middle is the prompt.

Tokenization rule (docs/method.md §9.6): every string segment is tokenized on its own with
``add_special_tokens=False`` and the ids are concatenated (:func:`encode_segments`), at training
and at evaluation alike, so "<infill-boundary>" is always the same k ids whatever surrounds it.

Sampler use (docs/method.md §4.4):
    >>> prefix_ids, suffix_ids = infill_prompt_ids(tokenizer, problem_prompt, problem_suffix)
    >>> middle_text = extract_middle(tokenizer.decode(canvas_ids, skip_special_tokens=True))
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "BOUNDARY",
    "FIM_DELIMITERS",
    "FIM_INSTRUCTION",
    "boundary_ids",
    "boundary_layout",
    "draw_infill_split",
    "encode_segments",
    "extract_middle",
    "fim_ids",
    "fim_layout",
    "fim_overhead",
    "fim_prompt_ids",
    "infill_canvas_width",
    "infill_prompt_ids",
    "min_infill_length",
]

BOUNDARY = "<infill-boundary>"
"""The boundary string; not a registered special token, so it is usually several ids (docs/method.md §1.7)."""

FIM_DELIMITERS = ("<prefix>", "</prefix>", "<suffix>", "</suffix>")
FIM_INSTRUCTION = (
    "Write the missing code that goes between the code in <prefix></prefix> and the code in "
    "<suffix></suffix>. Reply with the missing code only.\n"
)
"""Own paraphrase of the baseline's FIM instruction (docs/method.md §1.7)."""


def encode_segments(tokenizer: Any, segments: Sequence[str]) -> list[int]:
    """Concatenated ids of each segment tokenized alone with ``add_special_tokens=False``
    (docs/method.md §9.6)."""
    ids: list[int] = []
    for text in segments:
        ids.extend(tokenizer(text, add_special_tokens=False)["input_ids"])
    return ids


def boundary_ids(tokenizer: Any) -> list[int]:
    """The k ids of "<infill-boundary>" (k >= 1).

    Raises:
        ValueError: the tokenizer maps the boundary to no ids.
    """
    ids = encode_segments(tokenizer, [BOUNDARY])
    if not ids:
        raise ValueError(f"tokenizer encodes {BOUNDARY!r} to no ids; it cannot be used for infilling")
    return ids


def infill_canvas_width(max_length: int, tokenizer: Any) -> int:
    """Canvas width of boundary-format training: max_length + 2k (docs/method.md §1.7)."""
    return max_length + 2 * len(boundary_ids(tokenizer))


def infill_prompt_ids(tokenizer: Any, prefix: str, suffix: str) -> tuple[list[int], list[int]]:
    """(prefix ids + B, B + suffix ids): the fixed parts of a boundary-format canvas (docs/method.md §4.4)."""
    b = boundary_ids(tokenizer)
    return encode_segments(tokenizer, [prefix]) + b, b + encode_segments(tokenizer, [suffix])


def extract_middle(text: str) -> str | None:
    """Text between the first and the second "<infill-boundary>" of a decoded canvas, or None if < 2."""
    parts = text.split(BOUNDARY)
    return parts[1] if len(parts) >= 3 else None


def fim_ids(tokenizer: Any) -> dict[str, list[int]]:
    """Ids of the FIM instruction and delimiters: keys "instruction" and the four delimiters."""
    names = ("instruction", *FIM_DELIMITERS)
    return {
        name: encode_segments(tokenizer, [text])
        for name, text in zip(names, (FIM_INSTRUCTION, *FIM_DELIMITERS))
    }


def fim_overhead(tokenizer: Any) -> int:
    """Extra canvas width of the FIM format: instruction + four delimiters (docs/method.md §5.4)."""
    return sum(len(ids) for ids in fim_ids(tokenizer).values())


def fim_prompt_ids(tokenizer: Any, prefix: str, suffix: str) -> list[int]:
    """Baseline prompt ``I <prefix>prefix</prefix><suffix>suffix</suffix>``, segment-wise ids
    (docs/method.md §6.2)."""
    return encode_segments(
        tokenizer, [FIM_INSTRUCTION, "<prefix>", prefix, "</prefix>", "<suffix>", suffix, "</suffix>"]
    )


def min_infill_length(cutoff: int) -> int:
    """Smallest l for which a boundary-format split exists: c + 3 (non-empty middle and suffix)."""
    return cutoff + 3


def draw_infill_split(
    lengths: Tensor, cutoffs: Tensor, u: Tensor, u2: Tensor, *, style: str = "flexmdm"
) -> tuple[Tensor, Tensor]:
    """Prefix end e and suffix start f per row (docs/method.md §1.7).

    flexmdm: e = c + floor(u (l - 2 - c)), f = e + 1 + floor(u2 (l - e - 1)).
    fim: e = c + floor(u (l - c)), same f (the suffix may then be empty).

    Args:
        lengths: long [B], l. cutoffs: long [B], c (instruction tokens, 0 for plain code).
        u, u2: float [B] in [0, 1) (float64 recommended).
        style: "flexmdm" or "fim".

    Returns:
        (e, f), long [B] each.

    Raises:
        ValueError: unknown style, or a row too short (l < c + 3 for flexmdm, l < c + 1 for fim).
    """
    if style not in ("flexmdm", "fim"):
        raise ValueError(f"draw_infill_split: style must be 'flexmdm' or 'fim', got {style!r}")
    room = lengths - cutoffs - (2 if style == "flexmdm" else 0)  # [B]
    if bool((room < 1).any()):
        raise ValueError(
            "draw_infill_split: a row is too short to split (need l >= c + 3); the infill builder skips "
            f"such samples as no_room. lengths={lengths.tolist()}, cutoffs={cutoffs.tolist()}"
        )
    e = cutoffs + torch.floor(u.double() * room.double()).long().clamp(max=room - 1)
    f = e + 1 + torch.floor(u2.double() * (lengths - e - 1).double()).long().clamp(min=0)
    return e, torch.minimum(f, (lengths - 1).clamp(min=e + 1))


def _assemble(ext: Tensor, starts: Tensor, lens: Tensor, flags: Sequence[bool], pad_id: int, width: int):
    """Concatenate K pieces ext[b, starts[b,k] : starts[b,k]+lens[b,k]] per row into a width-`width` canvas.

    Returns (ids [B, width] long, real [B, width] bool, protected [B, width] bool, total [B] long).
    """
    ends = lens.cumsum(dim=1)  # [B, K]
    total = ends[:, -1]
    pos = torch.arange(width, device=ext.device).expand(ext.shape[0], width).contiguous()  # [B, W]
    piece = torch.searchsorted(ends, pos, right=True).clamp(max=lens.shape[1] - 1)  # [B, W]
    offset = pos - (ends.gather(1, piece) - lens.gather(1, piece))
    src = (starts.gather(1, piece) + offset).clamp(0, ext.shape[1] - 1)
    real = pos < total[:, None]
    ids = torch.where(real, ext.gather(1, src), pad_id)
    protected = torch.tensor(list(flags), device=ext.device)[piece] & real
    return ids, real, protected, total


def _layout(x1: Tensor, consts: Sequence[Sequence[int]], pieces: list, flags, pad_id: int, width: int):
    """Pieces are ("x1", start [B], end [B]) or ("const", index into consts)."""
    B, L = x1.shape
    const_ids = [torch.as_tensor(list(c), dtype=x1.dtype, device=x1.device) for c in consts]
    ext = torch.cat([x1, *(c.expand(B, -1) for c in const_ids)], dim=1)  # [B, L + sum k]
    const_start = torch.tensor([0, *[len(c) for c in consts]], device=x1.device).cumsum(0)[:-1] + L
    starts, lens = [], []
    for piece in pieces:
        if piece[0] == "x1":
            starts.append(piece[1])
            lens.append(piece[2] - piece[1])
        else:
            starts.append(const_start[piece[1]].expand(B))
            lens.append(torch.full((B,), len(consts[piece[1]]), device=x1.device))
    starts_t, lens_t = torch.stack(starts, 1), torch.stack(lens, 1).long()  # [B, K]
    need = int(lens_t.sum(dim=1).max()) if B else 0
    if need > width:
        raise ValueError(
            f"infill layout: a sample needs {need} slots (x1 + boundary / FIM tokens) but the canvas is "
            f"{width}; "
            "use canvas_width = max_length + 2k (infill_canvas_width) or max_length + fim_overhead"
        )
    return _assemble(ext, starts_t, lens_t, flags, pad_id, width)


def boundary_layout(
    x1: Tensor, lengths: Tensor, e: Tensor, f: Tensor, boundary: Sequence[int], pad_id: int, width: int
) -> tuple[Tensor, Tensor, Tensor]:
    """``x1[0:e] ‖ B ‖ x1[e:f] ‖ B ‖ x1[f:l]`` right-padded to ``width`` (docs/method.md §1.7).

    Args:
        x1: long [B, L], right-padded clean sequences. lengths: long [B], l.
        e, f: long [B] from :func:`draw_infill_split`. boundary: the k boundary ids.
        pad_id: pad id after the sequence. width: output width (>= max l + 2k).

    Returns:
        (ids long [B, width], real bool [B, width] (left-aligned, l + 2k True), protected bool
        [B, width]: prefix + first B and second B + suffix).

    Raises:
        ValueError: a row does not fit ``width``.
    """
    pieces = [("x1", torch.zeros_like(e), e), ("const", 0), ("x1", e, f), ("const", 0), ("x1", f, lengths)]
    ids, real, protected, _ = _layout(x1, [boundary], pieces, (True, True, False, True, True), pad_id, width)
    return ids, real, protected


def fim_layout(
    x1: Tensor, lengths: Tensor, e: Tensor, f: Tensor, ids: dict[str, list[int]], pad_id: int, width: int
) -> tuple[Tensor, Tensor, Tensor]:
    """``I ‖ <prefix> ‖ x1[0:e] ‖ </prefix> ‖ <suffix> ‖ x1[f:l] ‖ </suffix> ‖ x1[e:f]``
    (docs/method.md §1.7).

    Args:
        x1, lengths, e, f, pad_id, width: as in :func:`boundary_layout`.
        ids: :func:`fim_ids` of the tokenizer.

    Returns:
        (ids [B, width], real [B, width], protected [B, width]: everything before the middle).
    """
    consts = [ids["instruction"], *(ids[d] for d in FIM_DELIMITERS)]
    zero = torch.zeros_like(e)
    pieces = [
        ("const", 0), ("const", 1), ("x1", zero, e), ("const", 2), ("const", 3),
        ("x1", f, lengths), ("const", 4), ("x1", e, f),
    ]  # fmt: skip
    out, real, protected, _ = _layout(x1, consts, pieces, (True,) * 7 + (False,), pad_id, width)
    return out, real, protected
