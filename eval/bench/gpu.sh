#!/usr/bin/env bash
# retrofit benchmarks on ONE CUDA GPU (H100/H200 class), < 8 min, no network, nothing installed.
#
#   bash eval/bench/gpu.sh [OUT_DIR]          # default OUT_DIR = bench-out/gpu
#
# Runs, printing timings as it goes:
#   1. train-step on the LLaDA-8B shape cut to $LAYERS blocks (bf16 weights, fp32 LoRA / graft
#      modules, bf16 autocast, SDPA attention), canvas 1024, B=4 x G=4 micro-steps, variants
#      full-width / trimmed / banded / packed (data.packing: documents side by side, FlexAttention
#      document mask) / mdm, gradient checkpointing on, then off;
#   2. the same with GSM8K-length x1 if $RETROFIT_DATA_DIR holds gsm8k/train.jsonl;
#   3. the sampler benchmark (FlexMDM trimmed / full-length vs the LLaDA sampler, equal steps);
#   4. fast sampling on the GSM8K shape (random weights, 900-token prompts, 256 generated), FlexMDM
#      and LLaDA: exact 256 steps vs 64 steps + unmask threshold 0.9 + prompt cache (refresh 4):
#      trunk FLOPs, wall-time ratio, token agreement (of an untrained model).
#   5. the token head (LM head + float32 CE at the masked slots, ELBO-weighted) at the LLaDA-8B
#      shape: head [126464, 4096] bf16, N = 30 % of BATCH x CANVAS slots (1229): peak memory and
#      time of forward + backward, plain vs chunks of $HEAD_CHUNKS slots (#15 item 3).
# Reports x1 tokens/s/GPU, peak memory per variant (its resident weights + optimizer state + the
# transient peak of its step, from torch.cuda.max_memory_allocated; variants are interleaved) and
#   MFU = 4 * (N_trunk * positions + N_head * logit_rows) / (step time * 989e12)
# i.e. model FLOPs 2N (forward) + 2N (activation backward; the frozen base gets no weight
# gradients under LoRA, so 4N instead of full fine-tuning's 6N) per position, N_trunk = block
# parameters, LM head only at the masked slots; 989 TFLOP/s = H100/H200 bf16 dense peak;
# attention-score FLOPs are not counted. JSON per run in OUT_DIR.
#
# Knobs (env): LAYERS=8 CANVAS=1024 BATCH=4 ACCUM=4 REPEATS=5 STEPS=64 PYTHON=python;
#   token head: HEAD_SLOTS (default 30 % of BATCH x CANVAS), HEAD_VOCAB / HEAD_DMODEL / HEAD_CHUNKS
#   (SIZE=8b: 126464 / 4096 / "256 512 1024"; else a small shape 512 / 64 / "16 32").
# Dry run without a GPU: DEVICE=cpu SIZE=tiny DTYPE=fp32 CANVAS=64 STEPS=8 bash eval/bench/gpu.sh
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
OUT=${1:-bench-out/gpu}
PY=${PYTHON:-python}
DEVICE=${DEVICE:-cuda}
SIZE=${SIZE:-8b}
DTYPE=${DTYPE:-bf16}
LAYERS=${LAYERS:-8}
CANVAS=${CANVAS:-1024}
BATCH=${BATCH:-4}
ACCUM=${ACCUM:-4}
REPEATS=${REPEATS:-5}
STEPS=${STEPS:-64}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"   # run from the checkout; never pip install
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1

START=$SECONDS
say() { echo "[gpu.sh +$((SECONDS - START)) s] $*"; }

say "checking torch / CUDA / imports"
"$PY" - "$DEVICE" <<'PY'
import sys

import torch

device = sys.argv[1]
if device != "cpu" and not torch.cuda.is_available():
    sys.exit("gpu.sh: torch sees no CUDA GPU (torch %s); for a dry run set DEVICE=cpu SIZE=tiny" % torch.__version__)
import peft, transformers  # noqa: E401,F401  (fail here, not mid-benchmark)
import retrofit.bench.train_step  # noqa: F401

gpu = torch.cuda.get_device_name(0) if device != "cpu" else "cpu"
print(f"torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}, {gpu}")
PY

MODEL=(--size "$SIZE" --device "$DEVICE" --dtype "$DTYPE")
[ "$SIZE" = 8b ] && MODEL+=(--layers "$LAYERS")
TRAIN=(train-step "${MODEL[@]}" --canvas "$CANVAS" --batch "$BATCH" --accum "$ACCUM" --warmup 1 --repeats "$REPEATS" --out "$OUT")

