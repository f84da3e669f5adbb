"""Small helpers both samplers share: rows per prompt, the model's device, a progress bar, and
whether a model's forward takes an argument.

Example::

    rows = repeat_rows(prompts, num_samples=4)      # prompt-major: p0, p0, p0, p0, p1, ...
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from typing import Any

import torch

__all__ = ["accepts_argument", "model_device", "progress", "repeat_rows"]


def repeat_rows(rows: list[list[int]], num_samples: int) -> list[list[int]]:
    """Each row ``num_samples`` times in a row (prompt-major), as lists of python ints.

    Raises:
        ValueError: num_samples < 1.
    """
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    return [[int(x) for x in row] for row in rows for _ in range(num_samples)]


def model_device(model: Any) -> torch.device:
    """Device of the model's first parameter; else ``model.device``; else CPU."""
    try:
        return next(model.parameters()).device
    except (AttributeError, StopIteration, TypeError):
        return torch.device(getattr(model, "device", "cpu"))


def progress(iterable: Iterable, enabled: bool, desc: str, unit: str) -> Iterable:
    """``iterable`` wrapped in a tqdm bar when enabled (tqdm is imported only then)."""
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, unit=unit)


def accepts_argument(model: Any, name: str) -> bool:
    """Whether ``model.forward`` (or the callable itself) has a parameter called ``name``."""
    try:
        return name in inspect.signature(getattr(model, "forward", model)).parameters
    except (TypeError, ValueError):
        return False
