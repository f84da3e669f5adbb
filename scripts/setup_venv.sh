#!/usr/bin/env bash
# Create the project venv and install retrofit (+ dev extras).
# On a machine whose Python already has a CUDA build of torch, the venv reuses it (system site
# packages) and torch is left alone; otherwise torch 2.13.x is installed first, which on our
# CPU machines is the local CPU wheel (no multi-GB CUDA download).
set -euo pipefail
PY=${1:-python3}
VENV=${2:-.venv}
if "$PY" -c 'import torch, sys; sys.exit(0 if torch.version.cuda else 1)' 2>/dev/null; then
  echo "[setup] CUDA torch found in $PY: reusing it"
  "$PY" -m venv --system-site-packages "$VENV"
else
  "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q "torch==2.13.*"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q -e ".[dev]"
"$VENV/bin/python" -m pip check || true
# DeepSpeed JIT-builds a CPU shared-memory op on first use (~1-2 min); build it once here so
# tests and the demo do not pay for it (skipped where deepspeed or a compiler is missing).
"$VENV/bin/python" scripts/prebuild_deepspeed_ops.py || echo "[setup] DeepSpeed CPU op not prebuilt (optional)"
echo "[setup] done: $("$VENV/bin/python" -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)')"
