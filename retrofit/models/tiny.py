"""Tiny random LLaDA checkpoints in exactly the official on-disk layout (docs/method.md §8.1, §8.2).

A folder written by `write_tiny_llada` looks like GSAI-ML/LLaDA-8B-Base, only small:

    config.json                        every official key (incl. auto_map, architectures)
    model-0000k-of-0000n.safetensors   n >= 2 shards, official tensor names
    model.safetensors.index.json       {"metadata": {"total_size": bytes}, "weight_map": {...}}
    tokenizer.json, tokenizer_config.json (byte-level BPE with LLaDA's special tokens)
    configuration_llada.py, modeling_llada.py   only with `modeling_code=True` (--modeling-code):
                                       retrofit's own LLaDA code as the folder's remote code, so
                                       `AutoModel.from_pretrained(dir, trust_remote_code=True)`
                                       works without retrofit (see `write_modeling_code`)

The embedding / LM-head rows (`vocab_size` = `embedding_size`) are the tokenizer size rounded up
to a multiple of 64, like LLaDA's padded embedding; the mask id lies inside the tokenizer.

Usage:
    $ retrofit tiny-llada --out tiny --layers 2 --d-model 64 [--modeling-code]
    >>> write_tiny_llada("tiny", layers=2, d_model=64, seed=0)
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from retrofit.io_utils import atomic_directory
from retrofit.models.llada import LLaDAConfig, LLaDAModelLM
from retrofit.models.tokenizer import MASK_TOKEN, build_tokenizer, save_tokenizer

EMBEDDING_MULTIPLE = 64

# config.json keys of the official LLaDA checkpoints (docs/method.md §8.1), written in this order.
OFFICIAL_CONFIG_KEYS: tuple[str, ...] = (
    "activation_type", "alibi", "alibi_bias_max", "architectures", "attention_dropout",
    "attention_layer_norm", "attention_layer_norm_with_affine", "auto_map", "bias_for_layer_norm",
    "block_group_size", "block_type", "d_model", "embedding_dropout", "embedding_size",
    "eos_token_id", "flash_attention", "include_bias", "include_qkv_bias", "init_cutoff_factor",
    "init_device", "init_fn", "init_std", "input_emb_norm", "layer_norm_type",
    "layer_norm_with_affine", "mask_token_id", "max_sequence_length", "mlp_hidden_size",
    "mlp_ratio", "model_type", "multi_query_attention", "n_heads", "n_kv_heads", "n_layers",
    "pad_token_id", "precision", "residual_dropout", "rms_norm_eps", "rope", "rope_full_precision",
    "rope_theta", "scale_logits", "transformers_version", "use_cache", "vocab_size", "weight_tying",
)  # fmt: skip

OFFICIAL_AUTO_MAP = {
    "AutoConfig": "configuration_llada.LLaDAConfig",
    "AutoModel": "modeling_llada.LLaDAModelLM",
    "AutoModelForCausalLM": "modeling_llada.LLaDAModelLM",
}
OFFICIAL_TRANSFORMERS_VERSION = "4.46.3"
# Module files named by OFFICIAL_AUTO_MAP -> the retrofit source written in their place.
MODELING_SOURCES = {
    "configuration_llada.py": "llada_config.py",
    "modeling_llada.py": "llada.py",
    "prefix_cache.py": "prefix_cache.py",  # imported by modeling_llada.py (relative import)
    "packed_attention.py": "packed_attention.py",  # likewise
    "token_head.py": "token_head.py",  # likewise
}
_PACKAGE_IMPORTS = {
    "from retrofit.models.llada_config import LLaDAConfig": "from .configuration_llada import LLaDAConfig",
    "from retrofit.models.prefix_cache import": "from .prefix_cache import",
    "from retrofit.models.packed_attention import": "from .packed_attention import",
    "from retrofit.models.token_head import": "from .token_head import",
}


def official_config_dict(config: LLaDAConfig) -> dict:
    """config.json contents with exactly the official LLaDA keys (docs/method.md §8.1), sorted.

    Args:
        config: the LLaDA configuration to serialise.

    Returns:
        dict with every key of `OFFICIAL_CONFIG_KEYS`; `architectures`, `auto_map`,
        `model_type` and `transformers_version` hold the official values.
    """
    fixed = {
        "architectures": ["LLaDAModelLM"],
        "auto_map": dict(OFFICIAL_AUTO_MAP),
        "model_type": "llada",
        "transformers_version": OFFICIAL_TRANSFORMERS_VERSION,
    }
    return {key: fixed[key] if key in fixed else getattr(config, key) for key in sorted(OFFICIAL_CONFIG_KEYS)}


def write_modeling_code(out_dir: str | Path) -> list[str]:
    """Write configuration_llada.py + modeling_llada.py (the modules `OFFICIAL_AUTO_MAP` names)
    and the modules modeling_llada.py imports (prefix_cache.py, packed_attention.py, token_head.py).

    They are retrofit's native `llada_config.py` / `llada.py` (and the modules it
    imports) with the package imports made relative, so the folder's remote code is
    self-contained (imports only torch / transformers)
    and computes the same logits as `retrofit.models.LLaDAModelLM`. Tests edit the written
    modeling_llada.py to get a folder whose own code disagrees with retrofit.

    Args:
        out_dir: existing folder to write into.

    Returns:
        The written file names.
    """
    here = Path(__file__).resolve().parent
    for name, source in MODELING_SOURCES.items():
        text = (here / source).read_text(encoding="utf-8")
        if source == "llada.py":
            for native, relative in _PACKAGE_IMPORTS.items():
                if native not in text:
                    raise RuntimeError(f"{here / source}: expected the import {native!r}")
                text = text.replace(native, relative)
        if re.search(r"^\s*(from|import) retrofit", text, flags=re.MULTILINE):
            raise RuntimeError(f"{here / source}: imports retrofit; the folder's remote code must not")
        (Path(out_dir) / name).write_text(text, encoding="utf-8")
    return list(MODELING_SOURCES)


def save_sharded(state: dict[str, torch.Tensor], out_dir: Path, max_shard_size: int | None = None) -> int:
    """Write `state` as official-style safetensors shards plus model.safetensors.index.json.

    Tensors are packed greedily in state-dict order into shards of at most `max_shard_size`
    bytes (a tensor larger than that gets a shard of its own).

    Args:
        state: name -> tensor (any dtype; written contiguous, as stored).
        out_dir: existing folder to write into.
        max_shard_size: bytes per shard; None = half the total, giving at least 2 shards.

    Returns:
        number of shards written.
    """
    sizes = {k: v.numel() * v.element_size() for k, v in state.items()}
    total = sum(sizes.values())
    limit = max_shard_size if max_shard_size is not None else math.ceil(total / 2)
    shards: list[list[str]] = [[]]
    used = 0
    for name, size in sizes.items():
        if shards[-1] and used + size > limit:
            shards.append([])
            used = 0
        shards[-1].append(name)
        used += size
    weight_map = {}
    for i, names in enumerate(shards):
        file = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file({k: state[k].contiguous() for k in names}, str(out_dir / file), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(names, file))
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (out_dir / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    return len(shards)


def tiny_config(
    tokenizer_size: int,
    ids: dict[str, int],
    *,
    layers: int,
    d_model: int,
    heads: int,
    kv_heads: int | None,
    mlp_hidden: int | None,
) -> LLaDAConfig:
    """LLaDAConfig of a tiny model; vocab/embedding = tokenizer size rounded up to 64.

    `ids` holds the tokenizer's `mask`, `eos`, `pad` ids. The MLP width defaults to 3 * d_model
    (LLaDA-8B: 12288 = 3 * 4096).
    """
    padded = EMBEDDING_MULTIPLE * math.ceil(tokenizer_size / EMBEDDING_MULTIPLE)
    return LLaDAConfig(
        d_model=d_model,
        n_heads=heads,
        n_kv_heads=kv_heads if kv_heads is not None else heads,
        n_layers=layers,
        mlp_hidden_size=mlp_hidden if mlp_hidden is not None else 3 * d_model,
        vocab_size=padded,
        embedding_size=padded,
        max_sequence_length=4096,
        mask_token_id=ids["mask"],
        eos_token_id=ids["eos"],
        pad_token_id=ids["pad"],
    )


def write_tiny_llada(
    out_dir: str | Path,
    *,
    layers: int = 2,
    d_model: int = 64,
    heads: int = 4,
    kv_heads: int | None = None,
    mlp_hidden: int | None = None,
    vocab_size: int | None = None,
    seed: int = 0,
    train_on: Sequence[str | Path] | None = None,
    max_shard_size: int | None = None,
    overwrite: bool = False,
    tokenizer: Any = None,
    modeling_code: bool = False,
) -> Path:
    """Write a randomly initialised LLaDA checkpoint, deterministic for `seed` (fp32 weights).

    Args:
        out_dir: destination folder; written atomically (`retrofit.io_utils.atomic_directory`:
            temp folder beside it, renamed when complete).
        layers, d_model, heads, kv_heads, mlp_hidden: model shape (kv_heads None = heads;
            mlp_hidden None = 3 * d_model).
        vocab_size: BPE size (incl. specials) fitted on `train_on`; needs `train_on`.
        seed: torch seed for the weights.
        train_on: text files / folders to fit the tokenizer on (None: 262-token byte tokenizer).
        max_shard_size: bytes per safetensors shard (None: two shards).
        overwrite: replace an existing non-empty `out_dir`.
        tokenizer: a ready tokenizer with LLaDA's special tokens (e.g.
            `retrofit.models.tokenizer.build_word_tokenizer`) instead of building a BPE one;
            then `train_on` / `vocab_size` must be None.
        modeling_code: also write configuration_llada.py / modeling_llada.py
            (`write_modeling_code`), as the official folders ship them.

    Returns:
        Path of the written folder.

    Raises:
        FileExistsError: `out_dir` exists, is not empty, and `overwrite` is False.
        ValueError: an inconsistent shape setting (from LLaDAConfig) or tokenizer setting.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise FileExistsError(f"{out_dir} exists and is not empty; pass overwrite=True (--overwrite)")
    if tokenizer is None:
        tokenizer = build_tokenizer(train_on=train_on, vocab_size=vocab_size)
    elif train_on or vocab_size:
        raise ValueError("write_tiny_llada: pass either tokenizer or train_on / vocab_size, not both")
    ids = {
        "mask": tokenizer.convert_tokens_to_ids(MASK_TOKEN),
        "eos": tokenizer.eos_token_id,
        "pad": tokenizer.pad_token_id,
    }
    config = tiny_config(
        len(tokenizer),
        ids,
        layers=layers,
        d_model=d_model,
        heads=heads,
        kv_heads=kv_heads,
        mlp_hidden=mlp_hidden,
    )
    torch.manual_seed(seed)
    model = LLaDAModelLM(config)
    replace = overwrite or out_dir.is_dir()  # an existing folder is empty here unless overwrite
    with atomic_directory(out_dir, overwrite=replace) as tmp:
        (tmp / "config.json").write_text(json.dumps(official_config_dict(config), indent=2) + "\n")
        save_sharded(model.state_dict(), tmp, max_shard_size)
        save_tokenizer(tokenizer, tmp)
        if modeling_code:
            write_modeling_code(tmp)
    return out_dir
