"""Tests for retrofit.evaluation.length_stats: W1 / KS against scipy, metrics, histogram PNG
(docs/method.md §6.4)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from retrofit.evaluation.length_stats import (
    ks_statistic,
    length_metrics,
    plot_length_histograms,
    wasserstein1,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Fixed pairs: ties, unequal sizes, a single element, floats, identical samples.
PAIRS = [
    ([10, 12, 30], [11, 12, 25, 40]),
    ([1, 1, 1, 2, 2, 7], [1, 2, 2, 2, 9]),
    ([100], [3, 50, 200, 200]),
    ([0.5, 2.25, 3.0, 7.75], [1.0, 1.0, 2.5]),
    ([4, 8, 15, 16, 23, 42], [4, 8, 15, 16, 23, 42]),
    (list(np.random.default_rng(0).integers(1, 1024, 500)), list(np.random.default_rng(1).poisson(300, 333))),
]


@pytest.mark.parametrize(("a", "b"), PAIRS)
def test_w1_and_ks_equal_scipy(a, b):
    # equal up to float summation order (1e-12 relative)
    assert wasserstein1(a, b) == pytest.approx(stats.wasserstein_distance(a, b), rel=1e-12, abs=1e-12)
    assert ks_statistic(a, b) == pytest.approx(stats.ks_2samp(a, b).statistic, rel=1e-12, abs=1e-12)


def test_closed_forms():
    a = np.arange(100.0)
    assert wasserstein1(a, a + 7) == pytest.approx(7.0, abs=1e-12)  # a shift moves every unit of mass by 7
    assert ks_statistic(a, a + 1000) == 1.0  # disjoint supports
    assert wasserstein1([0], [1, 3]) == 2.0 and ks_statistic([0], [1, 3]) == 1.0


def test_length_metrics_values():
    m = length_metrics(model_lengths=[10, 12, 30], data_lengths=[11, 12, 25, 40])
    assert m == pytest.approx(
        {
            "mean": 52 / 3,
            "std": float(np.std([10, 12, 30])),
            "n": 3,
            "data_mean": 22.0,
            "data_std": float(np.std([11, 12, 25, 40])),
            "data_n": 4,
            "wasserstein1": 5.5,
            "ks": 1 / 3,
        },
        rel=1e-12,
    )


@pytest.mark.parametrize(("model", "data"), [([], [1]), ([1], []), ([1, float("nan")], [1])])
def test_length_metrics_rejects_bad_input(model, data):
    with pytest.raises(ValueError, match="length_metrics"):
        length_metrics(model, data)


def test_plot_writes_png(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.poisson(200, 300)
    path = plot_length_histograms(
        data, {"flexmdm": rng.poisson(190, 200), "llada": np.full(200, 256)}, tmp_path / "plots" / "len.png"
    )
    assert path == tmp_path / "plots" / "len.png"
    content = path.read_bytes()
    assert len(content) > 1000 and content.startswith(PNG_SIGNATURE)
