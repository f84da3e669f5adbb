"""lm-eval `LM` classes for FlexMDM and LLaDA checkpoints: `--model flexmdm` / `--model llada`.

Importing this module registers both names with lm-eval's model registry (it imports lm_eval;
every other retrofit module imports lm_eval lazily). lm-eval's own CLI cannot import it, so run
through `retrofit eval lm-eval ...` (which imports it, then calls lm-eval's CLI) or pass an
instance to `simple_evaluate`.

* `generate_until`: the samplers through `TextGenerator` (batched; each decoded text is cut at
  the first stop string of the request's `until`; ids at the first EOS / EoT; at most
  `max_gen_toks` tokens are kept; contexts longer than the sampler allows lose their oldest
  tokens, as in lm-eval's HF model). The request's `temperature` / `do_sample` are not read:
  sampling settings come from `--model_args` (e.g. `temperature=0`). Each request draws from
  its own stream keyed by `seed` and its identity (`request_identity`: task, doc_id, idx, and
  the copy number of lm-eval's repeats), so a text does not depend on batch size, request order
  or the number of processes.
* `loglikelihood`: -(MC ELBO) of the continuation given the context: LLaDA's stratified
  estimator for LLaDA (docs/method.md §4.10), the FlexMDM bound for FlexMDM (§3.4); `is_greedy` from
  one-shot argmax decoding of the masked continuation. Every request uses a fresh generator
  seeded with `seed`, so scores do not depend on batching or on the number of processes.
* `loglikelihood_rolling`: the same bound over lm-eval's disjoint rolling windows.

Data parallel: under `accelerate launch` / `torchrun` (WORLD_SIZE > 1) rank and world size come
from accelerate's `PartialState`, each rank loads the model on its own device, and
`all_gather` / `gather_object` / `barrier` use torch.distributed (gloo on CPU, NCCL on GPU).

Example:
    retrofit eval lm-eval --model flexmdm --model_args pretrained=runs/ift,steps=256 \\
        --tasks gsm8k_flexmdm --apply_chat_template --limit 5
    ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 -m retrofit.cli eval \\
        lm-eval --model llada --model_args pretrained=LLaDA-8B-Base,gen_length=256 --tasks gsm8k
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from typing import Any, ClassVar

import torch
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

from retrofit.evaluation.generation import (
    TextGenerator,
    load_model_dir,
    process_device,
    rank_and_world,
)
from retrofit.evaluation.likelihood import flexmdm_nll, greedy_match, llada_nll
from retrofit.sampling.load import make_sampler

__all__ = ["FlexMDMLM", "LLaDALM", "RetrofitLM", "request_identity"]


def request_identity(request: Any, position: int) -> int:
    """A stable integer identity of an lm-eval request: a mix of its (task_name, doc_id, idx),
    the same on every rank and in every batch; `position` (its index in the list) when the
    request carries no doc_id (requests built by hand)."""
    from retrofit.sampling.draws import row_seed

    doc_id = getattr(request, "doc_id", None)
    if doc_id is None:
        return int(position)
    digest = hashlib.blake2b(str(getattr(request, "task_name", "")).encode(), digest_size=8).digest()
    return row_seed(int.from_bytes(digest, "little"), int(doc_id), int(getattr(request, "idx", 0) or 0))


def _as_int(value: Any, default: int) -> int:
    """lm-eval passes batch_size as int, numeric str or "auto"; "auto" / None -> default."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


