"""Streaming LoRA merge: base shards + trained tensors -> merged safetensors shards.

`plan_merge` checks everything from safetensors headers only (names, shapes, LoRA factor
shapes, missing / unknown tensors) before any weight is read, so a bad input fails fast and
names the file. `iter_merged` then reads one base tensor at a time (`safe_open`), merges
W' = W + scaling * (B @ A) in fp32 (spec §2.8), and yields it; `ShardWriter` casts and packs the
tensors into output shards of at most `max_shard_size` bytes, writing each as soon as it is full.

Peak memory (measured in tests/test_export.py; see `retrofit.export` for the 8B formula):
    RSS ~ baseline + S_out + 3 * 4 * N_max + T
with S_out the output shard size, N_max the element count of the largest LoRA-merged tensor
(its fp32 copy, the fp32 B @ A product and the cast result) and T the trained tensors
(LoRA factors + graft modules) held in memory.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from retrofit.export_sources import LoraDelta, TrainedWeights
from retrofit.export_verify import LayerProbe
from retrofit.io_utils import read_safetensors_header
from retrofit.training.checkpoint import CheckpointError

INDEX_NAME = "model.safetensors.index.json"
_SIZE_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
               "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}  # fmt: skip


def parse_size(text: str | int) -> int:
    """'5GB' -> 5_000_000_000, '512MiB' -> 536_870_912, 1000 -> 1000 (HF conventions).

    Raises:
        ValueError: unparseable size.
    """
    if isinstance(text, int):
        return text
    match = re.fullmatch(r"\s*([0-9.]+)\s*([A-Za-z]*)\s*", str(text))
    if not match or match[2].upper() not in _SIZE_UNITS:
        raise ValueError(f"--max-shard-size {text!r}: expected a size like 5GB, 500MB or 2GiB")
    return int(float(match[1]) * _SIZE_UNITS[match[2].upper()])


@dataclass
class PlannedTensor:
    """Where one output tensor comes from.

    Attributes:
        out_key: name in the exported checkpoint.
        shape: expected shape (from the model built on the meta device).
        file: base safetensors file, or None for a trained (modules_to_save) tensor.
        base_key: tensor name inside `file`.
        lora: LoRA factors merged into this weight, if any.
        trained: the trained tensor itself (modules_to_save), if `file` is None.
    """

    out_key: str
    shape: tuple[int, ...]
    file: Path | None = None
    base_key: str | None = None
    lora: LoraDelta | None = None
    trained: torch.Tensor | None = None


def base_weight_files(base_dir: Path) -> list[Path]:
    """Safetensors files of a model folder (index order), each header-checked.

    Raises:
        CheckpointError: no safetensors weights (pickled .bin bases are refused), a shard named
            in the index is missing, or a file is truncated / corrupt (the file is named).
    """
    index = base_dir / INDEX_NAME
    if index.is_file():
        weight_map = json.loads(index.read_text(encoding="utf-8")).get("weight_map", {})
        files = [base_dir / name for name in dict.fromkeys(weight_map.values())]
    elif (base_dir / "model.safetensors").is_file():
        files = [base_dir / "model.safetensors"]
    else:
        raise CheckpointError(
            f"{base_dir}: no model.safetensors or {INDEX_NAME}; export reads safetensors bases only "
            "(convert .bin weights with a trusted tool first)"
        )
    for path in files:
        if not path.is_file():
            raise CheckpointError(f"{path}: listed in {index.name} but missing")
        try:
            read_safetensors_header(path)
        except ValueError as err:
            raise CheckpointError(str(err)) from err
    return files


def plan_merge(
    base_dir: Path,
    trained: TrainedWeights,
    expected: dict[str, tuple[int, ...]],
    *,
    base_prefix: str,
    out_name: Callable[[str], str | None],
    ignore_unexpected: tuple[str, ...] = (),
) -> list[PlannedTensor]:
    """Match every model tensor to its source, checking names and shapes from headers only.

    Args:
        base_dir: base model folder (safetensors).
        trained: LoRA factors and modules_to_save tensors (model names).
        expected: {model key: shape} of the model being exported (state_dict of the model built
            on the meta device).
        base_prefix: prepended to base tensor names to get model keys ("backbone." when a LLaDA
            base feeds a FlexMDM).
        out_name: model key -> exported key, or None to drop it (`--to-llada` drops the graft).
        ignore_unexpected: regexes of base tensors to skip (e.g. rotary buffers).

    Returns:
        The planned tensors: base tensors grouped by file (streaming order), then trained ones.

    Raises:
        CheckpointError: a base tensor the model does not have, a wrong shape, LoRA factors that do
            not fit their weight, LoRA on a module without base weight, or missing tensors. The
            message names the file and tensor.
    """
    plan, seen = [], set()
    for path in base_weight_files(base_dir):
        for base_key, info in read_safetensors_header(path).items():
            if base_key == "__metadata__" or any(re.search(p, base_key) for p in ignore_unexpected):
                continue
            key = base_prefix + base_key
            if key not in expected:
                raise CheckpointError(
                    f"{path}: tensor {base_key!r} is not part of the model being exported "
                    "(a checkpoint of another model type?)"
                )
            _check_shape(path, base_key, tuple(info["shape"]), expected[key])
            seen.add(key)
            if key in trained.full or out_name(key) is None:
                continue
            lora = trained.lora.get(key.removesuffix(".weight")) if key.endswith(".weight") else None
            if lora is not None:
                _check_lora(path, key, expected[key], lora)
            plan.append(PlannedTensor(out_name(key), expected[key], path, base_key, lora))
    for key, tensor in trained.full.items():
        if key not in expected:
            raise CheckpointError(f"{trained.source}: trained tensor {key!r} is not part of the model")
        _check_shape(Path(trained.source), key, tuple(tensor.shape), expected[key])
        seen.add(key)
        if out_name(key) is not None:
            plan.append(PlannedTensor(out_name(key), expected[key], trained=tensor))
    orphan = sorted(m for m in trained.lora if m + ".weight" not in seen)
    missing = sorted(set(expected) - seen)
    if orphan or missing:
        raise CheckpointError(
            f"{base_dir} + {trained.source}: "
            + (f"LoRA modules without a base weight: {orphan[:5]} " if orphan else "")
            + (
                f"model tensors found nowhere: {missing[:5]}{' ...' if len(missing) > 5 else ''}"
                if missing
                else ""
            )
        )
    return plan


def _check_shape(path: Path, key: str, have: tuple[int, ...], want: tuple[int, ...]) -> None:
    if have != want:
        raise CheckpointError(
            f"{path}: tensor {key!r} has shape {list(have)}, the model expects {list(want)}"
        )


def _check_lora(path: Path, key: str, shape: tuple[int, ...], lora: LoraDelta) -> None:
    if len(shape) != 2 or lora.A.shape[1] != shape[1] or lora.B.shape[0] != shape[0]:
        raise CheckpointError(
            f"{path}: LoRA factors A{list(lora.A.shape)} B{list(lora.B.shape)} do not fit {key!r} {list(shape)}"
        )


def merge_lora(weight: torch.Tensor, lora: LoraDelta) -> torch.Tensor:
    """W' = W + scaling * (B @ A), computed in fp32 (spec §2.8), same operation order as peft.

    Args:
        weight: [out, in] base weight (any float dtype; not modified unless already fp32 and
            freshly read, as in `iter_merged`).
        lora: factors A [r, in], B [out, r] and the scaling.

    Returns:
        [out, in] float32 merged weight.
    """
    delta = (lora.B.to(torch.float32) @ lora.A.to(torch.float32)) * lora.scaling  # [out, in]
    merged = weight.to(torch.float32)
    merged += delta
    return merged


def iter_merged(
    plan: list[PlannedTensor], probe: LayerProbe | None = None
) -> Iterator[tuple[PlannedTensor, torch.Tensor]]:
    """Yield (planned tensor, value) one at a time: base tensors read lazily, LoRA merged in fp32.

    Only the current tensor (and, for a merged one, its fp32 copy and delta) is materialised.
    With `probe`, each merged weight is checked against its unmerged form (stage "merged_fp32").
    """
    open_path, handle = None, None
    for item in plan:
        if item.file is None:
            yield item, item.trained
            continue
        if item.file != open_path:
            open_path, handle = item.file, safe_open(item.file, framework="pt")
        tensor = handle.get_tensor(item.base_key)
        if item.lora is not None:
            if probe is not None:
                probe.reference(item.out_key, tensor, item.lora)
            tensor = merge_lora(tensor, item.lora)
            if probe is not None:
                probe.check("merged_fp32", item.out_key, tensor)
        yield item, tensor


class ShardWriter:
    """Pack tensors (cast to `dtype`) into safetensors shards of at most `max_bytes` each.

    Shards are written as soon as they are full; `finish` names them `model-0000i-of-0000n`
    (or `model.safetensors` when there is one) and writes the index.

    Args:
        out_dir: folder to write into (a temp folder during export).
        max_bytes: shard size limit in bytes; a bigger single tensor gets its own shard.
        dtype: output dtype of floating-point tensors.
    """

    def __init__(self, out_dir: Path, max_bytes: int, dtype: torch.dtype):
        self.out_dir, self.max_bytes, self.dtype = out_dir, max_bytes, dtype
        self.buffer: dict[str, torch.Tensor] = {}
        self.buffer_bytes = 0
        self.shards: list[tuple[Path, list[str]]] = []
        self.total_bytes = 0

    def add(self, key: str, tensor: torch.Tensor) -> torch.Tensor:
        """Cast and queue one tensor; returns the cast tensor (what will be on disk)."""
        out = tensor.to(self.dtype) if tensor.is_floating_point() else tensor
        out = out.contiguous()
        size = out.numel() * out.element_size()
        if self.buffer and self.buffer_bytes + size > self.max_bytes:
            self.flush()
        self.buffer[key] = out
        self.buffer_bytes += size
        self.total_bytes += size
        return out

    def flush(self) -> None:
        """Write the queued tensors as the next shard and free them."""
        if not self.buffer:
            return
        path = self.out_dir / f"model-{len(self.shards) + 1:05d}.partial.safetensors"
        save_file(self.buffer, str(path), metadata={"format": "pt"})
        self.shards.append((path, list(self.buffer)))
        self.buffer, self.buffer_bytes = {}, 0

    def finish(self) -> dict[str, str]:
        """Flush, give the shards their final names, write the index; returns {key: shard file name}."""
        self.flush()
        n = len(self.shards)
        weight_map = {}
        for i, (path, keys) in enumerate(self.shards, start=1):
            name = "model.safetensors" if n == 1 else f"model-{i:05d}-of-{n:05d}.safetensors"
            path.rename(self.out_dir / name)
            weight_map.update(dict.fromkeys(keys, name))
        if n > 1:
            index = {
                "metadata": {"total_size": self.total_bytes},
                "weight_map": dict(sorted(weight_map.items())),
            }
            (self.out_dir / INDEX_NAME).write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
        return weight_map
