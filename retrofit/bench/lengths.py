"""x1 samples for the benchmarks: full-canvas sequences or GSM8K-shaped prompt + answer lengths.

Modes:
  * ``full``: every x1 has exactly ``canvas`` tokens and no prompt (the transfer stage's 1024-token
    chunks, docs/method.md §1.6).
  * ``gsm8k``: (prompt, prompt + answer) lengths drawn from the GSM8K training split, formatted as
    in training (`retrofit.data.gsm8k_format`: system prompt + question, rationale + answer tags),
    measured in characters / ``chars_per_token`` (~4 for a BPE tokenizer). The prompt is
    protected (docs/method.md §1.5). The data are read from RETROFIT_DATA_DIR (or ``data_dir``).

Token ids are random (speed does not depend on them) and avoid the mask and pad ids.

    >>> table = gsm8k_length_table(data_dir)            # LengthTable(prompt [N], total [N])
    >>> feats = make_features("gsm8k", 4, 1024, vocab_limit=8190, table=table, generator=g)
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["LENGTH_MODES", "LengthTable", "gsm8k_length_table", "make_features"]

LENGTH_MODES = ("full", "gsm8k")


@dataclass(frozen=True)
class LengthTable:
    """Per-example lengths in tokens: ``prompt`` [N] long and ``total`` [N] long (prompt + answer)."""

    prompt: torch.Tensor
    total: torch.Tensor

    def summary(self) -> dict[str, float]:
        """Mean / median prompt and total lengths (tokens)."""
        p, t = self.prompt.double(), self.total.double()
        return {
            "mean_prompt": float(p.mean()),
            "mean_total": float(t.mean()),
            "median_total": float(t.median()),
            "p95_total": float(t.quantile(0.95)),
            "examples": int(t.numel()),
        }


def gsm8k_length_table(
    data_dir: str | os.PathLike | None = None, chars_per_token: float = 4.0
) -> LengthTable:
    """GSM8K train prompt / prompt + answer lengths in approximate tokens.

    Args:
        data_dir: folder with ``gsm8k/train.jsonl``; None = RETROFIT_DATA_DIR.
        chars_per_token: characters per token of the approximation (ceil(chars / this)).

    Returns:
        LengthTable over the 7473 training rows.

    Raises:
        FileNotFoundError: no local GSM8K data (set RETROFIT_DATA_DIR or pass data_dir).
        ValueError: chars_per_token <= 0.
    """
    from retrofit.data.gsm8k_format import build_prompt, build_target, load_gsm8k

    if chars_per_token <= 0:
        raise ValueError(f"chars_per_token must be > 0, got {chars_per_token}")
    data_dir = data_dir if data_dir is not None else os.environ.get("RETROFIT_DATA_DIR") or None
    if data_dir is None:
        raise FileNotFoundError(
            "--lengths gsm8k needs local GSM8K data: set RETROFIT_DATA_DIR (or --data-dir) to a folder "
            "with gsm8k/train.jsonl (the benchmarks never download)"
        )
    rows = load_gsm8k("train", data_dir)
    prompt = [math.ceil(len(build_prompt(r["question"])) / chars_per_token) for r in rows]
    answer = [math.ceil(len(build_target(r["answer"])) / chars_per_token) for r in rows]
    prompt_t = torch.tensor(prompt, dtype=torch.long)
    return LengthTable(prompt=prompt_t, total=prompt_t + torch.tensor(answer, dtype=torch.long))


def make_features(
    mode: str,
    batch: int,
    canvas: int,
    *,
    vocab_limit: int,
    table: LengthTable | None = None,
    generator: torch.Generator | None = None,
) -> list[dict[str, Any]]:
    """One micro-batch of collator features ``{"input_ids": list[int], "prompt_length": int}``.

    Args:
        mode: "full" (length = canvas, no prompt) or "gsm8k" (lengths from ``table``, capped at
            canvas; the prompt keeps at least one free token).
        batch: rows. canvas: the canvas width L.
        vocab_limit: token ids are drawn from [0, vocab_limit) (keep mask / pad ids above it).
        table: required for "gsm8k".
        generator: CPU generator of the draws.

    Returns:
        ``batch`` feature dicts.

    Raises:
        ValueError: unknown mode, or "gsm8k" without a table.
    """
    if mode not in LENGTH_MODES:
        raise ValueError(f"--lengths must be one of {LENGTH_MODES}, got {mode!r}")
    if mode == "full":
        total = torch.full((batch,), canvas, dtype=torch.long)
        prompt = torch.zeros(batch, dtype=torch.long)
    else:
        if table is None:
            raise ValueError("make_features: mode 'gsm8k' needs a LengthTable (gsm8k_length_table())")
        pick = torch.randint(table.total.numel(), (batch,), generator=generator)
        total = table.total[pick].clamp(min=2, max=canvas)
        prompt = torch.minimum(table.prompt[pick], total - 1)
    ids = torch.randint(vocab_limit, (batch, canvas), generator=generator)
    return [
        {"input_ids": ids[b, : int(total[b])].tolist(), "prompt_length": int(prompt[b])} for b in range(batch)
    ]
