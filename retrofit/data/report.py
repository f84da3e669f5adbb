"""Skip / truncation counters of the data builders (`DataReport`).

Builders never crash on, or silently keep, a bad sample: each raw row is mapped to zero or more
samples plus a `skip_reason` string per candidate ("" = kept), the reasons are counted here, and
the skipped candidates are filtered out. `build_dataset` logs the report once at the end:

    >>> ds, report = build_dataset({"format": "sft", "source": "gsm8k"}, tok, max_length=256, seed=0)
    >>> print(report)    # gsm8k/train [sft]: 7473 rows -> 7401 samples; skipped: too_long=72
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

import datasets

__all__ = [
    "SAMPLE_COLUMNS",
    "SKIP_REASONS",
    "Candidates",
    "DataReport",
    "NoSamplesError",
    "candidate_features",
    "require_samples",
]

SAMPLE_COLUMNS = ("input_ids", "prompt_length", "infill_cutoff", "anchors")
"""Columns of every built sample (all formats, so mixtures concatenate):
``input_ids`` (list of int32 token ids, no padding), ``prompt_length`` (int32 P: ids[:P] are
protected), ``infill_cutoff`` (int32 c >= 0 for infilling samples, whose split is drawn by the
collator; -1 otherwise), ``anchors`` (list of int32 positions in ``input_ids`` after the prompt
that are given, i.e. protected like the prompt: the fixed points of multi-span infilling, e.g. a
maze's subgoals; usually empty)."""

SKIP_REASONS: dict[str, str] = {
    "empty": "no tokens after tokenization",
    "too_long": "longer than max_length (and the format may not split or truncate it)",
    "no_room": "the prompt (or infilling prefix) leaves no room for a response / middle",
    "bad_row": "a required field is missing or not a string",
}
"""Reason code -> meaning. Builders only use these codes."""

_LOG = logging.getLogger(__name__)


def candidate_features() -> datasets.Features:
    """Arrow schema of the builders' map output: `SAMPLE_COLUMNS` + bookkeeping columns."""
    return datasets.Features(
        {
            "input_ids": datasets.List(datasets.Value("int32")),
            "prompt_length": datasets.Value("int32"),
            "infill_cutoff": datasets.Value("int32"),
            "anchors": datasets.List(datasets.Value("int32")),
            "skip_reason": datasets.Value("string"),
            "truncated": datasets.Value("bool"),
            "split_extra": datasets.Value("bool"),
            "length": datasets.Value("int32"),
        }
    )


class Candidates:
    """Column accumulator for a batched ``datasets.map``: one entry per candidate sample."""

    def __init__(self) -> None:
        self.columns: dict[str, list] = {name: [] for name in candidate_features()}

    def add(
        self,
        input_ids: list[int] | None = None,
        *,
        prompt_length: int = 0,
        infill_cutoff: int = -1,
        anchors: list[int] | None = None,
        skip: str = "",
        truncated: bool = False,
        split_extra: bool = False,
    ) -> None:
        """Record a kept sample (``skip=""``) or a skipped candidate (``skip`` = reason code).

        A skipped candidate may pass its ``input_ids`` too: they are not kept, but their length is
        (the ``length`` column, from which `DataReport.longest` is taken).
        """
        values = (
            list(input_ids or []) if not skip else [],
            prompt_length,
            infill_cutoff,
            list(anchors or []) if not skip else [],
            skip,
            truncated,
            split_extra,
            len(input_ids or []),
        )
        for column, value in zip(self.columns.values(), values):
            column.append(value)


@dataclass
class DataReport:
    """What a builder kept, skipped and changed.

    Attributes:
        name: short label of the data (e.g. "gsm8k/train [sft]").
        rows: raw rows read from the source.
        samples: samples kept (after splitting documents, before mixture re-weighting).
        skipped: reason code (see `SKIP_REASONS`) -> number of skipped candidates.
        truncated: samples cut to max_length (text / infill `overflow="truncate"`).
        split_extra: extra samples created by splitting long documents (`overflow="split"`).
        streaming: True for streaming sources; their counts are not known up front.
        longest: token length of the longest candidate, kept or skipped (after split / truncation;
            a skipped ``too_long`` row counts with its full length): the ``max_length`` that would
            keep every row.
    """

    name: str = ""
    rows: int = 0
    samples: int = 0
    skipped: Counter = field(default_factory=Counter)
    truncated: int = 0
    split_extra: int = 0
    streaming: bool = False
    longest: int = 0

    def __post_init__(self) -> None:
        self.skipped = Counter(self.skipped)

    @property
    def num_skipped(self) -> int:
        """Total number of skipped candidates (all reasons)."""
        return sum(self.skipped.values())

    def count_reasons(self, reasons: list[str]) -> None:
        """Add one candidate per entry of ``reasons`` ("" = kept, else a `SKIP_REASONS` code).

        Raises:
            ValueError: on an unknown reason code (a builder bug).
        """
        unknown = set(reasons) - set(SKIP_REASONS) - {""}
        if unknown:
            raise ValueError(
                f"DataReport: unknown skip reasons {sorted(unknown)}; known: {sorted(SKIP_REASONS)}"
            )
        counts = Counter(reasons)
        self.samples += counts.pop("", 0)
        self.skipped.update(counts)

    def merge(self, other: DataReport) -> DataReport:
        """A new report summing ``self`` and ``other`` (names joined with " + ")."""
        return DataReport(
            name=" + ".join(n for n in (self.name, other.name) if n),
            rows=self.rows + other.rows,
            samples=self.samples + other.samples,
            skipped=self.skipped + other.skipped,
            truncated=self.truncated + other.truncated,
            split_extra=self.split_extra + other.split_extra,
            streaming=self.streaming or other.streaming,
            longest=max(self.longest, other.longest),
        )

    def __str__(self) -> str:
        if self.streaming:
            return f"{self.name}: streaming (rows are filtered on the fly; counts unknown up front)"
        parts = [f"{self.name}: {self.rows} rows -> {self.samples} samples"]
        if self.skipped:
            parts.append("skipped: " + ", ".join(f"{k}={v}" for k, v in sorted(self.skipped.items())))
        if self.skipped.get("too_long"):  # the max_length that would keep them
            parts.append(f"longest row: {self.longest} tokens")
        if self.truncated:
            parts.append(f"truncated: {self.truncated}")
        if self.split_extra:
            parts.append(f"extra samples from splitting: {self.split_extra}")
        return "; ".join(parts)

    def log(self, logger: logging.Logger | None = None) -> None:
        """Log the summary at INFO, or at WARNING when anything was skipped."""
        level = logging.WARNING if self.num_skipped else logging.INFO
        (logger or _LOG).log(level, "data report: %s", self)


class NoSamplesError(ValueError):
    """Every row of a data source was skipped; the message gives the counts and the fix."""


def require_samples(report: DataReport, max_length: int, fmt: str = "") -> None:
    """Raise before training when a (non-streaming) data source yielded no sample at all.

    Some rows skipped is normal (they are counted and logged); all of them skipped is a mistake
    that would otherwise surface as torch's ``num_samples=0`` after the model has loaded.

    Args:
        report: the source's report (`retrofit.data.builder.build_dataset`).
        max_length: the ``data.max_length`` the source was built with.
        fmt: the spec's format ("text", "sft", "infill"), for the overflow hint.

    Raises:
        NoSamplesError: ``report.samples == 0``; the message names the source, the rows read, the
            rows dropped per reason, the longest row and, when rows were too long,
            ``data.max_length=N`` that keeps them all.
    """
    if report.streaming or report.samples > 0:
        return
    if report.rows == 0:
        raise NoSamplesError(f"data {report.name}: the source has no rows (limit: 0?); add rows or remove it")
    dropped = ", ".join(f"{n} dropped as {k.replace('_', ' ')}" for k, n in sorted(report.skipped.items()))
    head = f"data {report.name}: no sample left: {report.rows} rows read, {dropped or 'none dropped'}."
    if report.longest > max_length:
        overflow = (
            " (or set overflow: split / truncate in the data spec)" if fmt in ("text", "infill") else ""
        )
        raise NoSamplesError(
            f"{head} The longest row has {report.longest} tokens but data.max_length={max_length}: "
            f"raise it, e.g. data.max_length={report.longest}{overflow}, or shorten the rows."
        )
    meanings = "; ".join(f"{k.replace('_', ' ')}: {SKIP_REASONS[k]}" for k in sorted(report.skipped))
    raise NoSamplesError(
        f"{head} ({meanings}.) Fix the rows, or name the right columns in the data spec "
        "(prompt_field / response_field / text_field)."
    )
