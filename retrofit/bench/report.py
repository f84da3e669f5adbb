"""Plain-text tables of benchmark payloads (what `retrofit bench` prints)."""

from __future__ import annotations

from typing import Any

from retrofit.bench.common import format_table

__all__ = ["COLUMNS", "headline", "print_payload", "summary_rows"]

COLUMNS: dict[str, tuple[str, list[str]]] = {
    "train-step": (
        "variants",
        [
            "variant", "median_s", "spread_pct", "x1_tokens_per_s", "ratio_vs_full_width", "cpu_median_s",
            "cpu_ratio_vs_full_width", "cpu_ratio_vs_banded",
            "computed_fraction", "closed_form_fraction", "expected_ratio", "row_length_fraction", "peak_mib", "mfu",
        ],
    ),
    "sample": (
        "samplers",
        ["sampler", "median_s", "spread_pct", "samples_per_s", "forward_passes_per_sample",
         "mean_final_length", "peak_mib"],
    ),
    "sample-settings": (
        "summary",
        ["task", "model", "setting", "trunk_position_layers_per_sample", "flops_reduction",
         "forward_passes_per_sample", "seconds_per_sample", "success", "d_success", "success_hard",
         "d_success_hard", "validity", "d_validity", "tv", "d_tv"],
    ),
    "sample-workload": (
        "rows",
        ["setting", "kind", "trunk_position_layers_per_sample", "flops_reduction", "forward_passes_per_sample",
         "seconds_per_sample", "wall_time_ratio", "token_agreement", "mean_generated"],
    ),
    "computed-fraction": (
        "layouts",
        ["layout", "computed_fraction", "slot_fraction", "slowest_rank_excess"],
    ),
    "interpolant": (
        "variants",
        ["variant", "median_s", "spread_pct", "samples_per_s", "x1_tokens_per_s", "margin_vs_paper_gpu"],
    ),
}  # fmt: skip


def headline(payload: dict[str, Any]) -> str:
    """One line: benchmark, where it ran, and the options that shape the numbers."""
    m, o = payload["machine"], payload["options"]
    keys = [k for k in ("size", "layers", "device", "dtype", "grad_ckpt", "batch", "accum", "canvas",
                        "lengths", "world_size", "prompts", "max_length", "steps", "repeats") if k in o]  # fmt: skip
    opts = " ".join(f"{k}={o[k]}" for k in keys if o[k] is not None)
    where = f"torch {m['torch']}, {m['threads']} threads, load {m.get('loadavg', '?')}, {m.get('gpu', m['device'])}"
    return f"== {payload['benchmark']}: {opts} ({where})"


def print_payload(payload: dict[str, Any], log=print) -> None:
    """Print the headline, the result table and any ratios / length summary of a payload."""
    rows_key, columns = COLUMNS[payload["benchmark"]]
    log(headline(payload))
    log(format_table(payload[rows_key], columns))
    if payload["benchmark"] == "train-step":
        p = payload["variants"][0]["params"]
        trainable = ", ".join(f"{r['variant']} {r['params']['trainable']:,}" for r in payload["variants"])
        log(f"parameters: {p['total']:,} (trunk {p['trunk']:,}, embedding {p['embedding']:,}, "
            f"LM head {p['lm_head']:,}); trainable: {trainable}")  # fmt: skip
    if "x1_lengths" in payload:
        log(f"x1 lengths: {payload['x1_lengths']}")
    if "ratios" in payload:
        log("ratios: " + ", ".join(f"{k} {v:.2f}" for k, v in payload["ratios"].items()))
    if "need" in payload:
        log(f"need (paper, docs/method.md §5.1): {payload['need']}")


def summary_rows(name: str, payload: dict[str, Any]) -> list[dict[str, Any]]:
    """Key numbers of one payload as rows {run, what, value} for the `bench all` summary."""
    b = payload["benchmark"]
    if b == "train-step":
        return [
            {"run": name, "what": f"{r['variant']} x1 tok/s (x full-width: wall; CPU time; closed form)",
             "value": f"{r['x1_tokens_per_s']:.0f} ({_fmt(r.get('ratio_vs_full_width'))}; "
                      f"{_fmt(r.get('cpu_ratio_vs_full_width'))}; {_fmt(r.get('expected_ratio'))})"}
            for r in payload["variants"]
        ]  # fmt: skip
    if b == "sample":
        return [{"run": name, "what": k, "value": f"{v:.2f}"} for k, v in payload["ratios"].items()]
    return [
        {"run": name, "what": f"{r['variant']} samples/s (x GPU need)",
         "value": f"{r['samples_per_s']:.0f} ({r['margin_vs_paper_gpu']:.1f})"}
        for r in payload["variants"]
    ]  # fmt: skip


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"
