"""Numerical checks of an export: per-layer probes and whole-model probe batches.

Two levels (both report the error as max|got - ref| / max(1, max|ref|), "relative-ish"):

- `LayerProbe` (always on, constant memory): for every LoRA-merged weight, seeded probe inputs
  x [n, in] give ref = x W^T + s (x A^T) B^T (the unmerged form); the fp32 merged weight, the
  cast weight written to disk, and the weight re-read from disk must all reproduce it.
- `probe_batch` / `model_outputs` / `compare_outputs`: a fixed batch (seeded token ids, fixed t)
  run through the unmerged peft model and the merged model, comparing logits and expected
  gaps. Used when memory allows holding one fp32 copy of the model (see `retrofit.export.pipeline`).

Tolerances (`TOLERANCE`): fp32 1e-4 (pure rounding of the merge), bf16 3e-2 and fp16 1e-2 for
weights rounded to 8 / 11 mantissa bits (measured errors on tiny models: see tests/export/test_export.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from retrofit.export.sources import LoraDelta

TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 3e-2, torch.float16: 1e-2}


def relative_error(got: torch.Tensor, ref: torch.Tensor) -> float:
    """max|got - ref| / max(1, max|ref|), in fp32 (absolute for small values, relative for large)."""
    got, ref = got.float(), ref.float()
    scale = max(1.0, float(ref.abs().max())) if ref.numel() else 1.0
    return float((got - ref).abs().max()) / scale if ref.numel() else 0.0


def linear_fp32(x: torch.Tensor, weight: torch.Tensor, chunk_elements: int = 1 << 24) -> torch.Tensor:
    """x [n, in] fp32 @ weight [out, in]^T in fp32, upcasting at most `chunk_elements` of the
    weight at a time (no full fp32 copy of a large bf16 weight). Returns [n, out] fp32."""
    rows = max(1, chunk_elements // max(1, weight.shape[1]))
    return torch.cat([F.linear(x, w.float()) for w in weight.split(rows)], dim=1)


@dataclass
class LayerProbe:
    """Per-layer merge check on seeded probe inputs (constant memory in the model size).

    Args:
        n_probe: probe vectors per layer.
        seed: seed of the probe inputs.

    Attributes:
        refs: {exported key: (x [n, in] fp32, ref [n, out] fp32)} of the unmerged forms.
        errors: {stage: max relative error over layers} for stages "merged_fp32", "cast", "disk".
    """

    n_probe: int = 4
    seed: int = 0
    refs: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    errors: dict[str, float] = field(default_factory=dict)

    @torch.no_grad()
    def reference(self, key: str, weight: torch.Tensor, lora: LoraDelta) -> None:
        """Record ref = x W^T + s (x A^T) B^T for the unmerged weight [out, in]."""
        gen = torch.Generator().manual_seed(self.seed + len(self.refs))
        x = torch.randn(self.n_probe, weight.shape[1], generator=gen)  # [n, in]
        lora_path = F.linear(F.linear(x, lora.A.float()), lora.B.float())  # [n, out]
        ref = linear_fp32(x, weight) + lora.scaling * lora_path  # [n, out]
        self.refs[key] = (x, ref)

    @torch.no_grad()
    def check(self, stage: str, key: str, weight: torch.Tensor) -> float:
        """Relative error of x W'^T against the recorded reference; keeps the max per stage."""
        x, ref = self.refs[key]
        err = relative_error(linear_fp32(x, weight), ref)
        self.errors[stage] = max(self.errors.get(stage, 0.0), err)
        return err


def probe_batch(
    vocab_size: int, *, batch: int = 2, length: int = 12, seed: int = 0
) -> dict[str, torch.Tensor]:
    """The fixed probe batch: seeded token ids [batch, length] int64 and times t [batch] in (0, 1)."""
    gen = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(0, vocab_size, (batch, length), generator=gen)
    t = torch.linspace(0.25, 0.75, batch)
    return {"input_ids": input_ids, "t": t}


@torch.no_grad()
def model_outputs(
    model: torch.nn.Module, kind: str, batch: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Run a model (plain or peft-wrapped; call it on `get_base_model()`) on the probe batch.

    Args:
        model: FlexMDMModel (kind "flexmdm") or LLaDAModelLM (kind "llada"), in eval mode.
        kind: "flexmdm" or "llada".
        batch: from `probe_batch`.

    Returns:
        {"logits": [B, L, V] fp32} plus {"expected_gaps": [B, L+1] fp32} for FlexMDM.
    """
    model.eval()
    if kind == "flexmdm":
        out = model(batch["input_ids"], batch["t"])
        return {"logits": out.logits.float(), "expected_gaps": out.expected_gaps.float()}
    return {"logits": model(batch["input_ids"]).logits.float()}


def compare_outputs(got: dict[str, torch.Tensor], ref: dict[str, torch.Tensor]) -> dict[str, float]:
    """{output name: relative error} for every output of `ref` (shapes must agree).

    Raises:
        ValueError: an output is missing or has another shape.
    """
    errors = {}
    for name, value in ref.items():
        if name not in got or got[name].shape != value.shape:
            raise ValueError(
                f"probe output {name!r}: shape {tuple(got.get(name, torch.empty(0)).shape)} != {tuple(value.shape)}"
            )
        errors[name] = relative_error(got[name], value)
        errors[name + "_max_abs"] = float((got[name].float() - value.float()).abs().max())
    return errors
