"""GSM8K-shaped sampling workload: long few-shot prompts, fast settings vs the exact sampler (issue #14).

Each prompt is a GSM8K test question preceded by solved train examples (`evaluation.gsm8k.
fewshot_prompt`, up to 8 shots) until it has about ``prompt_tokens`` tokens in the model's
tokenizer; each row generates up to ``gen_tokens`` tokens (FlexMDM: max_length = prompt +
gen_tokens; LLaDA: gen_length = gen_tokens in blocks of ``block_length``) at temperature 0. For each
setting of `retrofit.bench.sample_settings.SETTINGS` it reports trunk position-layers, forward
passes and CPU wall time per sample, and the token agreement with ``exact-256`` on the same rows
and seeds: per row, tokens equal at the same index / the longer of the two generations, averaged.

    retrofit bench sample --workload gsm8k --model checkpoints/flexmdm-gsm8k --prompts 4
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

__all__ = ["gsm8k_prompts", "run_workload", "token_agreement"]


def gsm8k_prompts(
    tokenizer: Any, n: int, prompt_tokens: int = 900, max_shots: int = 8, data_dir: str | None = None
) -> list[list[int]]:
    """Token ids of ``n`` few-shot GSM8K prompts of about ``prompt_tokens`` tokens each.

    Shots are the first train rows, added one at a time until the prompt reaches the target (at
    most ``max_shots``); the prompt is built as the evaluation builds it (chat template if any)
    and cut to its last ``prompt_tokens`` tokens, so every row has the same shape.
    """
    from retrofit.data.gsm8k_format import load_gsm8k
    from retrofit.evaluation.gsm8k import fewshot_prompt

    shots, questions = load_gsm8k("train", data_dir)[:max_shots], load_gsm8k("test", data_dir)[:n]
    prompts = []
    for row in questions:
        for k in range(max_shots + 1):
            ids = tokenizer(fewshot_prompt(row["question"], tokenizer, shots[:k]), add_special_tokens=False)
            if len(ids["input_ids"]) >= prompt_tokens:
                break
        prompts.append(list(ids["input_ids"])[-prompt_tokens:])  # the question stays at the end
    return prompts


def token_agreement(reference: Sequence[Sequence[int]], other: Sequence[Sequence[int]]) -> float:
    """Mean over rows of (tokens equal at the same index) / max(len_ref, len_other); 1 for two empties."""
    scores = []
    for a, b in zip(reference, other):
        longest = max(len(a), len(b))
        scores.append(1.0 if longest == 0 else sum(x == y for x, y in zip(a, b)) / longest)
    return sum(scores) / max(len(scores), 1)


def _random_model(size: str, layers: int | None, kind: str, device: str, dtype: Any, seed: int) -> Any:
    """A randomly initialised model of a benchmark size (no tokenizer), in eval mode."""
    from retrofit.bench.configs import build_llada
    from retrofit.models.flexmdm import FlexMDMModel

    llada = build_llada(size, layers=layers, device=device, dtype=dtype, seed=seed).eval()
    if kind == "llada":
        return llada
    return (
        FlexMDMModel.from_llada(llada, canvas_width=2048, length_scale=4.0, seed=seed)
        .to(device=device, dtype=dtype)
        .eval()
    )


def _timed_sample(sampler: Any, rows: list[list[int]], seed: int, device: torch.device) -> tuple[Any, float]:
    """(SampleOutput, wall seconds) of one sampler call (CUDA synchronised around it)."""
    from retrofit.bench.common import time_once

    outs: list[Any] = []
    seconds = time_once(lambda: outs.append(sampler.sample(rows, seed=seed)), device)
    return outs[0], seconds


def run_workload(
    model_dir: str | Path | None,
    settings: dict[str, dict[str, Any]],
    *,
    prompts: int = 4,
    prompt_tokens: int = 900,
    gen_tokens: int = 256,
    block_length: int = 32,
    seed: int = 0,
    data_dir: str | None = None,
    size: str = "tiny",
    layers: int | None = None,
    kind: str = "flexmdm",
    device: str = "cpu",
    dtype: str = "fp32",
    log: Any = print,
) -> dict[str, Any]:
    """Run every setting on the GSM8K-shaped workload; the first setting is the reference.

    With ``model_dir`` None the model is a random one of benchmark ``size`` / ``layers`` and
    ``kind`` ("flexmdm" or "llada"; length head scaled to ~4 insertions per gap) and the prompts are
    random token ids of ``prompt_tokens`` tokens: cost and time are those of the shape, agreement
    is that of an untrained model (`eval/bench/gpu.sh` runs the LLaDA-8B shape this way).

    Returns:
        payload {"benchmark": "sample-workload", "rows": [...], ...} with per-setting
        trunk_position_layers_per_sample, forward_passes_per_sample, seconds_per_sample,
        flops_reduction and wall_time_ratio (reference / setting) and token_agreement.

    Raises:
        ValueError: gen_tokens not a multiple of block_length (LLaDA), or a setting's steps not
            divisible by the number of LLaDA blocks.
    """
    from retrofit.bench.common import autocast, machine_info, resolve_dtype
    from retrofit.bench.sample_settings import count_calls
    from retrofit.sampling.load import load_model, make_sampler

    if model_dir is not None:
        model, tokenizer, kind = load_model(model_dir, dtype=dtype, device=device)
        rows_in = gsm8k_prompts(tokenizer, prompts, prompt_tokens, data_dir=data_dir)
    else:
        from retrofit.bench.configs import SIZES

        model, tokenizer = _random_model(size, layers, kind, device, resolve_dtype(dtype), seed), None
        gen = torch.Generator().manual_seed(seed)
        rows_in = torch.randint(
            min(SIZES[size].mask_id, SIZES[size].pad_id), (prompts, prompt_tokens), generator=gen
        ).tolist()
    n_layers = int(getattr(model.config, "num_hidden_layers", None) or model.config.n_layers)
    rows, reference = [], None
    shape = (dict(max_length=max(map(len, rows_in)) + gen_tokens) if kind == "flexmdm"
             else dict(gen_length=gen_tokens, block_length=block_length))  # fmt: skip
    for name, options in settings.items():
        sampler = make_sampler(model, tokenizer, kind, temperature=0.0, **shape)
        sampler = dataclasses.replace(sampler, config=dataclasses.replace(sampler.config, **options))
        with count_calls(model) as count, autocast(torch.device(device), resolve_dtype(dtype)):
            out, seconds = _timed_sample(sampler, rows_in, seed, torch.device(device))
        row = {"setting": name, "kind": kind,
               "trunk_position_layers_per_sample": count.trunk_positions * n_layers / len(rows_in),
               "forward_passes_per_sample": count.rows / len(rows_in), "seconds_per_sample": seconds / len(rows_in),
               "mean_generated": sum(map(len, out.generated)) / len(rows_in)}  # fmt: skip
        if reference is None:
            reference = (row, out.generated)
        ref_row, ref_out = reference
        row["flops_reduction"] = (
            ref_row["trunk_position_layers_per_sample"] / row["trunk_position_layers_per_sample"]
        )
        row["wall_time_ratio"] = ref_row["seconds_per_sample"] / row["seconds_per_sample"]
        row["token_agreement"] = token_agreement(ref_out, out.generated)
        rows.append(row)
        if row["mean_generated"] == 0:
            log(f"  workload {name}: warning: the model generated nothing on these prompts; token agreement "
                "compares empty outputs and says nothing (a model that writes text is needed)")  # fmt: skip
        log(f"  workload {name}: {seconds:.1f} s, x{row['flops_reduction']:.1f} fewer trunk FLOPs, "
            f"agreement {row['token_agreement']:.3f}")  # fmt: skip
    return {
        "benchmark": "sample-workload",
        "machine": machine_info(device),
        "options": {
            "device": device,
            "dtype": dtype,
            "prompts": prompts,
            "size": None if model_dir else size,
            "layers": layers,
        },
        "model_dir": None if model_dir is None else str(model_dir),
        "prompt_lengths": [len(p) for p in rows_in],
        "gen_tokens": gen_tokens,
        "rows": rows,
        "settings": settings,
    }
