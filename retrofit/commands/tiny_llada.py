"""`retrofit tiny-llada`: write a tiny random LLaDA checkpoint in the official on-disk layout.

Usage:
    $ retrofit tiny-llada --out tiny --layers 2 --d-model 64 --heads 4
    $ retrofit tiny-llada --out tiny --modeling-code   # also ship configuration/modeling_llada.py
    $ retrofit tiny-llada --out tiny --vocab 4096 --train-on ../shared/data/gsm8k/train.jsonl /usr/lib/python3.11
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags mirror `retrofit.models.tiny.write_tiny_llada`."""
    parser.add_argument("--out", required=True, type=Path, help="destination folder")
    parser.add_argument("--layers", type=int, default=2, help="number of blocks (default 2)")
    parser.add_argument("--d-model", type=int, default=64, help="width (default 64)")
    parser.add_argument("--heads", type=int, default=4, help="attention heads (default 4)")
    parser.add_argument("--kv-heads", type=int, default=None, help="key/value heads (default: --heads)")
    parser.add_argument("--mlp-hidden", type=int, default=None, help="MLP width (default 3 * d_model)")
    parser.add_argument(
        "--vocab", type=int, default=None, help="BPE vocabulary size incl. specials; needs --train-on"
    )
    parser.add_argument("--seed", type=int, default=0, help="weight seed (default 0)")
    parser.add_argument(
        "--train-on",
        nargs="+",
        default=None,
        metavar="PATH",
        help="text files / folders (.py .txt .md .jsonl .jsonl.gz) to fit the BPE tokenizer on",
    )
    parser.add_argument(
        "--modeling-code",
        action="store_true",
        help="also write configuration_llada.py / modeling_llada.py (retrofit's LLaDA code) so the "
        "folder loads with trust_remote_code=True without retrofit, like the official folders",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --out folder")


def run(args: argparse.Namespace) -> int:
    """Write the checkpoint and print a one-line summary; returns 0 (2 on a usage error)."""
    from retrofit.models.tiny import write_tiny_llada

    try:
        out = write_tiny_llada(
            args.out,
            layers=args.layers,
            d_model=args.d_model,
            heads=args.heads,
            kv_heads=args.kv_heads,
            mlp_hidden=args.mlp_hidden,
            vocab_size=args.vocab,
            seed=args.seed,
            train_on=args.train_on,
            overwrite=args.overwrite,
            modeling_code=args.modeling_code,
        )
    except (FileExistsError, FileNotFoundError, ValueError) as e:
        print(f"retrofit tiny-llada: error: {e}")
        return 2
    cfg = json.loads((out / "config.json").read_text())
    shards = len(list(out.glob("model-*.safetensors")))
    code = ", modeling code" if args.modeling_code else ""
    print(
        f"wrote {out}: {cfg['n_layers']} layers, d_model {cfg['d_model']}, {cfg['n_heads']} heads "
        f"({cfg['n_kv_heads']} kv), vocab {cfg['vocab_size']}, mask id {cfg['mask_token_id']}, {shards} shards"
        + code
    )
    return 0
