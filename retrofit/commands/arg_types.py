"""Bounded argparse types: a bad number fails in the parser (exit 2), before any model loads.

    parser.add_argument("--steps", type=at_least(1), default=None)
    parser.add_argument("--temperature", type=non_negative_float, default=None)

`argparse` turns the `argparse.ArgumentTypeError` raised here into
``retrofit VERB: error: argument --steps: must be an integer >= 1, got 0``.
Bounds that depend on the model (`check_lengths`) read its config.json only, so they too fail
before a weight is read.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable
from pathlib import Path

__all__ = ["at_least", "check_lengths", "non_negative_float", "probability"]


def at_least(low: int) -> Callable[[str], int]:
    """An argparse type: an integer >= `low`.

    Raises:
        argparse.ArgumentTypeError: not an integer, or below `low`.
    """

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer >= {low}, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be an integer >= {low}, got {value}")
        return value

    parse.__name__ = f"integer >= {low}"  # argparse names the type in its messages
    return parse


def non_negative_float(text: str) -> float:
    """An argparse type: a finite float >= 0 (a temperature: 0 = argmax).

    Raises:
        argparse.ArgumentTypeError: not a number, negative, nan or inf.
    """
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text!r}") from None
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def probability(text: str) -> float:
    """An argparse type: a number in (0, 1] (a confidence threshold).

    Raises:
        argparse.ArgumentTypeError: not a number, or outside (0, 1].
    """
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number in (0, 1], got {text!r}") from None
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be a number in (0, 1], got {text}")
    return value


def check_lengths(model_dir: str | Path, **lengths: int | None) -> None:
    """Refuse token lengths beyond the model's `max_sequence_length` (read from config.json).

    Args:
        model_dir: the model folder; when it has no readable config.json nothing is checked here
            (loading the model reports that folder's problem).
        **lengths: option name -> value in tokens (None = not given), e.g.
            ``max_length=args.max_length, gen_length=args.gen_length``.

    Raises:
        ValueError: a length exceeds the limit; the message names the option, the limit and the
            config.json it comes from.
    """
    config_path = Path(model_dir) / "config.json"
    try:
        config = json.loads(config_path.read_text())
    except (OSError, ValueError):
        return
    backbone = config.get("backbone") if isinstance(config.get("backbone"), dict) else {}
    limit = config.get("max_sequence_length") or backbone.get("max_sequence_length")
    if not isinstance(limit, int):
        return
    for name, value in lengths.items():
        if value is not None and value > limit:
            option = "--" + name.replace("_", "-")
            raise ValueError(
                f"{option} {value} exceeds the model's max_sequence_length {limit} ({config_path}); "
                f"use {option} {limit} or less"
            )
