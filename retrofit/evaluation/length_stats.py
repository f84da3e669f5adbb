"""Length statistics of generated vs reference samples (docs/method.md §6.4, "Length statistics").

`length_metrics` compares two samples of sequence lengths (in tokens) with the 1-Wasserstein
distance and the two-sample Kolmogorov-Smirnov statistic (same values as
`scipy.stats.wasserstein_distance` and `scipy.stats.ks_2samp(...).statistic`, computed here in
numpy); `plot_length_histograms` draws the data and several models on one PNG.

Example:
    >>> m = length_metrics(model_lengths=[10, 12, 30], data_lengths=[11, 12, 25, 40])
    >>> m["wasserstein1"], round(m["ks"], 4)
    (5.5, 0.3333)
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np


def _as_lengths(values: Sequence[float], name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    if arr.size == 0:
        raise ValueError(f"length_metrics: {name} is empty")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"length_metrics: {name} contains NaN or inf")
    return arr


def _cdfs(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Both empirical CDFs at every distinct value of the pooled sample (sorted) -> (grid, Fa, Fb)."""
    grid = np.unique(np.concatenate([a, b]))  # [G]
    fa = np.searchsorted(np.sort(a), grid, side="right") / a.size  # [G]
    fb = np.searchsorted(np.sort(b), grid, side="right") / b.size  # [G]
    return grid, fa, fb


def wasserstein1(a: Sequence[float], b: Sequence[float]) -> float:
    """1-Wasserstein distance between two empirical distributions: integral of |F_a - F_b|.

    Args:
        a, b: 1-D samples (e.g. lengths in tokens); non-empty, finite.

    Returns:
        W1 in the units of the samples (tokens).
    """
    grid, fa, fb = _cdfs(_as_lengths(a, "a"), _as_lengths(b, "b"))
    return float(np.sum(np.abs(fa - fb)[:-1] * np.diff(grid)))


def ks_statistic(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sample Kolmogorov-Smirnov statistic sup_x |F_a(x) - F_b(x)|, in [0, 1]."""
    _, fa, fb = _cdfs(_as_lengths(a, "a"), _as_lengths(b, "b"))
    return float(np.max(np.abs(fa - fb)))


def length_metrics(model_lengths: Sequence[float], data_lengths: Sequence[float]) -> dict[str, float]:
    """Summary of generated lengths against reference lengths.

    Args:
        model_lengths: lengths of generated samples, shape [N] (tokens).
        data_lengths: lengths of reference data, shape [M] (tokens).

    Returns:
        dict with mean, std (population, ddof=0), n, data_mean, data_std, data_n,
        wasserstein1 (tokens) and ks (KS statistic in [0, 1]).

    Raises:
        ValueError: if either sample is empty or not finite.
    """
    model = _as_lengths(model_lengths, "model_lengths")
    data = _as_lengths(data_lengths, "data_lengths")
    return {
        "mean": float(model.mean()),
        "std": float(model.std()),
        "n": int(model.size),
        "data_mean": float(data.mean()),
        "data_std": float(data.std()),
        "data_n": int(data.size),
        "wasserstein1": wasserstein1(model, data),
        "ks": ks_statistic(model, data),
    }


def _bin_edges(pooled: np.ndarray, bins: int) -> np.ndarray:
    """At most `bins` shared bins; integer lengths get integer-wide bins centred on integers."""
    if not np.all(pooled == np.round(pooled)):
        return np.histogram_bin_edges(pooled, bins=bins)
    lo, hi = pooled.min(), pooled.max()
    width = max(1.0, np.ceil((hi - lo + 1) / bins))
    return np.arange(lo - 0.5, hi + width, width)


def plot_length_histograms(
    data_lengths: Sequence[float],
    model_lengths: Mapping[str, Sequence[float]],
    path: str | os.PathLike,
    *,
    bins: int = 40,
    title: str = "Sample lengths",
) -> Path:
    """Overlay the length histograms of the data and of several models in one PNG.

    Uses matplotlib's object API with the Agg canvas (imported lazily; no pyplot, no global
    backend change). All histograms share the same bins and are normalised to densities.

    Args:
        data_lengths: reference lengths (tokens), drawn filled.
        model_lengths: `{label: lengths}`, each drawn as a step outline with its mean in the label.
        path: output file (parent folders are created).
        bins: number of shared bins over the pooled range.
        title: axes title.

    Returns:
        The written path.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    data = _as_lengths(data_lengths, "data_lengths")
    models = {name: _as_lengths(v, f"model_lengths[{name!r}]") for name, v in model_lengths.items()}
    pooled = np.concatenate([data, *models.values()])
    edges = _bin_edges(pooled, bins)
    fig = Figure(figsize=(7, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.hist(data, bins=edges, density=True, alpha=0.35, color="gray", label=f"data (mean {data.mean():.1f})")
    for name, lengths in models.items():
        ax.hist(
            lengths,
            bins=edges,
            density=True,
            histtype="step",
            linewidth=1.5,
            label=f"{name} (mean {lengths.mean():.1f})",
        )
    ax.set_xlabel("length (tokens)")
    ax.set_ylabel("density")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png")
    return out
