"""`retrofit export`: training checkpoint -> merged, verified safetensors folder (issue #5).

Examples:
    retrofit export runs/ift/checkpoint-1000 --out exports/flexmdm-gsm8k
    retrofit export runs/zero3/checkpoint-500 --out exports/llada-only --to-llada --trust-checkpoint
"""

from __future__ import annotations

import argparse
import sys

from retrofit.dtypes import dtype_argument


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `retrofit export`."""
    parser.add_argument("checkpoint", help="training checkpoint folder (with retrofit_checkpoint.json)")
    parser.add_argument("--out", required=True, help="output folder (must not exist unless --overwrite)")
    parser.add_argument("--dtype", type=dtype_argument(allowed=("float32", "bfloat16", "float16")), default="bf16",
                        help="dtype of the written weights: bf16 (default), fp32 or fp16, any spelling "
                        "(bfloat16, float32, ...); the merge itself is fp32")  # fmt: skip
    parser.add_argument("--max-shard-size", default="5GB", help='safetensors shard size, e.g. "5GB", "2GiB"')
    parser.add_argument("--base", default=None,
                        help="base model folder (default: the path in the manifest; its fingerprint must match)")  # fmt: skip
    parser.add_argument("--to-llada", action="store_true",
                        help="write only the backbone as a plain LLaDA checkpoint (official tensor names; the "
                        "base's modeling_llada.py etc. are copied when it has them, else auto_map is dropped)")  # fmt: skip
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an existing --out folder (after success)"
    )
    parser.add_argument("--trust-checkpoint", action="store_true",
                        help="allow pickle-based inputs (DeepSpeed ZeRO shards, adapter_model.bin); "
                        "only for checkpoints from a source you trust")  # fmt: skip
    parser.add_argument("--source", choices=("auto", "adapter", "zero"), default="auto",
                        help="trained tensors from adapter_model.* or from the ZeRO shards (auto: adapter "
                        "safetensors if present, else ZeRO)")  # fmt: skip
    parser.add_argument("--verify", choices=("auto", "full", "layers"), default="auto",
                        help="full: whole-model probe batches (needs ~6 bytes/param of RAM); layers: per-layer "
                        "probes only; auto: full when it fits")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    """Export and print a summary. Returns 0, or 1 with the error on stderr."""
    from retrofit.export.models import ExportError
    from retrofit.export.pipeline import export_checkpoint
    from retrofit.training.checkpoint import CheckpointError

    try:
        report = export_checkpoint(
            args.checkpoint,
            args.out,
            dtype=args.dtype,
            max_shard_size=args.max_shard_size,
            base=args.base,
            to_llada=args.to_llada,
            overwrite=args.overwrite,
            trust_checkpoint=args.trust_checkpoint,
            source=args.source,
            verify=args.verify,
        )
    except (CheckpointError, ExportError, FileExistsError, ValueError) as err:
        print(f"retrofit export: error: {err}", file=sys.stderr)
        return 1
    for folder in report.removed_temp:
        print(f"removed {folder}: temp folder of an earlier export to {report.out} that did not finish")
    for note in report.kept_temp:
        print(f"kept {note}")
    print(f"wrote {report.out} ({report.kind}, {report.dtype}, {report.n_params:,} parameters, "
          f"{len(report.shards)} shard(s))")  # fmt: skip
    if report.modeling_code:
        print(f"copied the base's modeling code ({', '.join(report.modeling_code)}) from "
              f"{report.modeling_code_from}: loads with trust_remote_code=True")  # fmt: skip
    elif report.auto_map_dropped:
        print("dropped config.json auto_map: the base ships no modeling code to copy "
              "(load with `import retrofit.models`; see README.md)")  # fmt: skip
    print(f"verification ({report.mode}):")
    for check, error in report.errors.items():
        tol = report.tolerance.get(check)
        print(f"  {check}: {error:.3g}" + (f" (tolerance {tol:g})" if tol is not None else ""))
    return 0
