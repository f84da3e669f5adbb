"""Packed rows: several documents side by side in one row, each attending only to itself.

A packed batch ([R, T] tokens) holds whole documents (a FlexMDM example: its n slots and its
length slot) one after another; `document_ids` [R, T] names the document of every position (-1
on the filler after the last document of a row) and `position_ids` [R, T] restart at 0 in every
document, so RoPE sees each document at the positions it has alone. Attention is
block-diagonal and bidirectional: a query attends to the keys of its own document only (filler
positions attend to the row's filler; their outputs are never read). With per-document AdaLN
modulation this makes every document's outputs those of the same document run alone
(docs/method.md §3.7), up to the rounding of differently shaped kernels.

Backends (`PackedLayout.backend`):
  * "segments" (default on CPU): one SDPA call per contiguous document run, exact and with no
    work on masked blocks; a python loop over the documents of a row (a few per micro-batch).
  * "flex" (default on CUDA when torch has FlexAttention): `flex_attention` with a document
    mask, compiled; blocks outside the diagonal are skipped by its block mask.
  * "mask": one SDPA call with a dense [R, 1, T, T] boolean mask (reference; O(T^2) memory).

Usage:
    >>> layout = PackedLayout.from_document_ids(document_ids, position_ids)
    >>> out = model(input_ids, t=t_per_document, packed=layout)
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

PACKED_BACKENDS = ("segments", "flex", "mask")

__all__ = ["PACKED_BACKENDS", "PackedLayout", "default_backend", "packed_attention"]


def default_backend(device: torch.device) -> str:
    """ "flex" on CUDA when torch ships FlexAttention, else "segments" (exact, CPU-friendly)."""
    if device.type == "cuda":
        try:
            import torch.nn.attention.flex_attention  # noqa: F401
        except ImportError:  # pragma: no cover - old torch
            return "mask"
        return "flex"
    return "segments"


@dataclass
class PackedLayout:
    """Where the documents of a packed batch sit (docs/method.md §3.7).

    Attributes:
        document_ids: long [R, T]: document of each position (any id >= 0, equal within a
            document, runs contiguous), -1 on filler.
        position_ids: long [R, T]: position within the document (0..n_d), 0 on filler.
        backend: "segments" | "flex" | "mask" (see the module docstring).
        segments: per row, the (start, end) column runs of its documents (filler included as
            one run), computed once from `document_ids`.
    """

    document_ids: torch.Tensor
    position_ids: torch.Tensor
    backend: str = "segments"
    segments: list[list[tuple[int, int]]] = field(default_factory=list)
    _block_mask: object = field(default=None, repr=False)

    @classmethod
    def from_document_ids(
        cls, document_ids: torch.Tensor, position_ids: torch.Tensor, backend: str | None = None
    ) -> PackedLayout:
        """Build the layout; `backend` None = `default_backend` of the tensors' device.

        Raises:
            ValueError: shapes differ, a backend is unknown, or a document's positions do not
                run 0, 1, 2, ... from its first column (documents must be contiguous).
        """
        if document_ids.shape != position_ids.shape or document_ids.dim() != 2:
            raise ValueError(
                f"document_ids {tuple(document_ids.shape)} and position_ids {tuple(position_ids.shape)} "
                "must both be [R, T]"
            )
        backend = backend or default_backend(document_ids.device)
        if backend not in PACKED_BACKENDS:
            raise ValueError(f"packed attention backend must be one of {PACKED_BACKENDS}, got {backend!r}")
        segments = [_runs(row) for row in document_ids.cpu().tolist()]
        expected = torch.zeros_like(position_ids, device="cpu")
        for r, runs in enumerate(segments):
            for start, end in runs:
                expected[r, start:end] = torch.arange(end - start)
        filler = document_ids.cpu() < 0
        if not torch.equal(torch.where(filler, 0, expected), torch.where(filler, 0, position_ids.cpu())):
            raise ValueError(
                "position_ids must restart at 0 at the first column of every document and count up "
                "by one (documents are contiguous runs of one document id)"
            )
        return cls(document_ids.long(), position_ids.long(), backend, segments)

    @property
    def num_positions(self) -> int:
        """R x T, the positions fed to the trunk."""
        return self.document_ids.numel()

    def dense_mask(self) -> torch.Tensor:
        """bool [R, 1, T, T]: query i may attend to key j iff both hold the same document id."""
        ids = self.document_ids
        return (ids[:, :, None] == ids[:, None, :])[:, None]

    def block_mask(self):
        """FlexAttention BlockMask of the document mask (built once, shared by every block)."""
        if self._block_mask is None:
            from torch.nn.attention.flex_attention import create_block_mask

            ids = self.document_ids

            def same_document(b, h, q, k):
                return ids[b, q] == ids[b, k]

            R, T = ids.shape
            self._block_mask = create_block_mask(same_document, R, None, T, T, device=ids.device)
        return self._block_mask


def _runs(row: list[int]) -> list[tuple[int, int]]:
    """Contiguous runs of equal ids: [(start, end), ...] covering the whole row."""
    runs, start = [], 0
    for i in range(1, len(row) + 1):
        if i == len(row) or row[i] != row[start]:
            runs.append((start, i))
            start = i
    return runs


@functools.lru_cache(maxsize=1)
def _compiled_flex_attention():
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention)  # dynamic shapes after the first recompile: packed widths vary


def packed_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layout: PackedLayout) -> torch.Tensor:
    """Block-diagonal bidirectional attention of a packed batch (docs/method.md §3.7).

    Args:
        q, k, v: [R, H, T, hd] (keys/values already repeated for grouped-query attention).
        layout: the PackedLayout of the batch.

    Returns:
        [R, H, T, hd] in q's dtype.
    """
    if layout.backend == "mask":
        return F.scaled_dot_product_attention(q, k, v, attn_mask=layout.dense_mask())
    if layout.backend == "flex":
        from torch.nn.attention.flex_attention import flex_attention

        run = _compiled_flex_attention() if q.is_cuda else flex_attention
        return run(q, k, v, block_mask=layout.block_mask())
    rows = []
    for r, runs in enumerate(layout.segments):
        parts = [
            F.scaled_dot_product_attention(q[r : r + 1, :, s:e], k[r : r + 1, :, s:e], v[r : r + 1, :, s:e])
            for s, e in runs
        ]
        rows.append(torch.cat(parts, dim=2))
    return torch.cat(rows, dim=0)
