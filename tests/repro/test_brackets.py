"""Tests of the balanced-bracket task (retrofit.repro.brackets) and the shared interval helpers
(retrofit.repro.stats): hand-built validity cases, exact uniformity of the Dyck sampler, the
length law, hand-computed TV / W1 values and determinism."""

from __future__ import annotations

import math
import random
from collections import Counter

import numpy as np
import pytest

from retrofit.repro.brackets import (
    BRACKETS,
    DEFAULT_TYPES,
    LENGTH_LAW,
    evaluate,
    generate,
    is_valid,
    length_metrics,
    random_balanced,
)
from retrofit.repro.stats import bootstrap_interval, mean_interval, wilson_interval


@pytest.mark.parametrize(
    ("text", "types", "expected"),
    [
        ("()[]", None, True),
        ("([])", 2, True),
        ("([)]", None, False),
        ("(()", None, False),
        ("())(", None, False),
        (")(", None, False),
        ("", None, False),
        ("(a)", None, False),
        ("( )", None, False),
        ("{}", 2, False),
        ("{}", 3, True),
        ("<{[()]}>", None, True),
        ("<>", 3, False),
        ("[]", 1, False),
    ],
)
def test_is_valid_hand_cases(text: str, types: int | None, expected: bool) -> None:
    assert is_valid(text, types=types) is expected


def test_bad_arguments_raise() -> None:
    rng = random.Random(0)
    for bad in (3, 0, -2):
        with pytest.raises(ValueError, match="length"):
            random_balanced(bad, rng)
    with pytest.raises(ValueError, match="types"):
        random_balanced(4, rng, types=5)
    with pytest.raises(ValueError, match="types"):
        is_valid("()", types=0)
    with pytest.raises(ValueError, match="law"):
        generate(3, seed=0, law={4: 0.5, 8: 0.4})  # does not sum to 1
    with pytest.raises(ValueError, match="law"):
        generate(3, seed=0, law={5: 1.0})  # odd length
    with pytest.raises(ValueError, match="lengths is empty"):
        length_metrics([], LENGTH_LAW)
    with pytest.raises(ValueError, match="texts is empty"):
        evaluate([])


def test_random_balanced_valid_with_exact_length() -> None:
    for seed in range(200):
        rng = random.Random(seed)
        length = 2 * (1 + seed % 32)  # 2..64
        types = 1 + seed % 4
        text = random_balanced(length, rng, types=types)
        assert len(text) == length
        assert is_valid(text, types=types), text


def test_random_balanced_uniform_over_dyck_words_length4() -> None:
    # Two Dyck words of length 4; n = 2000 draws, binomial sd = sqrt(2000 / 4) ~ 22.4.
    # Tolerance: 5 sd (112), i.e. count in (888, 1112).
    rng = random.Random(123)
    counts = Counter(random_balanced(4, rng, types=1) for _ in range(2000))
    assert set(counts) == {"(())", "()()"}
    assert 888 < counts["(())"] < 1112


def test_random_balanced_uniform_over_dyck_words_length6() -> None:
    # Catalan(3) = 5 shapes, 5000 draws, expected 1000 each. Chi-square with 4 dof: the 0.999
    # quantile is 18.47; assert below it.
    rng = random.Random(7)
    counts = Counter(random_balanced(6, rng, types=1) for _ in range(5000))
    assert set(counts) == {"((()))", "(()())", "(())()", "()(())", "()()()"}
    chi2 = sum((c - 1000) ** 2 / 1000 for c in counts.values())
    assert chi2 < 18.47


def test_pair_types_uniform() -> None:
    # Length 2 with 4 types: each of "()", "[]", "{}", "<>" with p = 1/4; 4000 draws, sd ~ 27.4;
    # tolerance 5 sd (137) around 1000.
    rng = random.Random(5)
    counts = Counter(random_balanced(2, rng, types=4) for _ in range(4000))
    assert set(counts) == {BRACKETS[i : i + 2] for i in range(0, 8, 2)}
    assert all(abs(c - 1000) < 137 for c in counts.values())


def test_generate_follows_law_and_is_deterministic() -> None:
    texts = generate(4000, seed=0)
    assert all(is_valid(t, types=DEFAULT_TYPES) for t in texts)
    freq = Counter(len(t) for t in texts)
    assert set(freq) <= set(LENGTH_LAW)
    # Binomial sd of a frequency is at most sqrt(0.25 / 4000) ~ 0.0079; tolerance 0.03 (~4 sd).
    for length, p in LENGTH_LAW.items():
        assert abs(freq[length] / 4000 - p) < 0.03
    assert generate(50, seed=7) == generate(50, seed=7)
    assert generate(50, seed=7) != generate(50, seed=8)
    assert generate(0, seed=1) == []


