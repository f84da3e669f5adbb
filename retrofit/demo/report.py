"""The demo's results table (stage timings, model sizes, metrics of the three models)."""

from __future__ import annotations

import json
import math
from pathlib import Path

NOTE = (
    "A tiny model trained for minutes on 2 CPU cores scores ~0 on GSM8K accuracy and infill pass@1: "
    "that is expected. The length statistics are where the models differ: the FlexMDM decides lengths "
    "with its insertion head, the fixed-length models by where they write EOS."
)


def _load(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def _metric(results: dict, *names: str) -> tuple[float | None, float | None]:
    """(value, stderr) of the first metric name present in results["metrics"]."""
    metrics = results.get("metrics", {})
    for name in names:
        if metrics.get(name) is not None:
            return metrics[name], metrics.get(f"{name}_stderr")
    return None, None


def _fmt(value: float | None, stderr: float | None = None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    text = f"{value:.{digits}f}" if isinstance(value, float) else str(value)
    if stderr is not None and not (isinstance(stderr, float) and math.isnan(stderr)):
        text += f" ± {stderr:.{digits}f}"
    return text


def _param_count(folder: Path) -> str:
    from safetensors import safe_open

    total = 0
    for shard in sorted(folder.glob("*.safetensors")):
        with safe_open(str(shard), "pt") as f:
            for key in f.keys():  # noqa: SIM118 (safe_open is not iterable)
                total += math.prod(f.get_slice(key).get_shape())
    return f"{total / 1e6:.2f}M" if total else "n/a"


def length_results_by_model(out: Path, models: dict[str, Path]) -> dict[str, dict]:
    """Model name -> its `retrofit eval length` metrics (results.json keys "<folder name>/<metric>")."""
    length = _load(out / "eval" / "length" / "results.json").get("metrics", {})
    by_model = {}
    for name, folder in models.items():
        prefix = f"{folder.name}/"
        by_model[name] = {k[len(prefix) :]: v for k, v in length.items() if k.startswith(prefix)}
    return by_model


def model_rows(out: Path, models: dict[str, Path], length: dict[str, dict]) -> list[list[str]]:
    """One row per model: name, params, GSM8K acc, pass@1, exact length, W1, mean/std length;
    `length` is `length_results_by_model(out, models)`."""
    rows = []
    for key, (name, folder) in zip(("base", "mdm", "flexmdm"), models.items()):
        gsm = _load(out / "eval" / key / "gsm8k" / "results.json")
        infill = _load(out / "eval" / key / "humaneval" / "results.json")
        lm = length[name]
        rows.append([
            name, _param_count(folder), _fmt(*_metric(gsm, "accuracy", "exact_match")),
            _fmt(*_metric(infill, "pass@1", "pass_at_1")), _fmt(*_metric(infill, "exact_length_rate")),
            _fmt(lm.get("wasserstein1"), digits=1),
            f"{_fmt(lm.get('mean'), digits=1)} / {_fmt(lm.get('std'), digits=1)}",
        ])  # fmt: skip
    data = length[next(iter(models))]
    rows.append(["GSM8K answers (data)", "", "", "", "", "0",
                 f"{_fmt(data.get('data_mean'), digits=1)} / {_fmt(data.get('data_std'), digits=1)}"])  # fmt: skip
    return rows


def length_verdict(w1: dict[str, float | None]) -> str:
    """One sentence comparing the FlexMDM's length W1 with the two fixed-length models' (issue #8).

    Args:
        w1: model name -> Wasserstein-1 distance (tokens) of its response lengths to the data's,
            with keys "base MDM", "MDM fine-tune", "FlexMDM"; None where the eval is missing.

    Returns:
        "Length: ..." stating plainly whether the FlexMDM is closer to the data than both.
    """
    flex, others = w1.get("FlexMDM"), {k: v for k, v in w1.items() if k != "FlexMDM"}
    if flex is None or any(v is None for v in others.values()):
        return "Length: not every model has a length result; no comparison."
    listed = ", ".join(f"{name} {value:.1f}" for name, value in others.items())
    if all(flex < v for v in others.values()):
        return f"Length: the FlexMDM is closest to the data's lengths (W1 {flex:.1f} tokens vs {listed})."
    return (
        f"Length: the FlexMDM is NOT closer to the data's lengths than both fixed-length models at this "
        f"budget (W1 {flex:.1f} tokens vs {listed})."
    )


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(map(str, r)) + " |" for r in rows])


def repro_section(folder: Path) -> str:
    """The small-scale reproduction's tables (`retrofit repro`, run as the demo's first stage)."""
    from retrofit.repro.report import render_tables

    results = _load(folder / "results.json")
    if not results:
        return "## Small-scale reproduction\n\n(not run)"
    tables = render_tables(results).replace("\n## ", "\n### ")
    return (
        "## Small-scale reproduction: FlexMDM vs MDM vs retrofit (`retrofit repro`)\n\n"
        + tables
        + f"\n\nSamples, plots and per-seed records: `{folder.name}/`."
    )


def write_report(out: Path, timings: list[dict], models: dict[str, Path], wall_s: float, smoke: bool) -> str:
    """Write `out/results.md` and return its text."""
    stage_rows = [[t["name"], "cached" if t["cached"] else f"{t['seconds']:.1f}"] for t in timings]
    header = ["model", "params", "GSM8K acc", "infill pass@1", "infill exact length",
              "length W1 vs data", "length mean / std"]  # fmt: skip
    length = length_results_by_model(out, models)
    rows = model_rows(out, models, length)
    w1 = {name: metrics.get("wasserstein1") for name, metrics in length.items()}
    text = "\n\n".join([
        f"# retrofit demo results{' (smoke run: minimal steps)' if smoke else ''}",
        f"Total wall time: {wall_s / 60:.1f} min.",
        repro_section(out / "repro"),
        "## Real-data pipeline: tiny LLaDA on GSM8K and HumanEval-infilling\n\n" + markdown_table(header, rows),
        length_verdict(w1),
        NOTE,
        "Length histogram: `eval/length/` (PNG).",
        "## Stages\n\n" + markdown_table(["stage", "seconds"], stage_rows),
    ])  # fmt: skip
    (out / "results.md").write_text(text + "\n")
    return text
