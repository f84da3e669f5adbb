"""pass@k and standard errors (docs/method.md §6.2, "Metric").

`pass_at_k(n, c, k)` is the unbiased estimator of Chen et al. (2021),
1 - C(n-c, k) / C(n, k), evaluated in the stable product form
1 - prod_{i=n-c+1}^{n} (1 - k / i), vectorised over tasks. With one sample per task it is c/n.

Example:
    >>> pass_at_k([5, 5], [0, 2], 2)
    array([0. , 0.7])
    >>> mean_and_stderr([1, 0, 1, 1])
    (0.75, 0.25)
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np


def pass_at_k(n, c, k: int):
    """Unbiased pass@k per task: 1 - C(n-c, k) / C(n, k) (docs/method.md §6.2).

    Args:
        n: samples per task; int or int array of shape [T].
        c: correct samples per task; int or int array broadcastable with `n`.
        k: the k of pass@k, 1 <= k <= min(n).

    Returns:
        float (scalar inputs) or float64 array of the broadcast shape [T], each in [0, 1].
        Tasks with n - c < k give exactly 1.0.

    Raises:
        ValueError: if some c < 0, c > n, k < 1 or k > n.
    """
    n_arr, c_arr = np.broadcast_arrays(np.asarray(n, dtype=np.int64), np.asarray(c, dtype=np.int64))
    if np.any(c_arr < 0) or np.any(c_arr > n_arr):
        raise ValueError(f"pass_at_k needs 0 <= c <= n for every task, got n={n}, c={c}")
    if k < 1 or np.any(k > n_arr):
        raise ValueError(f"pass_at_k needs 1 <= k <= n for every task, got k={k}, n={n}")
    max_n = int(n_arr.max()) if n_arr.size else 0
    i = np.arange(1, max_n + 1, dtype=np.float64)  # [N]
    # the factor (1 - k/i) enters the product for n - c < i <= n                   # [..., N]
    in_product = (i > (n_arr - c_arr)[..., None]) & (i <= n_arr[..., None])
    log_terms = np.where(in_product, np.log(np.clip(1.0 - k / i, 1e-300, None)), 0.0)
    # a factor is exactly zero when i == k: then n - c < k and pass@k is exactly 1
    zero_factor = (in_product & (i == k)).any(axis=-1)
    result = np.where(zero_factor, 1.0, -np.expm1(log_terms.sum(axis=-1))) + 0.0  # no -0.0
    return float(result) if result.ndim == 0 else result


def mean_and_stderr(values: Iterable[float]) -> tuple[float, float]:
    """Mean and standard error of the mean, sample std (ddof=1) / sqrt(n).

    Args:
        values: per-task scores, e.g. 0/1 correctness or per-task pass@k.

    Returns:
        (mean, stderr); stderr is NaN for a single value (`results.write_results` stores it as null).

    Raises:
        ValueError: if `values` is empty.
    """
    arr = np.asarray(list(values), dtype=np.float64).reshape(-1)
    if arr.size == 0:
        raise ValueError("mean_and_stderr needs at least one value")
    stderr = float(arr.std(ddof=1) / math.sqrt(arr.size)) if arr.size > 1 else math.nan
    return float(arr.mean()), stderr