def test_length_metrics_hand_computed() -> None:
    # lengths [4, 4, 8, 64]: p_emp = {4: .5, 8: .25, 64: .25}; law = {4: .1, 8: .2, 32: .3, 64: .4}.
    # TV = 0.5 * (|.5-.1| + |.25-.2| + |0-.3| + |.25-.4|) = 0.5 * (.4 + .05 + .3 + .15) = 0.45.
    # CDFs: emp (4: .5, 8: .75, 32: .75, 64: 1), law (4: .1, 8: .3, 32: .6, 64: 1).
    # W1 = .4 * (8-4) + .45 * (32-8) + .15 * (64-32) = 1.6 + 10.8 + 4.8 = 17.2
    # (= 37.2 - 20, the difference of means, as F_emp >= F_law everywhere).
    # mean = 20; std (ddof=0) = sqrt((256 + 256 + 144 + 1936) / 4) = sqrt(648).
    m = length_metrics([4, 4, 8, 64], LENGTH_LAW)
    assert m["tv"] == pytest.approx(0.45)
    assert m["w1"] == pytest.approx(17.2)
    assert m["mean"] == pytest.approx(20.0)
    assert m["std"] == pytest.approx(math.sqrt(648))
    assert m["histogram"] == {4: 2, 8: 1, 64: 1}


def test_length_metrics_exact_match_and_off_support() -> None:
    exact = length_metrics([4] + [8] * 2 + [32] * 3 + [64] * 4, LENGTH_LAW)
    assert exact["tv"] == pytest.approx(0.0, abs=1e-12)
    assert exact["w1"] == pytest.approx(0.0, abs=1e-12)
    # Point mass at 6 vs {4: .5, 8: .5}: TV = 0.5 * (.5 + 1 + .5) = 1; W1 = .5 * 2 + .5 * 2 = 2.
    off = length_metrics([6, 6], {4: 0.5, 8: 0.5})
    assert off["tv"] == pytest.approx(1.0)
    assert off["w1"] == pytest.approx(2.0)


def test_evaluate_hand_built() -> None:
    law = {2: 0.5, 4: 0.5}
    report = evaluate(["()", "(]", "()()", "(())"], law=law, types=2)
    assert report["n"] == 4
    assert report["validity"] == pytest.approx(0.75)
    assert report["validity_ci"] == pytest.approx([0.3006, 0.9544], abs=1e-4)
    assert report["validity_per_length"] == {2: 0.5, 4: 1.0}
    assert report["length_histogram"] == {2: 2, 4: 2}
    assert report["tv"] == pytest.approx(0.0, abs=1e-12)
    assert report["w1"] == pytest.approx(0.0, abs=1e-12)
    assert report["mean_length"] == pytest.approx(3.0)
    for key in ("tv_ci", "w1_ci"):
        lo, hi = report[key]
        assert 0.0 <= lo <= hi
    assert report["tv_ci"][1] <= 1.0
    assert evaluate(["()", "(]", "()()", "(())"], law=law) == report  # seeded bootstrap


def test_evaluate_generated_sample() -> None:
    report = evaluate(generate(400, seed=3))
    assert report["validity"] == 1.0
    assert report["validity_ci"][1] == 1.0
    assert report["tv_ci"][0] <= report["tv_ci"][1] < 0.2
    assert report["w1_ci"][0] <= report["w1_ci"][1] < 8.0


def test_wilson_interval() -> None:
    # 3/4: center (.75 + 1.96^2/8) / (1 + 1.96^2/4) = .6275, half-width .3269.
    assert wilson_interval(3, 4) == pytest.approx((0.3006, 0.9544), abs=1e-4)
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0 and hi == pytest.approx(1.96**2 / (10 + 1.96**2))
    assert wilson_interval(10, 10)[1] == 1.0
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError, match="successes"):
        wilson_interval(5, 4)
    with pytest.raises(ValueError, match="n must be"):
        wilson_interval(0, -1)


def test_bootstrap_and_mean_interval() -> None:
    values = np.arange(20, dtype=float)
    a = bootstrap_interval(values, np.mean, n_boot=200, seed=1)
    assert a == bootstrap_interval(values, np.mean, n_boot=200, seed=1)
    assert a[0] < 9.5 < a[1]
    assert bootstrap_interval([3.0, 3.0], np.mean) == (3.0, 3.0)
    with pytest.raises(ValueError, match="values"):
        bootstrap_interval([], np.mean)
    # mean 5.5, sd (ddof=1) 3.02765, half-width 1.96 * 3.02765 / sqrt(10) = 1.87656.
    assert mean_interval(list(range(1, 11))) == pytest.approx((3.62344, 7.37656), abs=1e-4)
    assert mean_interval([0, 0, 2, 2]) == (0.0, 2.0)  # raw (-0.13, 2.13), clipped to the data range
    assert mean_interval([4.0]) == (4.0, 4.0)
    with pytest.raises(ValueError, match="empty"):
        mean_interval([])
