"""Build training / evaluation datasets from small spec dicts (recipes' ``data:`` entries).

A spec names a format, a source and a few options::

    {"format": "sft", "source": "gsm8k", "split": "train", "limit": None, "weight": 1.0}
    {"format": "text", "source": "stdlib", "overflow": "split"}
    {"format": "infill", "source": "humaneval", "split": "test"}

Every built sample has the columns ``input_ids``, ``prompt_length``, ``infill_cutoff`` (see
`retrofit.data.report.SAMPLE_COLUMNS`); right-padding, infilling splits and noise happen in the
collators (`retrofit.training.collator`). Tokenization runs in ``datasets.map`` (``num_proc``
workers, cached for file-backed sources); skipped candidates are counted in a `DataReport`, which
is logged at the end.

Example:
    >>> ds, report = build_dataset({"format": "sft", "source": "gsm8k"}, tokenizer, max_length=1024, seed=42)
    >>> mix, report = build_mixture([spec_a, spec_b], tokenizer, 1024, seed=42, strategy="interleave")
"""

from __future__ import annotations

import functools
import os
from typing import Any

import datasets
import numpy as np

from retrofit.data.infill import infill_candidates
from retrofit.data.report import SAMPLE_COLUMNS, DataReport, candidate_features, require_samples
from retrofit.data.sft import sft_candidates
from retrofit.data.sources import SOURCE_FIELDS, load_source
from retrofit.data.text import text_candidates

__all__ = ["FORMATS", "SPEC_KEYS", "build_dataset", "build_mixture"]

FORMATS = ("text", "sft", "infill")
SPEC_KEYS = {
    "format": "text | sft | infill (required)",
    "source": "see retrofit.data.sources.load_source (required)",
    "split": "split name (default 'train')",
    "limit": "keep the first N raw rows (after the optional shuffle)",
    "weight": "mixture weight (build_mixture only; default 1.0)",
    "shuffle": "shuffle raw rows with the seed before `limit` (default False)",
    "overflow": "split | truncate | skip (text/infill; see those modules)",
    "text_field": "document column (text / infill documents; default 'text')",
    "prompt_field": "prompt column (sft / infill pairs)",
    "response_field": "response column (sft / infill pairs)",
    "anchor_field": "sft: column of response-token indices that are given, not generated (multi-span infilling)",
    "template": "sft template: gsm8k | plain (default gsm8k for source gsm8k)",
    "streaming": "stream the source (Hub / large files); report counts are then unknown",
    "data_dir": "local data folder for this spec (else the build_dataset argument / RETROFIT_DATA_DIR)",
}
"""Allowed spec keys and their meaning (unknown keys raise)."""


def _check_spec(spec: dict[str, Any]) -> None:
    unknown = set(spec) - set(SPEC_KEYS)
    if unknown:
        raise ValueError(f"data spec {spec!r}: unknown keys {sorted(unknown)}; allowed: {sorted(SPEC_KEYS)}")
    if spec.get("format") not in FORMATS:
        raise ValueError(f"data spec {spec!r}: 'format' must be one of {FORMATS}")
    if "anchor_field" in spec and spec.get("format") != "sft":
        raise ValueError(f"data spec {spec!r}: 'anchor_field' is an sft option; use format: sft")
    if not isinstance(spec.get("source"), str) or not spec["source"]:
        raise ValueError(f"data spec {spec!r}: 'source' must be a non-empty string (e.g. 'gsm8k')")


def _map_function(spec: dict[str, Any], tokenizer: Any, max_length: int) -> functools.partial:
    """The format's batched candidate function with the spec's options bound."""
    fmt, source = spec["format"], spec["source"]
    fields = {
        **SOURCE_FIELDS.get(source, {}),
        **{k: spec[k] for k in ("prompt_field", "response_field", "anchor_field") if k in spec},
    }
    common = {"tokenizer": tokenizer, "max_length": max_length}
    if fmt == "text":
        return functools.partial(
            text_candidates,
            overflow=spec.get("overflow", "split"),
            text_field=spec.get("text_field", "text"),
            **common,
        )
    if fmt == "sft":
        template = spec.get("template", "gsm8k" if source == "gsm8k" else "plain")
        fields.setdefault("prompt_field", "prompt")
        fields.setdefault("response_field", "response")
        return functools.partial(sft_candidates, template=template, **fields, **common)
    return functools.partial(
        infill_candidates,
        text_field=spec.get("text_field", "text"),
        overflow=spec.get("overflow"),
        **fields,
        **common,
    )


