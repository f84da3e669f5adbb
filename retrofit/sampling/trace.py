"""What the samplers return: :class:`SampleOutput`, the optional step-by-step :class:`Trace`, and
:func:`plot_trace`, a PNG of sequence length and clean-token count against the step (docs/method.md §4.5
recommends logging the length trajectory). matplotlib is imported only when plotting.

Example::

    out = sampler.sample([prompt_ids], generator=torch.Generator().manual_seed(0))
    plot_trace(out.trace, "trace.png")   # needs FlexMDMSamplerConfig(trace=True)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

__all__ = ["SampleOutput", "Trace", "plot_trace"]


@dataclass
class Trace:
    """The canvas at every recorded point of a run (token ids, CPU tensors).

    Attributes:
        times: FlexMDM time of each record (the initial canvas is recorded at t = 0; records
            after the final insertion and the fill are at t = 1).
        canvases: one [B, W_i] int64 tensor per record, trimmed to the longest row at that point.
        lengths: per record, [B] int64 number of real slots n_b.
        num_clean: per record, [B] int64 real slots that are not masks (prompt included).
        labels: per record, what produced it ("init", "step", "final_insert", "fill").
    """

    times: list[float] = field(default_factory=list)
    canvases: list[Tensor] = field(default_factory=list)
    lengths: list[Tensor] = field(default_factory=list)
    num_clean: list[Tensor] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)

    def record(self, t: float, canvas: Tensor, lengths: Tensor, mask_id: int, label: str) -> None:
        """Append the canvas ([B, L] int64; only the first max(lengths) columns are kept)."""
        width = int(lengths.max()) if lengths.numel() else 0
        view = canvas[:, :width].detach().cpu().clone()
        real = torch.arange(width)[None, :] < lengths.cpu()[:, None]
        self.times.append(float(t))
        self.canvases.append(view)
        self.lengths.append(lengths.detach().cpu().clone())
        self.num_clean.append((real & (view != mask_id)).sum(-1))
        self.labels.append(label)

    def sequence(self, record: int, row: int) -> list[int]:
        """Token ids of row ``row`` at record ``record`` (masks included, pads excluded)."""
        return self.canvases[record][row, : int(self.lengths[record][row])].tolist()

    def __len__(self) -> int:
        return len(self.times)


@dataclass
class SampleOutput:
    """Result of a sampler call (FlexMDM or the LLaDA baseline).

    Attributes:
        sequences: per row, all token ids: prompt + generation, or prefix + middle + suffix.
        generated: per row, the generated ids only (the response, or the infilled middle).
        lengths: [B] int64 len(sequences[b]).
        prompt_lengths: [B] int64 protected ids at the front (prompt or prefix).
        suffix_lengths: [B] int64 protected ids at the end (0 unless infilling).
        dropped_insertions: [B] int64 insertions dropped by the max-length cap (0 for LLaDA).
        num_forward_passes: model calls made (a CFG pair counts as one).
        trace: the step-by-step canvases when tracing was requested, else None.
        trunk_positions: positions fed to the model's trunk over the run (summed over rows and
            calls; a prompt-cache call feeds only the live columns). Trunk FLOPs are
            proportional to trunk_positions x n_layers. 0 when the model does not report it.
    """

    sequences: list[list[int]]
    generated: list[list[int]]
    lengths: Tensor
    prompt_lengths: Tensor
    suffix_lengths: Tensor
    dropped_insertions: Tensor
    num_forward_passes: int
    trace: Trace | None = None
    trunk_positions: int = 0


def plot_trace(trace: Trace, path: str | Path, max_rows: int = 8) -> Path:
    """Plot length n and clean-token count against the record index for up to ``max_rows`` rows.

    Args:
        trace: a Trace with at least one record.
        path: output PNG path (parent folders are created).
        max_rows: rows drawn individually; the batch mean is drawn too.

    Returns:
        The written path.

    Raises:
        ValueError: the trace is empty.
    """
    if len(trace) == 0:
        raise ValueError("plot_trace: the trace is empty; sample with trace=True")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lengths = torch.stack(trace.lengths).float()  # [T, B]
    clean = torch.stack(trace.num_clean).float()
    steps = range(len(trace))
    fig, ax = plt.subplots(figsize=(7, 4))
    for b in range(min(max_rows, lengths.shape[1])):
        ax.plot(steps, lengths[:, b], color="tab:blue", alpha=0.25, lw=0.8)
        ax.plot(steps, clean[:, b], color="tab:orange", alpha=0.25, lw=0.8)
    ax.plot(steps, lengths.mean(1), color="tab:blue", lw=2, label="length n (mean)")
    ax.plot(steps, clean.mean(1), color="tab:orange", lw=2, label="clean tokens (mean)")
    ax.set_xlabel("record (0 = initial canvas, then one per step)")
    ax.set_ylabel("tokens")
    ax.legend(loc="upper left")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
