"""Streaming safetensors writer: every tensor goes to disk as soon as it is produced.

The shard layout (which tensor goes to which file, byte offsets, headers) is computed up front
from names, shapes and the output dtype, so each header can be written before its tensors and
no shard is ever buffered in memory: peak memory is one tensor, not one shard. Files follow the
safetensors format exactly (8-byte little-endian header size, JSON header padded with spaces to
a multiple of 8, then the raw little-endian tensor bytes in offset order) and are named like
`save_pretrained` names them: `model.safetensors`, or `model-0000i-of-0000n.safetensors` plus
`model.safetensors.index.json`.

Usage:
    >>> with ShardWriter(out_dir, [(name, shape), ...], torch.bfloat16, max_bytes=5 * 10**9) as writer:
    ...     for name, tensor in tensors:
    ...         writer.add(name, tensor)   # same order as the layout
    ...     weight_map = writer.finish()
"""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path
from typing import BinaryIO

import torch

INDEX_NAME = "model.safetensors.index.json"
_DTYPE_NAMES = {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16", torch.float64: "F64"}


def plan_shards(
    entries: list[tuple[str, tuple[int, ...]]], dtype: torch.dtype, max_bytes: int
) -> list[list[tuple[str, tuple[int, ...]]]]:
    """Greedy, order-preserving split into shards of at most `max_bytes` (a larger tensor gets its own)."""
    shards: list[list[tuple[str, tuple[int, ...]]]] = [[]]
    size, itemsize = 0, torch.empty(0, dtype=dtype).element_size()
    for name, shape in entries:
        nbytes = itemsize * _numel(shape)
        if shards[-1] and size + nbytes > max_bytes:
            shards.append([])
            size = 0
        shards[-1].append((name, shape))
        size += nbytes
    return shards if shards[0] else []


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for dim in shape:
        n *= dim
    return n


def shard_name(i: int, n: int) -> str:
    """File name of shard i (1-based) of n, as transformers' save_pretrained names them."""
    return "model.safetensors" if n == 1 else f"model-{i:05d}-of-{n:05d}.safetensors"


def _header(entries: list[tuple[str, tuple[int, ...]]], dtype: torch.dtype) -> bytes:
    """The safetensors header (size prefix + JSON padded to 8 bytes) of one shard."""
    itemsize, offset = torch.empty(0, dtype=dtype).element_size(), 0
    header: dict = {"__metadata__": {"format": "pt"}}
    for name, shape in entries:
        end = offset + itemsize * _numel(shape)
        header[name] = {"dtype": _DTYPE_NAMES[dtype], "shape": list(shape), "data_offsets": [offset, end]}
        offset = end
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text


class ShardWriter:
    """Write tensors, in layout order, straight into their safetensors shards.

    Args:
        out_dir: folder to write into (a temp folder during export).
        entries: (name, shape) of every tensor, in the order `add` will receive them.
        dtype: output dtype (float32 / bfloat16 / float16); tensors are cast on `add`.
        max_bytes: shard size limit in bytes.

    Raises:
        ValueError: unsupported dtype, or (from `add` / `finish`) a tensor out of order, of
            another shape, or missing.
    """

    def __init__(
        self, out_dir: Path, entries: list[tuple[str, tuple[int, ...]]], dtype: torch.dtype, max_bytes: int
    ):
        if dtype not in _DTYPE_NAMES or sys.byteorder != "little":
            raise ValueError(f"ShardWriter: cannot write {dtype} on a {sys.byteorder}-endian machine")
        self.out_dir, self.dtype = Path(out_dir), dtype
        self.shards = plan_shards(entries, dtype, max_bytes)
        self.queue = [(i, name, shape) for i, shard in enumerate(self.shards) for name, shape in shard]
        self.position = 0
        self.handle: BinaryIO | None = None
        self.open_shard = -1

    def add(self, name: str, tensor: torch.Tensor) -> torch.Tensor:
        """Cast `tensor`, append its bytes to its shard file; returns the cast tensor."""
        if self.position >= len(self.queue) or self.queue[self.position][1] != name:
            expected = self.queue[self.position][1] if self.position < len(self.queue) else "nothing"
            raise ValueError(f"ShardWriter: got tensor {name!r}, expected {expected!r}")
        shard, _, shape = self.queue[self.position]
        if tuple(tensor.shape) != tuple(shape):
            raise ValueError(f"ShardWriter: {name!r} has shape {list(tensor.shape)}, planned {list(shape)}")
        if shard != self.open_shard:
            self._open(shard)
        out = tensor.to(self.dtype).contiguous()
        self.handle.write(out.view(torch.uint8).numpy().data if out.numel() else b"")
        self.position += 1
        return out

    def _open(self, shard: int) -> None:
        self.close()
        self.open_shard = shard
        self.handle = open(self.out_dir / shard_name(shard + 1, len(self.shards)), "wb")  # noqa: SIM115 (closed by close / __exit__)
        self.handle.write(_header(self.shards[shard], self.dtype))

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Close the current shard file (also called on errors)."""
        if self.handle is not None:
            self.handle.close()
            self.handle = None

    def finish(self) -> dict[str, str]:
        """Close the last shard, write the index (several shards); returns {name: shard file}."""
        self.close()
        if self.position != len(self.queue):
            raise ValueError(
                f"ShardWriter: {len(self.queue) - self.position} planned tensors were never written"
            )
        n = len(self.shards)
        weight_map = {name: shard_name(i + 1, n) for i, name, _ in self.queue}
        if n > 1:
            total = (
                sum(_numel(shape) for _, _, shape in self.queue)
                * torch.empty(0, dtype=self.dtype).element_size()
            )
            index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
            (self.out_dir / INDEX_NAME).write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
        return weight_map
