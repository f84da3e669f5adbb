"""Packing: the documents of a micro-batch laid side by side in rows of a token budget.

A FlexMDM document is one example's x_t, trimmed to its n slots, followed by its length slot
(pad): n + 1 positions. Every per-position array of the example (x_t, mask slots, targets, gaps,
gap mask) is copied to the document's place in its packed row; t, the ELBO weights and the loss
normaliser's B stay per example, so the estimator is the unpacked one (docs/method.md §3.7). An
LLaDA (MDM) document is the example's canvas: all W positions when the pad tail is trained (the
LLaDA SFT convention: packing then only changes the layout), else its n real tokens.

Rows are filled first-fit decreasing (by size, ties by example index: deterministic), then all
rows are cut to the longest fill; `document_ids` [R, T] holds the example index of each
position (-1 on filler) and `position_ids` [R, T] restart at 0 in each document.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["PackPlan", "plan_rows"]


def plan_rows(sizes: list[int], row_tokens: int) -> list[list[int]]:
    """First-fit decreasing: the example indices of each row, in placement order.

    Args:
        sizes: positions of each document (> 0).
        row_tokens: the token budget of a row.

    Raises:
        ValueError: a document is longer than the budget (the message names the data fields).
    """
    longest = max(sizes)
    if longest > row_tokens:
        raise ValueError(
            f"packing: a document needs {longest} positions but data.pack_tokens is {row_tokens}; "
            "set data.pack_tokens >= max_length + 1 (or leave it unset: one row per micro-batch)"
        )
    rows: list[list[int]] = []
    fill: list[int] = []
    for i in sorted(range(len(sizes)), key=lambda j: (-sizes[j], j)):
        for r, used in enumerate(fill):
            if used + sizes[i] <= row_tokens:
                rows[r].append(i)
                fill[r] += sizes[i]
                break
        else:
            rows.append([i])
            fill.append(sizes[i])
    return rows


class PackPlan:
    """Where each document goes; `gather` copies [B, W] per-example arrays into [R, T] rows.

    Args:
        sizes: long [B] positions of each document.
        row_tokens: the row budget; None = one row holding the whole micro-batch.

    Attributes:
        document_ids: long [R, T], example index per position, -1 on filler.
        position_ids: long [R, T], position within the document, 0 on filler.
        num_positions: R x T, the positions the trunk will compute.
    """

    def __init__(self, sizes: Tensor, row_tokens: int | None = None):
        size_list = [int(s) for s in sizes]
        budget = row_tokens if row_tokens is not None else sum(size_list)
        rows = plan_rows(size_list, budget)
        width = max(sum(size_list[i] for i in row) for row in rows)
        self.document_ids = torch.full((len(rows), width), -1, dtype=torch.long)
        self.position_ids = torch.zeros((len(rows), width), dtype=torch.long)
        for r, row in enumerate(rows):
            start = 0
            for i in row:
                n = size_list[i]
                self.document_ids[r, start : start + n] = i
                self.position_ids[r, start : start + n] = torch.arange(n)
                start += n
        self.num_positions = self.document_ids.numel()

    def gather(self, values: Tensor, filler: float | int | bool) -> Tensor:
        """values [B, W, ...] (W >= the longest document) -> [R, T, ...], `filler` off documents."""
        real = self.document_ids >= 0
        picked = values[self.document_ids.clamp_min(0), self.position_ids]
        shape = real.shape + (1,) * (picked.dim() - 2)
        return torch.where(real.view(shape), picked, torch.as_tensor(filler, dtype=values.dtype))
