"""Balanced-bracket strings: seeded generator, exact checker and length/validity metrics.

A synthetic task for variable-length generation: every sample is a well-nested balanced string
over the bracket pairs `()[]{}<>` (by default only `()` and `[]`), with its length (in
characters = tokens) drawn from a discrete length law such as `LENGTH_LAW`. A model is scored on
validity (is the string balanced?) and on how close its length distribution is to the law
(total variation and 1-Wasserstein distance).

Sampling is exactly uniform over nesting shapes: `random_balanced` draws the Dyck word
character by character, opening with probability (#completions after an open) / (#completions
now), using exact integer ballot numbers, then draws each pair's type uniformly.

Example:
    >>> texts = generate(4, seed=0)
    >>> all(is_valid(t, types=DEFAULT_TYPES) for t in texts)
    True
    >>> report = evaluate(texts + ["(]"])
    >>> report["validity"]
    0.8
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np

from retrofit.repro.stats import bootstrap_interval, wilson_interval

BRACKETS = "()[]{}<>"
DEFAULT_TYPES = 2
LENGTH_LAW: dict[int, float] = {4: 0.1, 8: 0.2, 32: 0.3, 64: 0.4}

_OPEN_TO_CLOSE = {BRACKETS[2 * i]: BRACKETS[2 * i + 1] for i in range(4)}
_CLOSE_TO_OPEN = {close: open_ for open_, close in _OPEN_TO_CLOSE.items()}


def _check_types(types: int, name: str = "types") -> None:
    if isinstance(types, bool) or not isinstance(types, int) or not 1 <= types <= 4:
        raise ValueError(f"{name} must be an int in 1..4, got {types!r}")


def _check_law(law: Mapping[int, float]) -> tuple[list[int], list[float]]:
    """Validate a length law -> (sorted lengths, their probabilities)."""
    if not law:
        raise ValueError("law must be a non-empty {length: probability} mapping")
    lengths = sorted(law)
    for length in lengths:
        if isinstance(length, bool) or not isinstance(length, int) or length < 2 or length % 2:
            raise ValueError(f"law lengths must be even ints >= 2, got {length!r}")
    probs = [float(law[length]) for length in lengths]
    if any(not math.isfinite(p) or p < 0 for p in probs):
        raise ValueError(f"law probabilities must be finite and >= 0, got {probs}")
    if abs(sum(probs) - 1.0) > 1e-6:
        raise ValueError(f"law probabilities must sum to 1, got {sum(probs)}")
    return lengths, probs


def _completions(steps: int, height: int) -> int:
    """Number of +-1 paths of `steps` steps from `height` down to 0 that never go below 0."""
    if height < 0 or height > steps or (steps - height) % 2:
        return 0
    ups = (steps - height) // 2
    return math.comb(steps, ups) - (math.comb(steps, ups - 1) if ups > 0 else 0)


def random_balanced(length: int, rng: random.Random, types: int = DEFAULT_TYPES) -> str:
    """A uniformly random well-nested balanced bracket string of exactly `length` characters.

    The nesting shape is uniform over all Dyck words of that length (exact integer counting
    sampler); each pair's type is then uniform among the first `types` pairs of `BRACKETS`.

    Args:
        length: Even number of characters, >= 2.
        rng: The random source (`random.Random`); consumed, never the global RNG.
        types: How many bracket pairs to use, 1..4 (`()`, `[]`, `{}`, `<>` in that order).

    Returns:
        The string, e.g. "([])()" for length 6.

    Raises:
        ValueError: If length is odd or < 2, or types is not in 1..4.
    """
    if isinstance(length, bool) or not isinstance(length, int) or length < 2 or length % 2:
        raise ValueError(f"length must be an even int >= 2, got {length!r}")
    _check_types(types)
    out: list[str] = []
    stack: list[str] = []
    for pos in range(length):
        remaining = length - pos - 1  # steps left after this one
        height = len(stack)
        n_open = _completions(remaining, height + 1)
        if n_open and rng.randrange(n_open + _completions(remaining, height - 1)) < n_open:
            open_ = BRACKETS[2 * rng.randrange(types)]
            stack.append(open_)
            out.append(open_)
        else:
            out.append(_OPEN_TO_CLOSE[stack.pop()])
    return "".join(out)


def generate(
    n: int, seed: int, law: Mapping[int, float] = LENGTH_LAW, types: int = DEFAULT_TYPES
) -> list[str]:
    """`n` random balanced strings with lengths drawn i.i.d. from `law` (deterministic in `seed`).

    Args:
        n: Number of strings, >= 0.
        seed: Seed of the `random.Random` used for both lengths and contents.
        law: {length: probability}; lengths even ints >= 2, probabilities summing to 1.
        types: How many bracket pairs to use, 1..4.

    Returns:
        The list of strings.

    Raises:
        ValueError: If n < 0, the law is malformed or types is not in 1..4.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be an int >= 0, got {n!r}")
    lengths, probs = _check_law(law)
    _check_types(types)
    rng = random.Random(seed)
    return [random_balanced(rng.choices(lengths, weights=probs)[0], rng, types) for _ in range(n)]