def build_dataset(
    spec: dict[str, Any],
    tokenizer: Any,
    max_length: int,
    seed: int = 0,
    *,
    data_dir: str | os.PathLike | None = None,
    num_proc: int | None = None,
) -> tuple[datasets.Dataset | datasets.IterableDataset, DataReport]:
    """Load, tokenize, filter and count one data spec.

    Args:
        spec: dict with the keys of `SPEC_KEYS` ("format" and "source" required).
        tokenizer: Hugging Face tokenizer (fast tokenizers pickle for ``num_proc`` > 1).
        max_length: maximum x1 length in tokens (the canvas; infill adds 2k in the collator).
        seed: seed of the optional row shuffle (``shuffle: true``).
        data_dir: local data folder (a spec's own ``data_dir`` wins; else RETROFIT_DATA_DIR).
        num_proc: ``datasets.map`` worker processes (None = in process).

    Returns:
        (dataset with columns ``input_ids``, ``prompt_length``, ``infill_cutoff``; its DataReport).

    Raises:
        ValueError: an invalid spec or max_length. KeyError: a field is not a column.
        FileNotFoundError / RuntimeError: from `load_source`.
    """
    _check_spec(spec)
    if max_length < 1:
        raise ValueError(f"build_dataset: max_length must be >= 1, got {max_length}")
    streaming = bool(spec.get("streaming", False))
    split = spec.get("split", "train")
    raw = load_source(spec["source"], split, data_dir=spec.get("data_dir", data_dir), streaming=streaming)
    if spec.get("shuffle"):
        raw = raw.shuffle(seed=seed)
    limit = spec.get("limit")
    if limit is not None:
        raw = raw.take(int(limit)) if streaming else raw.select(range(min(int(limit), len(raw))))
    report = DataReport(name=f"{spec['source']}/{split} [{spec['format']}]", streaming=streaming)
    fn = _map_function(spec, tokenizer, max_length)
    if streaming:
        mapped = raw.map(fn, batched=True, remove_columns=raw.column_names, features=candidate_features())
        return mapped.filter(lambda row: row["skip_reason"] == "").select_columns(
            list(SAMPLE_COLUMNS)
        ), report
    mapped = raw.map(
        fn,
        batched=True,
        remove_columns=raw.column_names,
        features=candidate_features(),
        num_proc=num_proc,
        desc=f"tokenizing {report.name}",
    )
    dataset = _count_and_filter(mapped, report, rows=len(raw))
    report.log()
    return dataset, report


def _count_and_filter(mapped: datasets.Dataset, report: DataReport, rows: int) -> datasets.Dataset:
    """Fill ``report`` from the bookkeeping columns and keep only the kept samples' columns."""
    reasons = list(mapped["skip_reason"])
    report.rows = rows
    report.count_reasons(reasons)
    kept = np.flatnonzero(np.asarray(reasons, dtype=object) == "")
    dataset = mapped.select(kept) if len(kept) < len(reasons) else mapped
    report.truncated = int(np.sum(dataset["truncated"])) if len(dataset) else 0
    report.split_extra = int(np.sum(dataset["split_extra"])) if len(dataset) else 0
    report.longest = int(np.max(mapped["length"])) if len(mapped) else 0
    return dataset.select_columns(list(SAMPLE_COLUMNS))


def build_mixture(
    specs: list[dict[str, Any]],
    tokenizer: Any,
    max_length: int,
    seed: int = 0,
    *,
    strategy: str = "concatenate",
    data_dir: str | os.PathLike | None = None,
    num_proc: int | None = None,
) -> tuple[datasets.Dataset, DataReport]:
    """Build every spec and mix them.

    Strategies:
      * ``"concatenate"``: each dataset contributes round(weight x its size) rows (weight > 1
        repeats a seeded permutation, < 1 subsamples it), then everything is shuffled with ``seed``;
      * ``"interleave"``: ``datasets.interleave_datasets`` drawing from dataset i with probability
        weight_i / sum(weights) until every dataset is exhausted (``all_exhausted``).

    Args:
        specs: non-empty list of data specs (see `build_dataset`); ``weight`` defaults to 1.0.
        tokenizer, max_length, data_dir, num_proc: as in `build_dataset`.
        seed: seed of the re-weighting, shuffle and interleaving.
        strategy: "concatenate" or "interleave".

    Returns:
        (mixed dataset, merged DataReport).

    Raises:
        ValueError: empty specs, a negative / all-zero weight, streaming specs, or an unknown strategy.
        NoSamplesError: a spec yielded no sample (e.g. every row longer than max_length); the
            message gives the counts and the ``data.max_length`` to use (`require_samples`).
    """
    if strategy not in ("concatenate", "interleave"):
        raise ValueError(f"build_mixture: strategy must be 'concatenate' or 'interleave', got {strategy!r}")
    weights = [float(spec.get("weight", 1.0)) for spec in specs]
    if not specs or min(weights) < 0 or sum(weights) <= 0:
        raise ValueError(f"build_mixture: need >= 1 spec and weights >= 0 with a positive sum, got {weights}")
    if any(spec.get("streaming") for spec in specs):
        raise ValueError("build_mixture: streaming specs cannot be mixed; build them with build_dataset")
    built = []
    for spec in specs:  # fail on the first source that yields nothing, before building the rest
        built.append(build_dataset(spec, tokenizer, max_length, seed, data_dir=data_dir, num_proc=num_proc))
        require_samples(built[-1][1], max_length, spec["format"])
    report = DataReport()
    for _, part_report in built:
        report = report.merge(part_report)
    parts = [ds for ds, _ in built]
    if strategy == "interleave":  # a zero weight or an empty part would never be exhausted: drop it
        keep = [i for i, (ds, w) in enumerate(zip(parts, weights)) if w > 0 and len(ds)]
        probs = [weights[i] / sum(weights[j] for j in keep) for i in keep]
        mixed = datasets.interleave_datasets(
            [parts[i] for i in keep], probs, seed=seed, stopping_strategy="all_exhausted"
        )
        return mixed, report
    rng = np.random.default_rng(seed)
    resized = [_resize(ds, w, rng) for ds, w in zip(parts, weights)]
    return datasets.concatenate_datasets(resized).shuffle(seed=seed), report


def _resize(dataset: datasets.Dataset, weight: float, rng: np.random.Generator) -> datasets.Dataset:
    """round(weight * n) rows: whole seeded permutations, then a partial one."""
    n = len(dataset)
    target = round(weight * n)
    if n == 0 or target == n:
        return dataset
    reps = -(-target // n)
    order = np.concatenate([rng.permutation(n) for _ in range(reps)])[:target]
    return dataset.select(order)
