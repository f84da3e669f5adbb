"""Token-head benchmark: peak memory and time of the LM head + cross-entropy at the masked slots (#15 item 3).

One timed call = forward + backward of ``loss = (w * ce).sum()`` where
``ce = retrofit.models.token_head.token_cross_entropy(head, states, targets, chunk)`` is the float32
per-slot cross-entropy of ``head(states)`` and ``w`` are per-slot ELBO weights (1 / t-like,
float32), as in `retrofit.training.objective` (docs/method.md §3.2). ``head`` is an
``nn.Linear(d_model, vocab, bias=False)`` in the model dtype, ``states`` [N, d_model] (model dtype)
require grad; the head's weight is frozen (the base head under LoRA) unless ``head_grad``.

Variants: ``plain`` (chunk 0: one call, the path of the trainer before #15: N x V logits, the
float32 log-probabilities kept for backward) and ``chunk-C`` (C slots per call under non-reentrant
checkpointing: nothing of size V kept, backward recomputes one chunk's logits at a time). Plain
always runs first: it is the reference of the agreement check (loss and gradients), which raises
if a chunked variant disagrees beyond the dtype's tolerance.

Memory (MiB) per variant: ``peak_mib`` / ``transient_mib`` from `retrofit.bench.common.peak_memory`
(CUDA: max_memory_allocated, absolute / above the head weight + inputs; CPU: peak RSS above the
start, sampled every 5 ms, which can miss peaks shorter than that), ``saved_mib``: bytes autograd
keeps from forward to backward beyond the inputs (measured exactly with saved-tensor hooks), and
the analytic ``analytic_saved_mib`` / ``analytic_peak_mib`` (see `analytic_bytes`).

Default shape: LLaDA-8B (vocab 126,464, d_model 4096), N = 1229 masked slots (~30 % of
4 x 1024 positions).

    retrofit bench token-head --device cuda --dtype bf16 --chunks 256 512 1024
    retrofit bench token-head --device cpu --dtype fp32 --warmup 0 --repeats 1
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import torch

from retrofit.bench.common import (
    format_table,
    machine_info,
    peak_memory,
    release_memory,
    resolve_dtype,
    summarize,
    time_once,
    torch_threads,
)
from retrofit.models.token_head import token_cross_entropy

__all__ = [
    "COLUMNS",
    "TokenHeadOptions",
    "analytic_bytes",
    "compare_paths",
    "print_token_head",
    "run_token_head",
]

LLADA_VOCAB = 126_464
LLADA_D_MODEL = 4096
LLADA_SLOTS = round(0.3 * 4 * 1024)
"""~30 % masked of a 4 x 1024-position micro-batch: 1229 slots."""

TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 2e-2}
"""Relative tolerance of the agreement check (|diff| / max |reference|) per model dtype: the head's
GEMM on fewer rows may round differently (last bit in fp32; one bf16 rounding of a logit in bf16)."""

COLUMNS = [
    "variant", "median_s", "spread_pct", "cpu_s", "peak_mib", "transient_mib", "saved_mib",
    "analytic_saved_mib", "analytic_peak_mib", "transient_vs_plain", "time_vs_plain",
    "max_abs_diff_loss", "max_abs_diff_grad",
]  # fmt: skip


@dataclass
class TokenHeadOptions:
    """Settings of the token-head benchmark (see the module docstring).

    Attributes:
        device: "cpu" | "cuda" | "cuda:0" ... dtype: "fp32" | "bf16" (head weight and states).
        slots: N, masked slots (rows of the head). vocab: V. d_model: D.
        chunks: slots per call of the chunked variants (0 = plain; plain always runs first).
        head_grad: also compute the head weight's gradient (full head training instead of LoRA).
        warmup, repeats: untimed and timed calls per variant.
        threads: torch CPU threads (None = unchanged). seed: seed of the weights and inputs.
    """

    device: str = "cpu"
    dtype: str = "fp32"
    slots: int = LLADA_SLOTS
    vocab: int = LLADA_VOCAB
    d_model: int = LLADA_D_MODEL
    chunks: tuple[int, ...] = (256, 512, 1024)
    head_grad: bool = False
    warmup: int = 1
    repeats: int = 3
    threads: int | None = None
    seed: int = 0

    def validate(self) -> None:
        """Raise ValueError naming the option if a value is invalid."""
        for name in ("slots", "d_model", "repeats"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.vocab < 2:
            raise ValueError(f"--vocab must be >= 2, got {self.vocab}")
        if self.warmup < 0:
            raise ValueError(f"--warmup must be >= 0, got {self.warmup}")
        bad = [c for c in self.chunks if c < 0]
        if bad:
            raise ValueError(f"--chunks must be >= 0 (0 = plain), got {bad}")
        resolve_dtype(self.dtype)

    def chunk_sizes(self) -> list[int]:
        """0 (plain) first, then the distinct positive chunk sizes in ascending order."""
        return [0, *sorted({c for c in self.chunks if c > 0})]


def analytic_bytes(slots: int, vocab: int, chunk: int) -> dict[str, int]:
    """Bytes of the [rows, V] logit buffers of one forward + backward of the token head + CE.

    rows = N for the plain path (chunk 0 or chunk >= N), else the chunk. Per logit row and
    vocabulary entry, independent of the model dtype:

    * ``saved``: kept by autograd from forward to backward: the float32 log-probabilities of
      ``log_softmax`` (4 bytes) on the plain path; 0 on the chunked path (only the [N, D] states,
      which exist anyway). The model-dtype logits are not kept: the backward of the float32 cast
      needs no tensor.
    * ``peak``: 12 x rows x V, the logit buffers alive at once in backward: the saved float32
      log-probabilities, their gradient from ``nll_loss`` and the gradient of the logits from
      ``log_softmax`` (4 bytes each). The forward holds at most 8 (fp32 logits + log-probs; in
      bf16 the 2-byte logits and their float32 copy, then the float32 logits + log-probs).

    Raises:
        ValueError: slots < 1, vocab < 1 or chunk < 0.
    """
    if slots < 1 or vocab < 1 or chunk < 0:
        raise ValueError(f"need slots >= 1, vocab >= 1, chunk >= 0; got {slots}, {vocab}, {chunk}")
    plain = chunk == 0 or chunk >= slots
    rows = slots if plain else chunk
    return {"rows": rows, "saved": 4 * slots * vocab if plain else 0, "peak": 12 * rows * vocab}


def _inputs(opts: TokenHeadOptions) -> dict[str, Any]:
    """Head (weights ~ N(0, 1/D)), states ~ N(0, 1) requiring grad, targets, ELBO weights 1/t."""
    device, dtype = torch.device(opts.device), resolve_dtype(opts.dtype)
    torch.manual_seed(opts.seed)
    head = torch.nn.utils.skip_init(
        torch.nn.Linear, opts.d_model, opts.vocab, bias=False, device=device, dtype=dtype
    )
    with torch.no_grad():
        head.weight.normal_(0.0, opts.d_model**-0.5)
    head.weight.requires_grad_(opts.head_grad)
    states = torch.randn(opts.slots, opts.d_model, device=device, dtype=dtype).requires_grad_(True)
    targets = torch.randint(0, opts.vocab, (opts.slots,), device=device)
    t = torch.empty(opts.slots, device=device).uniform_(0.05, 1.0)
    return {"head": head, "states": states, "targets": targets, "weights": 1.0 / t}


def _grads(inputs: dict[str, Any]) -> list[torch.Tensor]:
    head = inputs["head"]
    return [inputs["states"].grad] + ([head.weight.grad] if head.weight.requires_grad else [])


def _zero_grads(inputs: dict[str, Any]) -> None:
    inputs["states"].grad = None
    inputs["head"].weight.grad = None


def _step(inputs: dict[str, Any], chunk: int, saved: dict[int, int] | None = None) -> torch.Tensor:
    """Forward + backward of (w * ce).sum(); returns the detached loss. ``saved`` collects the
    storages (data pointer -> bytes) autograd saves in forward, other than the inputs'."""
    resident = {
        t.untyped_storage().data_ptr()
        for t in (inputs["head"].weight, inputs["states"], inputs["targets"], inputs["weights"])
    }

    def pack(t: torch.Tensor) -> torch.Tensor:
        if saved is not None and t.untyped_storage().data_ptr() not in resident:
            saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        ce = token_cross_entropy(inputs["head"], inputs["states"], inputs["targets"], chunk or None)
        loss = (inputs["weights"] * ce).sum()
    loss.backward()
    return loss.detach()


