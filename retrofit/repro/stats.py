"""Small confidence-interval helpers shared by the synthetic reproduction tasks.

Pure Python + numpy, deterministic given a seed. Three helpers:

- `wilson_interval(successes, n)`: 95% Wilson score interval of a binomial proportion.
- `bootstrap_interval(values, statistic)`: percentile bootstrap interval of any statistic of a
  sample (seeded with `numpy.random.default_rng(seed)`, never the global RNG).
- `mean_interval(values)`: normal-approximation interval of a mean, clipped to the observed range.

Example:
    >>> lo, hi = wilson_interval(3, 4)
    >>> round(lo, 4), round(hi, 4)
    (0.3006, 0.9544)
    >>> mean_interval([1.0, 1.0, 1.0])
    (1.0, 1.0)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion.

    Args:
        successes: Number of successes, 0 <= successes <= n.
        n: Number of trials, >= 0. With n == 0 nothing is known and (0.0, 1.0) is returned.
        z: Normal quantile (1.96 for a 95% interval), > 0.

    Returns:
        (lo, hi) with 0 <= lo <= successes / n <= hi <= 1.

    Raises:
        ValueError: If n < 0, successes is outside [0, n] or z <= 0.
    """
    if n < 0:
        raise ValueError(f"wilson_interval: n must be >= 0, got {n}")
    if not 0 <= successes <= n:
        raise ValueError(f"wilson_interval: successes must be in [0, n={n}], got {successes}")
    if not z > 0:
        raise ValueError(f"wilson_interval: z must be > 0, got {z}")
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1.0 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1.0 - p) / n + z * z / (4 * n * n)) / denom
    lo = 0.0 if successes == 0 else max(0.0, center - half)
    hi = 1.0 if successes == n else min(1.0, center + half)
    return lo, hi


def bootstrap_interval(
    values: Sequence[float] | np.ndarray,
    statistic: Callable[[np.ndarray], float],
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap interval of `statistic` over resamples (with replacement) of `values`.

    Args:
        values: The sample (1-D); converted with `numpy.asarray`.
        statistic: Maps a resampled 1-D array (same length as `values`) to a float.
        n_boot: Number of resamples, >= 1.
        seed: Seed of `numpy.random.default_rng`; the same seed gives the same resamples.
        level: Coverage of the interval, in (0, 1).

    Returns:
        (lo, hi): the (1 - level) / 2 and (1 + level) / 2 percentiles of the resampled statistic.

    Raises:
        ValueError: If values is empty or not 1-D, n_boot < 1 or level is outside (0, 1).
    """
    arr = np.asarray(values)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(
            f"bootstrap_interval: values must be a non-empty 1-D sequence, got shape {arr.shape}"
        )
    if n_boot < 1:
        raise ValueError(f"bootstrap_interval: n_boot must be >= 1, got {n_boot}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"bootstrap_interval: level must be in (0, 1), got {level}")
    rng = np.random.default_rng(seed)
    stats = np.empty(n_boot, dtype=np.float64)
    for i in range(n_boot):
        stats[i] = float(statistic(arr[rng.integers(0, arr.size, size=arr.size)]))
    tail = 100.0 * (1.0 - level) / 2.0
    lo, hi = np.percentile(stats, [tail, 100.0 - tail])
    return float(lo), float(hi)


def mean_interval(values: Sequence[float], z: float = 1.96) -> tuple[float, float]:
    """Normal-approximation interval of a mean: mean +- z * std / sqrt(n), std with ddof=1.

    The interval is clipped to [min(values), max(values)] (the mean cannot leave the observed
    range, and e.g. a non-negative error never gets a negative bound). A single value gives
    (value, value).

    Args:
        values: Non-empty sample of finite numbers.
        z: Normal quantile (1.96 for a 95% interval), > 0.

    Returns:
        (lo, hi) around the sample mean.

    Raises:
        ValueError: If values is empty or holds NaN/inf, or z <= 0.
    """
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    if arr.size == 0:
        raise ValueError("mean_interval: values is empty")
    if not np.all(np.isfinite(arr)):
        raise ValueError("mean_interval: values contains NaN or inf")
    if not z > 0:
        raise ValueError(f"mean_interval: z must be > 0, got {z}")
    mean = float(arr.mean())
    if arr.size == 1:
        return mean, mean
    half = z * float(arr.std(ddof=1)) / math.sqrt(arr.size)
    return max(float(arr.min()), mean - half), min(float(arr.max()), mean + half)
