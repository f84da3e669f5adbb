"""Build DeepSpeed's CPU shared-memory communication op once per machine (used over gloo)."""

import sys

try:
    from deepspeed.ops.op_builder import ShareMemCommBuilder
except Exception as err:  # deepspeed absent (e.g. GPU boxes without it) or renamed builder
    print(f"[setup] deepspeed op builder unavailable: {err}")
    sys.exit(0)

try:
    ShareMemCommBuilder().load(verbose=False)
    print("[setup] DeepSpeed shm_comm op built")
except Exception as err:
    print(f"[setup] DeepSpeed shm_comm op build failed: {err}")