class RetrofitLM(LM):
    """Shared lm-eval adapter; subclasses fix `KIND` ("flexmdm" or "llada").

    Args (lm-eval `--model_args` / `simple_evaluate(model_args=...)`):
        pretrained: checkpoint folder (model_type must match the class); ignored when
            `generator` is given.
        steps: sampler steps (None = sampler default / config.json sampler_defaults).
        batch_size: rows per sampler call (lm-eval's `--batch_size`; "auto" -> 8).
        mc_num: MC rows per loglikelihood request (LLaDA rows / FlexMDM time draws); default 128.
        mc_batch_size: rows per forward pass in the likelihood (the stratification group).
        seed: base seed of sampling and of every likelihood request.
        device: e.g. "cuda:0" / "cpu" (None: the process's accelerate device, or cuda if any).
        dtype: "bf16" / "fp32" (None: bf16 on GPU, fp32 on CPU).
        gen_length, block_length: LLaDA generation canvas (ignored by FlexMDM).
        max_length: longest context + continuation for loglikelihood_rolling windows (None:
            FlexMDM canvas_width, LLaDA max_sequence_length).
        generator: an already loaded `TextGenerator` to reuse (Python callers only).
        prompt_template: "auto" (the template recorded at export), "chat" or "plain".
        **sampler_kwargs: further sampler config fields (e.g. temperature=0, confidence=top_prob).

    Raises:
        ValueError: the folder holds the other model kind.
    """

    KIND: ClassVar[str] = ""

    def __init__(
        self,
        pretrained: str | None = None,
        steps: int | None = None,
        batch_size: int | str | None = 8,
        mc_num: int = 128,
        mc_batch_size: int = 32,
        seed: int = 1234,
        device: str | None = None,
        dtype: str | None = None,
        gen_length: int | None = None,
        block_length: int | None = None,
        max_length: int | None = None,
        max_batch_size: int | None = None,
        generator: TextGenerator | None = None,
        prompt_template: str = "auto",
        **sampler_kwargs: Any,
    ):
        super().__init__()
        self._rank, self._world_size = rank_and_world()
        if generator is None:
            if pretrained is None:
                raise ValueError(f"--model {self.KIND} needs --model_args pretrained=DIR")
            if device and str(device).startswith("cuda") and not torch.cuda.is_available():
                device = None  # lm-eval's CLI passes --device cuda by default; use the CPU here
            model, tokenizer, kind = load_model_dir(
                pretrained, device=process_device() or device, dtype=dtype, prompt_template=prompt_template
            )
            sampler = make_sampler(model, tokenizer, kind, steps=steps, gen_length=gen_length,
                                    block_length=block_length, **sampler_kwargs)  # fmt: skip
            generator = TextGenerator(sampler, tokenizer, kind, batch_size=_as_int(batch_size, 8))
        if generator.kind != self.KIND:
            raise ValueError(
                f"--model {self.KIND}: {pretrained or 'the generator'} holds a {generator.kind!r} "
                f"checkpoint; use --model {generator.kind}"
            )
        self.generator, self.tokenizer = generator, generator.tokenizer
        model, kind = generator.model, generator.kind
        self._device = next(model.parameters()).device
        self.mc_num, self.mc_batch_size, self.seed = int(mc_num), int(mc_batch_size), int(seed)
        default_len = model.config.canvas_width if kind == "flexmdm" else model.config.max_sequence_length
        self.max_length = int(max_length or default_len)

    @property
    def model(self):
        return self.generator.model

    # ------------------------------------------------------------------------- generation
    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """Texts for `(context, gen_kwargs)` requests, in request order (see module docstring).

        Request i is example `request_identity(request, i)`; the k-th copy of one request (lm-eval
        passes a request `repeats` times) is its sample k."""
        groups: dict[tuple, list[int]] = defaultdict(list)
        identities = [request_identity(r, i) for i, r in enumerate(requests)]
        seen: Counter = Counter()
        copies = []
        for identity in identities:
            copies.append(seen[identity])
            seen[identity] += 1
        for i, request in enumerate(requests):
            kwargs = dict(request.args[1] or {})
            until = kwargs.get("until") or [self.tokenizer.decode([self.tokenizer.eos_token_id])]
            until = [until] if isinstance(until, str) else list(until)
            groups[(tuple(until), kwargs.get("max_gen_toks"))].append(i)
        out: list[str] = [""] * len(requests)
        for (until, max_gen), idx in groups.items():
            contexts = [requests[i].args[0] for i in idx]
            completions = self.generator.generate(
                contexts, stop=until, seed=self.seed, max_new_tokens=max_gen, truncate_left=True,
                example_ids=[identities[i] for i in idx], first_samples=[copies[i] for i in idx],
            )  # fmt: skip
            for i, completion in zip(idx, completions):
                out[i] = completion.text
                self.cache_hook.add_partial("generate_until", requests[i].args, completion.text)
        return out

    # ------------------------------------------------------------------------- likelihood
    def _encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """Context / continuation ids; trailing context spaces move to the continuation (as HFLM)."""
        spaces = len(context) - len(context.rstrip())
        if spaces:
            context, continuation = context[:-spaces], context[-spaces:] + continuation
        whole = self.generator.encode(context + continuation)
        context_ids = self.generator.encode(context)
        return context_ids, whole[len(context_ids) :]

    def _nll(self, context_ids: list[int], target_ids: list[int]) -> float:
        gen = torch.Generator().manual_seed(self.seed)
        if self.KIND == "flexmdm":
            return flexmdm_nll(self.model, context_ids, target_ids, num_t=self.mc_num,
                               batch_size=self.mc_batch_size, generator=gen)  # fmt: skip
        return llada_nll(self.model, context_ids, target_ids, mask_id=self._mask_id(), mc_num=self.mc_num,
                         batch_size=self.mc_batch_size, generator=gen)  # fmt: skip

    def _mask_id(self) -> int:
        return int(self.model.config.mask_token_id)

    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        """(log p lower bound, is_greedy) per `(context, continuation)` request."""
        results = []
        for request in requests:
            context_ids, target_ids = self._encode_pair(*request.args)
            logp = -self._nll(context_ids, target_ids)
            greedy = greedy_match(self.model, context_ids, target_ids, mask_id=self._mask_id(),
                                  flexmdm=self.KIND == "flexmdm")  # fmt: skip
            results.append((logp, greedy))
            self.cache_hook.add_partial("loglikelihood", request.args, (logp, greedy))
        return results

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """Sum over disjoint windows of the log-likelihood bound, per `(text,)` request."""
        prefix = self.tokenizer.bos_token_id
        prefix = self.tokenizer.eos_token_id if prefix is None else prefix
        results = []
        for request in requests:
            ids = self.generator.encode(request.args[0])
            windows = get_rolling_token_windows(ids, prefix, self.max_length - 1, 1)
            total = -sum(self._nll(*make_disjoint_window(w)) for w in windows)
            results.append(total)
            self.cache_hook.add_partial("loglikelihood_rolling", request.args, total)
        return results

    # ------------------------------------------------------------------------- chat template
    def apply_chat_template(
        self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True
    ) -> str:
        """The tokenizer's chat template; a final assistant turn is a prefill (continued, not closed).

        This makes lm-eval's `gen_prefix` + `--apply_chat_template` produce exactly
        `gsm8k_format.build_prompt(question, tokenizer)`.
        """
        messages = list(chat_history)
        prefill = ""
        if messages and messages[-1]["role"] == "assistant":
            prefill = messages.pop()["content"]
            add_generation_prompt = True
        text = self.tokenizer.apply_chat_template(messages, tokenize=False,
                                                  add_generation_prompt=add_generation_prompt)  # fmt: skip
        return text + prefill

    @property
    def tokenizer_name(self) -> str:
        return str(getattr(self.tokenizer, "name_or_path", "tokenizer")).replace("/", "__")

    # ------------------------------------------------------------------------- distributed
    def all_gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """Concatenation over ranks of `tensor` (0-dim tensors become length-1)."""
        if self.world_size <= 1:
            return tensor
        local = tensor.reshape(1) if tensor.ndim == 0 else tensor.contiguous()
        parts = [torch.empty_like(local) for _ in range(self.world_size)]
        torch.distributed.all_gather(parts, local)
        return torch.cat(parts)

    def gather_object(self, obj: Any, dst: int = 0) -> list[Any] | None:
        """List of every rank's `obj` on rank `dst`, None elsewhere."""
        if self.world_size <= 1:
            return [obj]
        result = [None] * self.world_size if self.rank == dst else None
        torch.distributed.gather_object(obj, result, dst=dst)
        return result

    def barrier(self) -> None:
        if self.world_size > 1:
            torch.distributed.barrier()


@register_model("flexmdm")
class FlexMDMLM(RetrofitLM):
    """`--model flexmdm`: a FlexMDM checkpoint folder (see `RetrofitLM` for the arguments)."""

    KIND = "flexmdm"


@register_model("llada")
class LLaDALM(RetrofitLM):
    """`--model llada`: a LLaDA checkpoint folder (see `RetrofitLM` for the arguments)."""

    KIND = "llada"
