"""One text-in / text-out adapter over both samplers, used by every evaluation runner.

`TextGenerator` wraps a FlexMDM (`FlexMDMSampler`, variable length) or a LLaDA baseline
(`MDMSampler`, fixed canvas) with its tokenizer: text prompts -> `Completion`s, in batches,
with stop strings honoured (the decoded text is cut at the first stop string) and stop tokens
honoured (ids are cut at the first EOS / `<|eot_id|>`). Prompts are tokenized with
`add_special_tokens=False`, as in training (the chat template writes BOS itself).

Batch independence: row (example e, sample j) draws from its own stream keyed by
`row_seed(seed, e, j)`, where e is the example's identity given by the caller (its index in the
evaluated set; default its index in the call), and both samplers left-align rows. So a
completion does not depend on `batch_size`, on the order of the prompts, or on how many
processes share the set (up to float rounding of batched forward passes, which changes a draw
only at an exact near-tie). Rows are sorted by prompt length before they are cut into batches,
and the completions are returned in the callers' order: a batch's width is set by its longest
row (LLaDA: longest prompt + gen_length; FlexMDM: longest current row), so grouping similar
lengths keeps the pad that short rows carry small, and it costs nothing in reproducibility.

Response length (for `retrofit eval length`): the number of generated ids before the first stop
token. For FlexMDM that is the length the model chose; for LLaDA it is the position of the first
EOS in its fixed canvas (the whole canvas if it has none).

Example:
    >>> gen = TextGenerator.from_model_dir("runs/flexmdm-ift", steps=256, batch_size=8)
    >>> gen.generate([prompt_text], stop=["</answer>"], seed=0, example_ids=[41])[0].text
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from retrofit.sampling.load import KINDS


@dataclass(frozen=True)
class Completion:
    """One generation.

    Attributes:
        text: decoded generation (special tokens skipped), cut at the first stop string.
        token_ids: generated ids, cut at the first stop token (EOS / EoT).
        num_tokens: len(token_ids): the response (or infilled middle) length in tokens.
    """

    text: str
    token_ids: list[int] = field(default_factory=list)
    num_tokens: int = 0


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """`text` up to (not including) the earliest occurrence of any non-empty stop string."""
    cuts = [i for i in (text.find(s) for s in stop if s) if i >= 0]
    return text[: min(cuts)] if cuts else text


def cut_at_stop_ids(ids: Sequence[int], stop_ids: set[int]) -> list[int]:
    """`ids` up to (not including) the first id in `stop_ids`."""
    for i, token in enumerate(ids):
        if token in stop_ids:
            return list(ids[:i])
    return list(ids)


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Row indices sorted by length (stable: ties keep their order), cut into batches of
    `batch_size`. Example: lengths [5, 1, 3, 1], batch 2 -> [[1, 3], [2, 0]]."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


@dataclass
class TextGenerator:
    """Text prompts -> completions with a FlexMDM or a LLaDA model.

    Args:
        sampler: a `FlexMDMSampler` or an `MDMSampler` (holding the model).
        tokenizer: the model's tokenizer.
        kind: "flexmdm" or "llada".
        batch_size: rows (prompt x sample) per sampler call.
        forward_passes: running count of model forward passes (reported in results.json).
    """

    sampler: Any
    tokenizer: Any
    kind: str
    batch_size: int = 8
    forward_passes: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"TextGenerator.kind must be one of {KINDS}, got {self.kind!r}")
        if self.batch_size < 1:
            raise ValueError(f"TextGenerator.batch_size must be >= 1, got {self.batch_size}")

    @classmethod
    def from_model_dir(
        cls,
        model_dir: str | Path,
        *,
        steps: int | None = None,
        batch_size: int = 8,
        device: str | None = None,
        dtype: str | None = None,
        gen_length: int | None = None,
        block_length: int | None = None,
        prompt_template: str = "auto",
        **sampler_overrides: Any,
    ) -> TextGenerator:
        """Load a FlexMDM or LLaDA folder and build its sampler.

        Args:
            model_dir: checkpoint folder (config.json model_type "flexmdm" or "llada").
            steps: sampler steps (FlexMDM: tau-leaping steps; LLaDA: total steps); None = default.
            batch_size: rows per sampler call.
            device: "cpu", "cuda", ...; None = cuda when available.
            dtype: "bf16" / "fp32"; None = bf16 on GPU, fp32 on CPU.
            gen_length, block_length: LLaDA canvas and block sizes (ignored for FlexMDM).
            prompt_template: "auto" / "chat" / "plain" (see `load_model_dir`).
            **sampler_overrides: further FlexMDMSamplerConfig / MDMSamplerConfig fields.

        Raises:
            FileNotFoundError / ValueError: from the loader (names the folder and the problem).
        """
        from retrofit.sampling.load import make_sampler

        model, tokenizer, kind = load_model_dir(
            model_dir, device=device, dtype=dtype, prompt_template=prompt_template
        )
        sampler = make_sampler(model, tokenizer, kind, steps=steps, gen_length=gen_length,
                               block_length=block_length, **sampler_overrides)  # fmt: skip
        return cls(sampler=sampler, tokenizer=tokenizer, kind=kind, batch_size=batch_size)

    @property
    def model(self) -> Any:
        return self.sampler.model

    def settings(self) -> dict[str, Any]:
        """Sampler settings for results.json: kind, config fields and the schedules in use."""
        out: dict[str, Any] = {"kind": self.kind, "batch_size": self.batch_size}
        out.update(dataclasses.asdict(self.sampler.config))
        if self.kind == "flexmdm":
            mc = self.model.config
            out["model_insertion_schedule"] = getattr(mc, "insertion_schedule", None)
            out["model_unmasking_schedule"] = getattr(mc, "unmasking_schedule", None)
        return out

    def steps(self) -> int:
        """Sampler steps per generation (the forward passes of one row, fill passes excluded)."""
        return int(self.sampler.config.steps)

    def prompt_budget(self, max_new_tokens: int | None = None) -> int:
        """Longest prompt (tokens) that leaves room for `max_new_tokens`: FlexMDM max_length minus
        it; LLaDA max_sequence_length minus gen_length. At least 1."""
        if self.kind == "flexmdm":
            return max(1, self.sampler.config.max_length - (max_new_tokens or 0))
        return max(1, int(self.model.config.max_sequence_length) - self.sampler.config.gen_length)

    def encode(self, text: str) -> list[int]:
        """Token ids of `text` without added special tokens (the chat template holds BOS)."""
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def generate(
        self,
        prompts: Sequence[str],
        *,
        stop: Sequence[str] = (),
        num_samples: int = 1,
        seed: int = 0,
        max_new_tokens: int | None = None,
        truncate_left: bool = False,
        example_ids: Sequence[int] | None = None,
        first_samples: Sequence[int] | None = None,
    ) -> list[Completion]:
        """Continue each prompt `num_samples` times (rows prompt-major).

        Args:
            prompts: prompt texts (already in the model's format, e.g. gsm8k_format.build_prompt).
            stop: stop strings; each completion's text is cut at the earliest one.
            num_samples: completions per prompt.
            seed: base seed; row (prompt i, sample j) draws from `row_seed(seed, example_ids[i], j)`.
            max_new_tokens: keep at most this many generated ids (None = all). The samplers'
                own caps are FlexMDMSamplerConfig.max_length and MDMSamplerConfig.gen_length.
            truncate_left: drop the oldest prompt tokens beyond `prompt_budget(max_new_tokens)`
                (as lm-eval's HF model does) instead of letting the sampler reject the prompt.
            example_ids: each prompt's identity (its index in the evaluated set, whatever the
                rank or batch); None = 0, 1, ... in this call.
            first_samples: each prompt's first sample number (default 0): a caller that passes
                one prompt several times (lm-eval's repeats) gives the copies 0, 1, ...

        Returns:
            len(prompts) * num_samples completions, in the order of `prompts` (prompt-major).

        Raises:
            ValueError: example_ids does not hold one integer per prompt.
        """
        budget = self.prompt_budget(max_new_tokens) if truncate_left else None
        encoded = [self.encode(p)[-budget:] if budget else self.encode(p) for p in prompts]
        rows = [ids for ids in encoded for _ in range(num_samples)]
        keys = _row_keys(len(prompts), num_samples, seed, example_ids, first_samples)

        def run(idx: list[int]):
            return self.sampler.sample([rows[i] for i in idx], row_keys=[keys[i] for i in idx])

        return self._batched([len(r) for r in rows], run, stop, max_new_tokens)

    def infill(
        self,
        prefixes: Sequence[str],
        suffixes: Sequence[str],
        *,
        num_samples: int = 1,
        seed: int = 0,
        example_ids: Sequence[int] | None = None,
    ) -> list[Completion]:
        """Fill the middle between each prefix and suffix (`num_samples` per pair, prompt-major).

        FlexMDM: boundary format, prefix + B and B + suffix, variable-length middle (docs/method.md §4.4,
        §6.2). LLaDA: its FIM format with a fixed budget of `gen_length` tokens, cut at EOS.
        seed, example_ids: as in `generate` (one id per pair). Rows are sorted by prefix +
        suffix length into batches.

        Raises:
            ValueError: the two lists differ in length, or bad example_ids.
        """
        from retrofit.data.infill_format import encode_segments, infill_prompt_ids

        if len(prefixes) != len(suffixes):
            raise ValueError(f"infill: {len(prefixes)} prefixes but {len(suffixes)} suffixes")
        if self.kind == "flexmdm":
            pairs = [infill_prompt_ids(self.tokenizer, p, s) for p, s in zip(prefixes, suffixes)]
        else:
            pairs = [(encode_segments(self.tokenizer, [p]), encode_segments(self.tokenizer, [s]))
                     for p, s in zip(prefixes, suffixes)]  # fmt: skip
        rows = [pair for pair in pairs for _ in range(num_samples)]
        keys = _row_keys(len(pairs), num_samples, seed, example_ids)

        def run(idx: list[int]):
            return self.sampler.infill([rows[i][0] for i in idx], [rows[i][1] for i in idx],
                                       row_keys=[keys[i] for i in idx])  # fmt: skip

        return self._batched([len(p) + len(s) for p, s in rows], run, ())

    def _batched(
        self, lengths: list[int], run: Callable, stop: Sequence[str], max_new_tokens: int | None = None
    ) -> list[Completion]:
        """`run(row indices)` on length-sorted batches; completions in row order."""
        out: list[Completion | None] = [None] * len(lengths)
        for idx in length_sorted_batches(lengths, self.batch_size):
            result = run(idx)
            self.forward_passes += int(result.num_forward_passes)
            for i, ids in zip(idx, result.generated):
                out[i] = self._completion(ids[:max_new_tokens], stop)
        return out

    def _completion(self, ids: list[int], stop: Sequence[str]) -> Completion:
        ids = cut_at_stop_ids(ids, self.stop_token_ids())
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        return Completion(text=cut_at_stop(text, stop), token_ids=ids, num_tokens=len(ids))

    def stop_token_ids(self) -> set[int]:
        """EOS and `<|eot_id|>` ids of the tokenizer (those that exist)."""
        ids = {self.tokenizer.eos_token_id, self.tokenizer.get_vocab().get("<|eot_id|>")}
        return {int(i) for i in ids if i is not None}


def _row_keys(
    num_prompts: int,
    num_samples: int,
    seed: int,
    example_ids: Sequence[int] | None,
    first_samples: Sequence[int] | None = None,
) -> list[int]:
    """Key of row (prompt i, sample j): row_seed(seed, example_ids[i], first_samples[i] + j).

    Raises:
        ValueError: a list does not hold one integer per prompt.
    """
    from retrofit.sampling.draws import row_seed

    ids = _int_list(range(num_prompts) if example_ids is None else example_ids, num_prompts, "example_ids")
    firsts = _int_list(
        [0] * num_prompts if first_samples is None else first_samples, num_prompts, "first_samples"
    )
    return [row_seed(seed, e, f + j) for e, f in zip(ids, firsts) for j in range(num_samples)]


def _int_list(values: Sequence[int], n: int, name: str) -> list[int]:
    values = list(values)
    if len(values) != n:
        raise ValueError(f"{name}: {len(values)} values for {n} prompts; pass one integer per prompt")
    try:
        return [operator.index(v) for v in values]
    except TypeError:
        raise ValueError(f"{name} must be integers, got {values[:4]}") from None


def load_model_dir(
    model_dir: str | Path,
    *,
    device: str | None = None,
    dtype: str | None = None,
    prompt_template: str = "auto",
) -> tuple[Any, Any, str]:
    """`retrofit.sampling.load.load_model`, requiring a tokenizer (evaluation works on text).

    Args:
        model_dir: folder with config.json (model_type "flexmdm" or "llada"), weights, tokenizer.
        device: target device; None = "cuda" when available, else "cpu".
        dtype: "bf16" or "fp32"; None = bf16 on GPU, fp32 on CPU.
        prompt_template: "auto" (the template recorded at export), "chat" or "plain"; see
            `retrofit.evaluation.prompt_template.apply_prompt_template` ("plain" switches the
            tokenizer's chat template off).

    Returns:
        (model in eval mode, tokenizer, kind).

    Raises:
        FileNotFoundError: no config.json, or no tokenizer files in the folder.
        ValueError: an unknown model_type, dtype or prompt template.
    """
    from retrofit.evaluation.prompt_template import apply_prompt_template
    from retrofit.sampling.load import load_model

    model, tokenizer, kind = load_model(model_dir, device=device, dtype=dtype)
    if tokenizer is None:
        raise FileNotFoundError(
            f"{model_dir} has no tokenizer files (tokenizer.json / tokenizer_config.json); evaluation needs "
            "the model's tokenizer: copy the base model's tokenizer files into the folder"
        )
    apply_prompt_template(tokenizer, model_dir, prompt_template)
    return model, tokenizer, kind


# ------------------------------------------------------------------------- data parallel
def _partial_state():
    """accelerate's PartialState under a multi-process launch (WORLD_SIZE > 1), else None.

    On a machine without CUDA (or with ACCELERATE_USE_CPU set) it is created with `cpu=True`:
    plain `PartialState()` there reports a single process even under `accelerate launch`.
    """
    import os

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    from accelerate import PartialState

    use_cpu = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")
    return PartialState(cpu=use_cpu or not torch.cuda.is_available())


def rank_and_world() -> tuple[int, int]:
    """(rank, world size) of this process: accelerate's PartialState under a multi-process
    launch (`accelerate launch`, `torchrun`; WORLD_SIZE > 1), else (0, 1)."""
    state = _partial_state()
    return (state.process_index, state.num_processes) if state is not None else (0, 1)


def process_device() -> str | None:
    """This process's accelerate device under a multi-process launch (e.g. "cuda:1"), else None."""
    state = _partial_state()
    return str(state.device) if state is not None else None


def gather_to_main(items: list[Any], world: int) -> list[Any] | None:
    """Concatenate every rank's `items` on rank 0 (rank order); None on the other ranks."""
    if world <= 1:
        return list(items)
    import torch.distributed as dist

    rank = dist.get_rank()
    parts = [None] * world if rank == 0 else None
    dist.gather_object(items, parts, dst=0)
    return [x for part in parts for x in part] if rank == 0 else None


@torch.no_grad()
def time_forward_pass(generator: TextGenerator, width: int = 512, rows: int = 1) -> float:
    """Seconds of one model forward pass on a [rows, width] canvas (after one warm-up pass).

    Used to print a time estimate before long runs; the canvas holds token id 0 everywhere.
    """
    import time

    model = generator.model
    device = next(model.parameters()).device
    x = torch.zeros(rows, width, dtype=torch.long, device=device)

    def once() -> None:
        model(x, torch.full((rows,), 0.5, device=device)) if generator.kind == "flexmdm" else model(x)
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    once()
    start = time.perf_counter()
    once()
    return time.perf_counter() - start
