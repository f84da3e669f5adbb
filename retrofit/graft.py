"""Write the initial FlexMDM checkpoint grafted onto a LLaDA folder (docs/method.md §2.4-2.6, §2.10).

The output folder holds `config.json` (model_type "flexmdm", the LLaDA config nested under
`backbone`), sharded safetensors weights (backbone tensors under `backbone.model.transformer.*`,
new modules under `time_mlp.*`, `adaln.{k}.*`, `length_head.*`) and the base's tokenizer files
copied byte for byte. It is written into a temporary folder beside the target and renamed into
place, so an interrupted graft never leaves a half-written checkpoint.

The saved dtype defaults to the base's stored dtype (`stored_dtype`: the safetensors headers,
else config.json `dtype` / `torch_dtype`): bf16 for the official LLaDA-8B, fp32 for an fp32
base, so the grafted model at init computes exactly its base's logits (docs/method.md §2.10). Casting
(`--dtype bf16` on an fp32 base) changes the backbone's weights and therefore its logits.

Usage:
    retrofit graft --base path/to/LLaDA-8B-Base --out runs/flexmdm-init   # --dtype auto
    >>> from retrofit.graft import graft_checkpoint, stored_dtype
    >>> graft_checkpoint("tiny-llada", "tiny-flexmdm", canvas_width=128)
    >>> stored_dtype("tiny-flexmdm")
    torch.float32
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from retrofit.dtypes import DTYPE_NAMES, FLOAT_DTYPES, torch_dtype
from retrofit.io_utils import read_safetensors_header
from retrofit.models.flexmdm import FlexMDMModel

# Tokenizer files of a LLaDA folder (tokenizer.json + tokenizer_config.json for the official one).
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "chat_template.jinja",
    "chat_template.json",
)


def stored_dtype(folder: str | Path) -> torch.dtype:
    """The floating dtype a model folder's weights are stored in.

    Reads the safetensors headers (no tensor data): the floating dtype holding the most
    elements. Without safetensors files, config.json `dtype` (transformers 5) or `torch_dtype`.

    Args:
        folder: model folder (config.json + *.safetensors).

    Returns:
        torch.float32 / bfloat16 / float16 / float64.

    Raises:
        ValueError: no safetensors file holds a floating tensor and config.json names no
            dtype (the message names the folder and the fix: pass --dtype), or a header is
            truncated / corrupt (names the file).
    """
    folder = Path(folder)
    counts: dict[torch.dtype, int] = {}
    for file in sorted(folder.glob("*.safetensors")):
        for name, info in read_safetensors_header(file).items():
            if name != "__metadata__" and DTYPE_NAMES.get(info["dtype"]) in FLOAT_DTYPES:
                n = 1
                for dim in info["shape"]:
                    n *= dim
                dtype = torch_dtype(info["dtype"])
                counts[dtype] = counts.get(dtype, 0) + n
    if counts:
        return max(counts, key=counts.__getitem__)
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        config = {}
    name = config.get("dtype") or config.get("torch_dtype")
    if isinstance(name, str) and DTYPE_NAMES.get(name) in FLOAT_DTYPES:
        return torch_dtype(name)
    raise ValueError(
        f"{folder}: cannot tell the stored dtype (no floating tensors in *.safetensors and no "
        "dtype / torch_dtype in config.json); pass --dtype bf16 or --dtype fp32"
    )


def copy_tokenizer_files(src: str | Path, dst: str | Path) -> list[str]:
    """Copy the tokenizer files of folder `src` into folder `dst` (bytes unchanged).

    Returns:
        The names of the copied files (empty if `src` has no tokenizer).
    """
    copied = []
    for name in TOKENIZER_FILES:
        if (Path(src) / name).is_file():
            shutil.copy2(Path(src) / name, Path(dst) / name)
            copied.append(name)
    return copied


def graft_checkpoint(
    base: str | Path,
    out: str | Path,
    *,
    dtype: torch.dtype | None = None,
    seed: int = 0,
    max_shard_size: str | int = "5GB",
    overwrite: bool = False,
    **graft_kwargs: Any,
) -> Path:
    """Graft FlexMDM modules onto the LLaDA folder `base` and save the result to `out`.

    Args:
        base: local LLaDA checkpoint folder (config.json + safetensors + tokenizer files).
        out: output folder; must not exist unless `overwrite`.
        dtype: dtype of every saved tensor; None (default): the base's stored dtype
            (`stored_dtype(base)`), so the graft is the base's identity at init.
        seed: seed of the new modules' init (same values on any device).
        max_shard_size: safetensors shard size, e.g. "5GB" (as the official LLaDA shards).
        overwrite: replace an existing `out` (only after the new folder is fully written).
        **graft_kwargs: FlexMDMConfig fields (canvas_width, adaln_group_size,
            insertion_schedule, unmasking_schedule, pad_attention, ...).

    Returns:
        The output folder.

    Raises:
        FileNotFoundError: `base` is not a folder.
        FileExistsError: `out` exists and `overwrite` is False.
        ValueError: an invalid FlexMDMConfig field (the message names it), or `dtype` is None
            and the base's stored dtype cannot be read.
    """
    base, out = Path(base).expanduser(), Path(out).expanduser()
    if not base.is_dir():
        raise FileNotFoundError(f"--base {base}: not a folder; pass a local LLaDA checkpoint folder")
    if out.exists() and not overwrite:
        raise FileExistsError(f"--out {out} already exists; choose a new folder or pass --overwrite")
    if dtype is None:
        dtype = stored_dtype(base)
    model = FlexMDMModel.from_llada(base, seed=seed, dtype=dtype, base_model=str(base), **graft_kwargs)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    tmp.chmod(0o755)  # mkdtemp makes it owner-only
    try:
        model.save_pretrained(tmp, max_shard_size=max_shard_size)
        copy_tokenizer_files(base, tmp)
        _move_into_place(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _move_into_place(tmp: Path, out: Path) -> None:
    """Rename `tmp` to `out`; an existing `out` is moved aside first and deleted after."""
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        out.rename(old)
    try:
        tmp.rename(out)
    except OSError:
        if old is not None:
            old.rename(out)
        raise
    if old is not None:
        shutil.rmtree(old) if old.is_dir() else old.unlink()