for CKPT in on off; do
  say "train-step, full-length x1, gradient checkpointing $CKPT"
  "$PY" -m retrofit.bench "${TRAIN[@]}" --lengths full --grad-ckpt "$CKPT" --name "train-step-$SIZE-full-ckpt-$CKPT"
done

if [ -f "${RETROFIT_DATA_DIR:-/nonexistent}/gsm8k/train.jsonl" ]; then
  say "train-step, GSM8K-length x1, gradient checkpointing on"
  "$PY" -m retrofit.bench "${TRAIN[@]}" --lengths gsm8k --grad-ckpt on --name "train-step-$SIZE-gsm8k-ckpt-on"
else
  say "skipping the GSM8K-length run: RETROFIT_DATA_DIR has no gsm8k/train.jsonl"
fi

say "sampler: FlexMDM trimmed / full-length vs LLaDA, $STEPS steps"
"$PY" -m retrofit.bench sample "${MODEL[@]}" --prompts 8 --prompt-length $((CANVAS / 8)) --max-length "$CANVAS" \
  --steps "$STEPS" --warmup 1 --repeats 2 --out "$OUT" --name "sample-$SIZE"

for KIND in flexmdm llada; do
  say "fast sampling, GSM8K shape ($KIND, 900-token prompts, 256 generated): exact 256 steps vs threshold + prompt cache"
  "$PY" -m retrofit.bench sample --workload gsm8k --kind "$KIND" "${MODEL[@]}" --prompts 4 \
    --settings exact-256 fast-64 --out "$OUT" --name "workload-$KIND-$SIZE"
done

if [ "$SIZE" = 8b ]; then HEAD_DEFAULTS=(126464 4096 "256 512 1024"); else HEAD_DEFAULTS=(512 64 "16 32"); fi
HEAD_SLOTS=${HEAD_SLOTS:-$(((BATCH * CANVAS * 3 + 5) / 10))}
HEAD_VOCAB=${HEAD_VOCAB:-${HEAD_DEFAULTS[0]}}
HEAD_DMODEL=${HEAD_DMODEL:-${HEAD_DEFAULTS[1]}}
HEAD_CHUNKS=${HEAD_CHUNKS:-${HEAD_DEFAULTS[2]}}
say "token head: $HEAD_SLOTS slots x vocab $HEAD_VOCAB (d_model $HEAD_DMODEL), plain vs chunks $HEAD_CHUNKS"
# shellcheck disable=SC2086  # HEAD_CHUNKS is a list of numbers
"$PY" -m retrofit.bench token-head --device "$DEVICE" --dtype "$DTYPE" --slots "$HEAD_SLOTS" --vocab "$HEAD_VOCAB" \
  --d-model "$HEAD_DMODEL" --chunks $HEAD_CHUNKS --warmup 1 --repeats "$REPEATS" --out "$OUT" --name "token-head-$SIZE"

say "summary (x1 tokens/s/GPU, MFU, peak memory)"
"$PY" - "$OUT" <<'PY'
import json
import sys
from pathlib import Path

for path in sorted(Path(sys.argv[1]).glob("train-step-*.json")):
    payload = json.loads(path.read_text())
    banded = next((r for r in payload["variants"] if r["variant"] == "banded"), None)
    for r in payload["variants"]:
        mfu = "-" if r["mfu"] is None else f"{100 * r['mfu']:.1f}%"
        vs_banded = f"  x{r['x1_tokens_per_s'] / banded['x1_tokens_per_s']:.2f} vs banded" if banded else ""
        print(f"{path.stem:34s} {r['variant']:10s} {r['x1_tokens_per_s']:10.0f} x1 tok/s/GPU  "
              f"MFU {mfu:>6s}  peak {r['peak_mib'] / 1024:6.1f} GiB  x{r['ratio_vs_full_width']:.2f} vs full-width"
              f"{vs_banded}  computed {r['computed_fraction']:.3f}")
for path in sorted(Path(sys.argv[1]).glob("sample-*.json")):
    ratios = json.loads(path.read_text())["ratios"]
    print(path.stem, ", ".join(f"{k} {v:.2f}" for k, v in ratios.items()))
for path in sorted(Path(sys.argv[1]).glob("workload-*.json")):
    for r in json.loads(path.read_text())["rows"]:
        print(f"{path.stem:28s} {r['setting']:10s} x{r['flops_reduction']:.1f} trunk FLOPs, x{r['wall_time_ratio']:.1f} wall, "
              f"agreement {r['token_agreement']:.3f}")
PY
say "done in $((SECONDS - START)) s; JSON in $OUT"
