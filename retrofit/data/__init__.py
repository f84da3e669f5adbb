"""Data: the GSM8K format, text / SFT / infilling builders and their sources.

Public entry points (imported lazily, so ``import retrofit.data.gsm8k_format`` stays light):
``build_dataset``, ``build_mixture`` (`retrofit.data.builder`), ``DataReport``
(`retrofit.data.report`), ``load_source`` (`retrofit.data.sources`).
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "build_dataset": "retrofit.data.builder",
    "build_mixture": "retrofit.data.builder",
    "DataReport": "retrofit.data.report",
    "load_source": "retrofit.data.sources",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'retrofit.data' has no attribute {name!r}")
