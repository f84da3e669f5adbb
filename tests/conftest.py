"""Shared pytest fixtures: offline Hub settings, the local data folder, a tiny LLaDA checkpoint.

Other test modules may append fixtures here; keep each one small.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = REPO_ROOT.parent / "shared" / "data"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if DATA_DIR.is_dir():
    os.environ.setdefault("RETROFIT_DATA_DIR", str(DATA_DIR))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The local copy of the public datasets (../shared/data beside the repo)."""
    return DATA_DIR


@pytest.fixture(scope="session")
def tiny_llada_dir(tmp_path_factory) -> Path:
    """A tiny random LLaDA checkpoint (2 layers, d_model 64, 4 heads, seed 0), official layout.

    Session-scoped and shared: copy it before modifying it.
    """
    from retrofit.models.tiny import write_tiny_llada

    return write_tiny_llada(tmp_path_factory.mktemp("tiny") / "llada", layers=2, d_model=64, heads=4, seed=0)