def is_valid(text: str, types: int | None = None) -> bool:
    """Whether `text` is a non-empty, exactly balanced, well-nested bracket string.

    Args:
        text: The string to check; any character other than the allowed brackets (whitespace
            included) makes it invalid.
        types: If given (1..4), only the first `types` pairs of `BRACKETS` are allowed;
            None allows all four.

    Returns:
        True iff valid. The empty string is invalid.

    Raises:
        ValueError: If types is not None and not in 1..4.
    """
    if types is not None:
        _check_types(types)
    allowed = BRACKETS[: 2 * (4 if types is None else types)]
    if not text:
        return False
    stack: list[str] = []
    for ch in text:
        if ch not in allowed:
            return False
        if ch in _OPEN_TO_CLOSE:
            stack.append(ch)
        elif not stack or stack.pop() != _CLOSE_TO_OPEN[ch]:
            return False
    return not stack


def _distances(counts: np.ndarray, support: np.ndarray, law_p: np.ndarray) -> tuple[float, float]:
    """(TV, W1) between the empirical distribution `counts` and `law_p`, both on sorted `support`."""
    emp = counts / counts.sum()
    tv = 0.5 * float(np.abs(emp - law_p).sum())
    gaps = np.diff(support).astype(np.float64)
    w1 = float((np.abs(np.cumsum(emp) - np.cumsum(law_p))[:-1] * gaps).sum())
    return tv, w1


def _encode(lengths: Sequence[int], law: Mapping[int, float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """-> (codes of each length in the pooled support, support, law probabilities on the support)."""
    law_lengths, probs = _check_law(law)
    for length in lengths:
        if isinstance(length, bool) or not isinstance(length, (int, np.integer)) or length < 0:
            raise ValueError(f"lengths must be ints >= 0, got {length!r}")
    support = np.array(sorted(set(law_lengths) | {int(x) for x in lengths}), dtype=np.int64)
    law_p = np.zeros(support.size, dtype=np.float64)
    law_p[np.searchsorted(support, law_lengths)] = probs
    codes = np.searchsorted(support, np.asarray(lengths, dtype=np.int64))
    return codes, support, law_p


def length_metrics(lengths: Sequence[int], law: Mapping[int, float]) -> dict:
    """Compare an empirical sample of lengths with a discrete length law.

    Args:
        lengths: Non-empty sample of lengths (ints >= 0, in characters/tokens).
        law: {length: probability}; lengths even ints >= 2, probabilities summing to 1.

    Returns:
        {"tv": total variation = 0.5 * sum |p_emp - p_law| over the union of supports,
         "w1": 1-Wasserstein distance = integral |F_emp - F_law| (in tokens),
         "mean": sample mean, "std": sample std (ddof=0),
         "histogram": {length: count} sorted by length}.

    Raises:
        ValueError: If lengths is empty or holds a non-int / negative value, or law is malformed.
    """
    if len(lengths) == 0:
        raise ValueError("lengths is empty")
    codes, support, law_p = _encode(lengths, law)
    tv, w1 = _distances(np.bincount(codes, minlength=support.size), support, law_p)
    arr = np.asarray(lengths, dtype=np.float64)
    histogram = {int(k): v for k, v in sorted(Counter(int(x) for x in lengths).items())}
    return {"tv": tv, "w1": w1, "mean": float(arr.mean()), "std": float(arr.std()), "histogram": histogram}


def evaluate(texts: Sequence[str], law: Mapping[int, float] = LENGTH_LAW, types: int = DEFAULT_TYPES) -> dict:
    """Score generated strings: validity (with a Wilson interval) and length fit to `law`.

    Lengths are `len(text)` of the strings as given (strip decoding artefacts first).
    `tv_ci` / `w1_ci` are 95% percentile bootstrap intervals over the samples (1000 resamples,
    seed 0).

    Args:
        texts: Non-empty list of generated strings.
        law: The target length law.
        types: Number of allowed bracket pairs (1..4) for the validity check.

    Returns:
        {"n", "validity", "validity_ci": [lo, hi], "tv", "tv_ci": [lo, hi], "w1", "w1_ci": [lo, hi],
         "mean_length", "validity_per_length": {length: fraction valid}, "length_histogram":
         {length: count}}.

    Raises:
        ValueError: If texts is empty, law is malformed or types is not in 1..4.
    """
    if len(texts) == 0:
        raise ValueError("texts is empty")
    _check_types(types)
    valid = [is_valid(t, types=types) for t in texts]
    lengths = [len(t) for t in texts]
    metrics = length_metrics(lengths, law)
    codes, support, law_p = _encode(lengths, law)

    def stat(index: int):
        return lambda sample: _distances(np.bincount(sample, minlength=support.size), support, law_p)[index]

    per_length: dict[int, list[bool]] = {}
    for length, ok in zip(lengths, valid):
        per_length.setdefault(length, []).append(ok)
    return {
        "n": len(texts),
        "validity": sum(valid) / len(texts),
        "validity_ci": list(wilson_interval(sum(valid), len(texts))),
        "tv": metrics["tv"],
        "tv_ci": list(bootstrap_interval(codes, stat(0), n_boot=1000, seed=0)),
        "w1": metrics["w1"],
        "w1_ci": list(bootstrap_interval(codes, stat(1), n_boot=1000, seed=0)),
        "mean_length": metrics["mean"],
        "validity_per_length": {k: sum(v) / len(v) for k, v in sorted(per_length.items())},
        "length_histogram": metrics["histogram"],
    }
