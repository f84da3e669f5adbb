"""Benchmarks: training-step, sampler and collator throughput and memory (issue #9).

Run `retrofit bench all` (what `make bench` does) or one of `train-step`, `sample`,
`interpolant`; every benchmark prints a table and writes JSON (default `bench-out/`).
`eval/bench/gpu.sh` runs the 8B-shaped variants on one CUDA GPU.
"""

TRAIN_STEP_VARIANTS = ("full-width", "trimmed", "banded", "packed", "mdm")
"""Training-step variants of `retrofit bench train-step` (see `retrofit.bench.train_step`)."""
