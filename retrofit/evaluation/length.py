"""Length-statistics runner: generated response lengths vs the data's
(docs/method.md §6.4, "Length statistics").

For each model folder, N responses are sampled (`per-prompt`: one per GSM8K question of the
test split, in order; `unconditional`: N from an empty prompt) and their lengths in tokens are
compared with reference lengths under the same model's tokenizer: GSM8K targets
(`gsm8k_format.build_target`, i.e. the training response text) or the `response` / `text`
field of a JSONL file. FlexMDM lengths are the number of generated tokens; LLaDA lengths are
the position of the first EOS in its fixed canvas (its `gen_length` when it emits none).

Outputs in `out_dir`: `results.json` (per model: mean, std, W1, KS, n, plus the mean's standard
error, sampler settings and model hash), `samples.jsonl` (model, index, length) and
`length_hist.png` (the data and every model on one plot).

Example:
    retrofit eval length runs/flexmdm-ift runs/llada-ift --data gsm8k --num-samples 256 --per-prompt
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from retrofit.data.gsm8k_format import build_prompt, build_target, load_gsm8k
from retrofit.evaluation.generation import TextGenerator
from retrofit.evaluation.length_stats import length_metrics, plot_length_histograms
from retrofit.evaluation.results import model_hash, write_results

MODES = ("per-prompt", "unconditional")
RESPONSE_FIELDS = ("response", "text", "target", "answer")
PLOT_FILE = "length_hist.png"


def reference_rows(
    data: str, data_dir: str | os.PathLike | None = None, split: str = "test"
) -> list[dict[str, str]]:
    """Reference examples as {"prompt": str | None, "response": str}.

    Args:
        data: "gsm8k" (prompt = the question, response = build_target(answer)) or a path to a
            JSONL file whose rows hold the response in one of `RESPONSE_FIELDS` and optionally a
            "prompt" (or "question") field.
        data_dir: GSM8K data folder (default env RETROFIT_DATA_DIR, else the Hub).
        split: GSM8K split.

    Raises:
        FileNotFoundError: the JSONL path does not exist.
        ValueError: a JSONL row has no response field (the message names file and line).
    """
    if data == "gsm8k":
        return [
            {"question": r["question"], "response": build_target(r["answer"])}
            for r in load_gsm8k(split, data_dir)
        ]
    path = Path(data).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"--data {path}: no such file; pass 'gsm8k' or a JSONL file")
    rows = []
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        row = json.loads(line)
        field = next((f for f in RESPONSE_FIELDS if isinstance(row.get(f), str)), None)
        if field is None:
            raise ValueError(f"{path}:{line_no}: a row needs a string field among {RESPONSE_FIELDS}")
        rows.append({"prompt": row.get("prompt"), "question": row.get("question"), "response": row[field]})
    return rows


def prompt_text(row: dict[str, Any], tokenizer: Any) -> str:
    """The prompt of a reference row: build_prompt(question) for GSM8K-style rows, else "prompt"."""
    if row.get("question"):
        return build_prompt(row["question"], tokenizer)
    if row.get("prompt") is None:
        raise ValueError("--per-prompt needs rows with a 'question' or 'prompt' field; use --unconditional")
    return row["prompt"]


def model_lengths(
    generator: TextGenerator, rows: list[dict], mode: str, num_samples: int, seed: int
) -> list[int]:
    """Generated response lengths (tokens): one per row of rows[:num_samples], or num_samples unconditional.

    Row i is keyed by (seed, i, 0) (per-prompt) and unconditional sample j by (seed, 0, j), so the
    lengths do not depend on the generator's batch size."""
    if mode not in MODES:
        raise ValueError(f"length mode must be one of {MODES}, got {mode!r}")
    if mode == "per-prompt":
        prompts = [prompt_text(r, generator.tokenizer) for r in rows[:num_samples]]
        return [c.num_tokens for c in generator.generate(prompts, seed=seed, example_ids=range(len(prompts)))]
    return [
        c.num_tokens for c in generator.generate([""], num_samples=num_samples, seed=seed, example_ids=[0])
    ]


def run_length(
    model_dirs: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    load: Callable[[str], TextGenerator],
    data: str = "gsm8k",
    mode: str = "per-prompt",
    num_samples: int = 64,
    seed: int = 0,
    data_dir: str | os.PathLike | None = None,
    labels: Sequence[str] | None = None,
) -> dict[str, float]:
    """Sample, compare and plot; returns the flat metrics {"<label>/<metric>": value}.

    Args:
        model_dirs: checkpoint folders (FlexMDM and/or LLaDA), one curve each.
        out_dir: output folder.
        load: model folder -> TextGenerator (the CLI builds it with its sampler options).
        data: "gsm8k" or a JSONL path (see `reference_rows`).
        mode: "per-prompt" (data lengths = the same rows' responses) or "unconditional" (data
            lengths = every reference response).
        num_samples: N generated sequences per model.
        seed: sampling seed (the same for every model).
        data_dir: GSM8K data folder.
        labels: curve labels (default: each folder's name).
    """
    start = time.monotonic()
    rows = reference_rows(data, data_dir)
    labels = list(labels or [Path(d).name or str(d) for d in model_dirs])
    metrics: dict[str, float] = {}
    curves: dict[str, list[int]] = {}
    samples: list[dict] = []
    per_model: dict[str, Any] = {}
    reference: list[int] | None = None
    for label, folder in zip(labels, model_dirs):
        t0 = time.monotonic()
        generator = load(str(folder))
        ref_rows = rows[:num_samples] if mode == "per-prompt" else rows
        data_len = [len(generator.encode(r["response"])) for r in ref_rows]
        lengths = model_lengths(generator, rows, mode, num_samples, seed)
        stats = length_metrics(lengths, data_len)
        stats["mean_stderr"] = (
            stats["std"] * math.sqrt(stats["n"] / max(stats["n"] - 1, 1)) / math.sqrt(stats["n"])
        )
        metrics.update({f"{label}/{k}": v for k, v in stats.items()})
        curves[label] = lengths
        reference = reference if reference is not None else data_len
        samples.extend({"model": label, "index": i, "length": n} for i, n in enumerate(lengths))
        per_model[label] = {"model_dir": str(folder), "model_hash": model_hash(folder), "kind": generator.kind,
                            "sampler": generator.settings(), "seconds": time.monotonic() - t0}  # fmt: skip
    plot = plot_length_histograms(reference or [], curves, Path(out_dir) / PLOT_FILE,
                                  title=f"Response lengths ({data}, {mode})")  # fmt: skip
    config = {"task": "length", "data": data, "mode": mode, "num_samples": num_samples, "seed": seed,
              "models": per_model, "plot": str(plot), "data_lengths_tokenizer": labels[0]}  # fmt: skip
    write_results(out_dir, config=config, metrics=metrics, samples=samples,
                  timings={"total_s": time.monotonic() - start})  # fmt: skip
    return metrics
