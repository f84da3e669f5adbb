"""The one dtype table: every spelling retrofit accepts, and the torch dtype it means.

Recipes, CLIs, config.json and safetensors headers spell dtypes differently ("bfloat16", "bf16",
"BF16"); all of them go through :func:`canonical_dtype`, so every place accepts every spelling.
Importing this module does not import torch (CLIs check `--dtype` before loading anything).

    >>> canonical_dtype("bf16")
    'bfloat16'
    >>> torch_dtype("fp32")
    torch.float32
"""

from __future__ import annotations

from typing import Any

__all__ = ["DTYPE_NAMES", "FLOAT_DTYPES", "canonical_dtype", "dtype_argument", "torch_dtype"]

FLOAT_DTYPES = ("float32", "bfloat16", "float16", "float64")
"""Canonical names (torch's attribute names)."""

DTYPE_NAMES: dict[str, str] = {
    **{name: name for name in FLOAT_DTYPES},
    "fp32": "float32", "float": "float32", "F32": "float32",
    "bf16": "bfloat16", "BF16": "bfloat16",
    "fp16": "float16", "half": "float16", "F16": "float16",
    "fp64": "float64", "double": "float64", "F64": "float64",
}  # fmt: skip
"""Spelling -> canonical name (recipes, CLIs, config.json `dtype` / `torch_dtype`, safetensors)."""


def canonical_dtype(name: Any, where: str = "dtype", allowed: tuple[str, ...] = FLOAT_DTYPES) -> str:
    """The canonical name of a dtype spelling ("bf16" -> "bfloat16"); a torch.dtype passes too.

    Args:
        name: a spelling of DTYPE_NAMES, or a torch.dtype.
        where: what the value is called in the message (e.g. "model.dtype", "--dtype").
        allowed: canonical names accepted here.

    Raises:
        ValueError: an unknown or not allowed name; the message lists the accepted spellings.
    """
    text = str(name).removeprefix("torch.")
    canonical = DTYPE_NAMES.get(text)
    if canonical is None or canonical not in allowed:
        spellings = sorted(k for k, v in DTYPE_NAMES.items() if v in allowed)
        raise ValueError(f"{where}={name!r} is not one of {', '.join(spellings)}")
    return canonical


def torch_dtype(name: Any, where: str = "dtype") -> Any:
    """The torch dtype of a spelling (imports torch).

    Raises:
        ValueError: an unknown name (see `canonical_dtype`).
    """
    import torch

    return getattr(torch, canonical_dtype(name, where))


def dtype_argument(allow_auto: bool = False, allowed: tuple[str, ...] = FLOAT_DTYPES):
    """An argparse type: any spelling of an allowed dtype -> its canonical name (or "auto").

    Raises:
        argparse.ArgumentTypeError: an unknown spelling (argparse exits 2 with the message).
    """
    import argparse

    def parse(text: str) -> str:
        if allow_auto and text == "auto":
            return "auto"
        try:
            return canonical_dtype(text, "value", allowed)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    parse.__name__ = "dtype"
    return parse