def _max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.float() - b.float()).abs().max().item()


def compare_paths(inputs: dict[str, Any], chunk: int) -> dict[str, float]:
    """Loss and gradients of the plain and the chunked path on the same inputs (no timing).

    Returns:
        {"loss": plain loss, "max_abs_diff_loss", "max_abs_diff_grad" (over the states' and, with
        a trainable head, the weight's gradient), "max_abs_grad" (of the plain gradients)}.
    """
    _zero_grads(inputs)
    loss = _step(inputs, 0)
    reference = [g.clone() for g in _grads(inputs)]
    _zero_grads(inputs)
    chunked = _step(inputs, chunk)
    grads = _grads(inputs)
    _zero_grads(inputs)
    return {
        "loss": loss.item(),
        "max_abs_diff_loss": abs(loss.item() - chunked.item()),
        "max_abs_diff_grad": max(_max_abs_diff(a, b) for a, b in zip(reference, grads)),
        "max_abs_grad": max(g.abs().max().item() for g in reference),
    }


def _measure(inputs: dict[str, Any], chunk: int, opts: TokenHeadOptions, log) -> dict[str, Any]:
    """Time and memory of one variant: warmup calls, then `repeats` timed calls."""
    device = torch.device(opts.device)
    for _ in range(opts.warmup):
        _zero_grads(inputs)
        _step(inputs, chunk)
    times, cpu, peaks, transients, saved_bytes, loss = [], [], [], [], [], None
    for _ in range(opts.repeats):
        _zero_grads(inputs)
        release_memory(device)
        saved: dict[int, int] = {}
        cpu_start = time.process_time()
        out: list[torch.Tensor] = []
        with peak_memory(device) as mem:
            seconds = time_once(lambda saved=saved, out=out: out.append(_step(inputs, chunk, saved)), device)
        loss = out[0]
        cpu.append(time.process_time() - cpu_start)
        times.append(seconds)
        peaks.append(mem["peak_mib"])
        transients.append(mem["transient_mib"])
        saved_bytes.append(sum(saved.values()))
        log(f"  token-head chunk {chunk}: {seconds:.3f} s, transient {mem['transient_mib']:.0f} MiB")
    return {
        **summarize(times),
        "cpu_s": sorted(cpu)[len(cpu) // 2],
        "peak_mib": max(peaks),
        "transient_mib": max(transients),
        "memory_kind": mem["kind"],
        "saved_mib": max(saved_bytes) / 2**20,
        "loss": loss.item(),
    }


def run_token_head(opts: TokenHeadOptions, log=print) -> dict[str, Any]:
    """Run plain and every chunked variant; returns the JSON payload.

    Raises:
        ValueError: invalid options. RuntimeError: a chunked variant's loss or gradients differ
            from the plain path's beyond `TOLERANCE` (relative to the plain values).
    """
    opts.validate()
    dtype = resolve_dtype(opts.dtype)
    rows = []
    with torch_threads(opts.threads):
        machine = machine_info(opts.device)
        start = time.perf_counter()
        inputs = _inputs(opts)
        log(f"  token-head: head [{opts.vocab}, {opts.d_model}] {opts.dtype} on {opts.device}, "
            f"{opts.slots} slots ({time.perf_counter() - start:.0f} s to build)")  # fmt: skip
        reference: list[torch.Tensor] = []
        plain_loss = None
        for chunk in opts.chunk_sizes():
            row: dict[str, Any] = {"variant": f"chunk-{chunk}" if chunk else "plain", "chunk": chunk}
            row.update(_measure(inputs, chunk, opts, log))
            grads = _grads(inputs)
            if chunk == 0:
                reference, plain_loss = [g.clone() for g in grads], row["loss"]
                row.update(max_abs_diff_loss=0.0, max_abs_diff_grad=0.0)
            else:
                row["max_abs_diff_loss"] = abs(row["loss"] - plain_loss)
                row["max_abs_diff_grad"] = max(_max_abs_diff(a, b) for a, b in zip(reference, grads))
                _check(row, plain_loss, reference, dtype)
            _zero_grads(inputs)
            analytic = analytic_bytes(opts.slots, opts.vocab, chunk)
            row.update(
                logit_rows=analytic["rows"],
                analytic_saved_mib=analytic["saved"] / 2**20,
                analytic_peak_mib=analytic["peak"] / 2**20,
            )
            rows.append(row)
        del inputs, reference
    release_memory(opts.device)
    plain = rows[0]
    for row in rows:
        row["transient_vs_plain"] = row["transient_mib"] / max(plain["transient_mib"], 1e-9)
        row["time_vs_plain"] = row["median_s"] / plain["median_s"]
    return {
        "benchmark": "token-head",
        "machine": machine,
        "options": asdict(opts),
        "variants": rows,
        "notes": [
            "one call = forward + backward of (w * ce).sum(), ce = float32 CE of head(states) at N slots, "
            "w = per-slot ELBO weights; head weight frozen unless head_grad",
            "peak_mib / transient_mib: CUDA max_memory_allocated (absolute / above the start: head weight "
            "and inputs excluded); CPU: peak RSS above the start sampled every 5 ms (may miss short peaks)",
            "saved_mib: bytes autograd keeps from forward to backward beyond the inputs (saved-tensor hooks)",
            "analytic_saved_mib = 4 N V bytes (float32 log-probs) plain, 0 chunked; analytic_peak_mib = "
            "12 rows V bytes (saved log-probs + their gradient + the logits' gradient), rows = N or chunk",
            "chunked backward recomputes the head GEMM: 3 GEMMs instead of 2 with a frozen head (4 vs 3 "
            "with head_grad), so expect time_vs_plain up to ~1.5 where the GEMM dominates",
            "max_abs_diff_*: chunked vs plain on the same inputs (raises beyond the dtype's tolerance)",
        ],
    }


def _check(row: dict[str, Any], plain_loss: float, reference: list[torch.Tensor], dtype: torch.dtype) -> None:
    """Raise RuntimeError if the chunked row disagrees with the plain path beyond the tolerance."""
    tol = TOLERANCE.get(dtype, 1e-4)
    scale_grad = max(g.abs().max().item() for g in reference)
    if (
        row["max_abs_diff_loss"] > tol * max(abs(plain_loss), 1e-12)
        or row["max_abs_diff_grad"] > tol * scale_grad
    ):
        raise RuntimeError(
            f"token-head {row['variant']}: chunked and plain paths disagree: |loss diff| "
            f"{row['max_abs_diff_loss']:.3g} (loss {plain_loss:.6g}), max |grad diff| "
            f"{row['max_abs_diff_grad']:.3g} (max |grad| {scale_grad:.3g}); relative tolerance {tol}"
        )


def print_token_head(payload: dict[str, Any], log=print) -> None:
    """Print the headline and the table of a token-head payload."""
    m, o = payload["machine"], payload["options"]
    log(f"== token-head: device={o['device']} dtype={o['dtype']} slots={o['slots']} vocab={o['vocab']} "
        f"d_model={o['d_model']} head_grad={o['head_grad']} repeats={o['repeats']} "
        f"(torch {m['torch']}, {m['threads']} threads, load {m.get('loadavg', '?')}, {m.get('gpu', m['device'])})")  # fmt: skip
    shown = [  # whole MiB where 3 significant digits would print 1.8e+03
        {
            k: round(v) if k.endswith("_mib") and isinstance(v, float) and abs(v) >= 1000 else v
            for k, v in r.items()
        }
        for r in payload["variants"]
    ]
    log(format_table(shown, COLUMNS))
    log(f"memory: {payload['variants'][0]['memory_kind']}; saved = autograd-saved bytes beyond the inputs")
