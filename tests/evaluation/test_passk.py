"""Tests for retrofit.evaluation.passk: the unbiased pass@k estimator and standard errors
(docs/method.md §6.2)."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from retrofit.evaluation.passk import mean_and_stderr, pass_at_k


def _exact(n: int, c: int, k: int) -> float:
    return float(1 - Fraction(math.comb(n - c, k), math.comb(n, k)))


@pytest.mark.parametrize(
    ("n", "c", "k", "expected"),
    [
        (5, 2, 2, 0.7),  # 1 - C(3,2)/C(5,2) = 1 - 3/10
        (10, 3, 2, 1 - 21 / 45),  # 1 - C(7,2)/C(10,2)
        (10, 3, 1, 0.3),  # pass@1 = c/n
        (1, 1, 1, 1.0),  # one greedy sample per task (docs/method.md §6.2)
        (1, 0, 1, 0.0),
        (5, 4, 2, 1.0),  # n - c < k: every k-subset holds a correct sample
        (5, 0, 5, 0.0),
        (5, 1, 5, 1.0),
    ],
)
def test_hand_computed_cases(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-15)


def test_vectorised_over_tasks_matches_exact_binomials():
    rng = np.random.default_rng(0)
    n = rng.integers(10, 60, size=200)
    c = rng.integers(0, 11, size=200)
    out = pass_at_k(n, c, 10)
    assert out.shape == (200,) and out.dtype == np.float64
    np.testing.assert_allclose(
        out, [_exact(int(a), int(b), 10) for a, b in zip(n, c)], rtol=1e-12, atol=1e-15
    )


def test_large_n_is_numerically_stable():
    # C(1000, 100) overflows float64; the product form does not
    assert pass_at_k(1000, 5, 100) == pytest.approx(_exact(1000, 5, 100), rel=1e-12)
    assert pass_at_k(1000, 500, 100) == pytest.approx(_exact(1000, 500, 100), rel=1e-12)


def test_scalar_c_broadcasts_against_n():
    np.testing.assert_allclose(pass_at_k([4, 8], 2, 1), [0.5, 0.25])


@pytest.mark.parametrize(("n", "c", "k"), [(5, 6, 1), (5, -1, 1), (5, 2, 0), (5, 2, 6), ([5, 3], [1, 1], 4)])
def test_invalid_arguments_raise(n, c, k):
    with pytest.raises(ValueError, match="pass_at_k needs"):
        pass_at_k(n, c, k)


def test_mean_and_stderr():
    assert mean_and_stderr([1, 0, 1, 1]) == (0.75, 0.25)  # std(ddof=1) = 0.5, / sqrt(4)
    mean, stderr = mean_and_stderr(np.array([2.0, 4.0, 6.0]))
    assert mean == 4.0 and stderr == pytest.approx(2.0 / math.sqrt(3), rel=1e-15)
    mean, stderr = mean_and_stderr([0.3])
    assert mean == 0.3 and math.isnan(stderr)
    with pytest.raises(ValueError, match="at least one value"):
        mean_and_stderr([])
