"""Batch-, order- and rank-independent outputs through the product's entry points (issue #14 item 2).

For a FlexMDM and a LLaDA tiny checkpoint, both sampling at temperature 1: `retrofit generate`
with --batch-size 1 / 4 / 6 and a prompt run alone; `eval gsm8k` (run_gsm8k) with batch sizes
1 / 4 / 6 and a simulated 2-process split; `eval humaneval-infill` likewise; `eval length`; and
the lm-eval wrapper's generate_until (batch sizes, shuffled requests, a split of the requests).
Rank r of a simulated split runs `rank_and_world() == (r, 2)` and a `gather_to_main` that hands
rank 1's items to rank 0, so the runners' own sharding code (items r::world) is what runs.

Exactness: the random draws of a row are identical by construction, but the model's logits for
a row differ in the last bits between batch shapes (GEMM blocking, softmax over padded keys), so a
draw can flip at an exact near-tie. With this random tiny model, FlexMDM infilling at the default
max_middle (256: ~240 masks with near-uniform, float32-quantized prob_diff confidences) hit one:
one of 10 middles swapped which of two slots it unmasked in step 3. The FlexMDM infill here uses
max_middle 32, where these seeds hit none.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from retrofit.cli import main as cli_main
from retrofit.evaluation import gsm8k as gsm8k_mod
from retrofit.evaluation import humaneval_infill as he_mod
from retrofit.evaluation.generation import TextGenerator, length_sorted_batches, load_model_dir
from retrofit.evaluation.length import model_lengths
from retrofit.sampling.load import make_sampler

KINDS = ["flexmdm", "llada"]
QUESTIONS = 6


@pytest.fixture(scope="module")
def loaded(tiny_flexmdm_dir, tiny_llada_dir) -> dict:
    return {
        "flexmdm": (tiny_flexmdm_dir, load_model_dir(tiny_flexmdm_dir, device="cpu")),
        "llada": (tiny_llada_dir, load_model_dir(tiny_llada_dir, device="cpu")),
    }


def _generator(loaded, kind: str, batch_size: int) -> TextGenerator:
    _, (model, tokenizer, k) = loaded[kind]
    # temperature 1: every token is a draw; GSM8K prompts (~600 byte tokens) need max_length 1024
    options = (
        dict(max_length=1024, max_middle=32) if kind == "flexmdm" else dict(gen_length=8, block_length=4)
    )
    sampler = make_sampler(model, tokenizer, k, steps=4, temperature=1.0, **options)
    return TextGenerator(sampler, tokenizer, k, batch_size=batch_size)


class FakeRanks:
    """rank_and_world / gather_to_main of a 2-process run, played one rank after the other
    (rank 1 first: its gathers are stored and return None; rank 0's return rank 0 + rank 1)."""

    def __init__(self, monkeypatch, module):
        self.rank, self.store = 1, {}
        monkeypatch.setattr(module, "rank_and_world", lambda: (self.rank, 2))
        monkeypatch.setattr(module, "gather_to_main", self.gather)
        self.calls = 0

    def gather(self, items, world):
        assert world == 2
        self.calls += 1
        self.store[(self.rank, self.calls)] = list(items)
        if self.rank == 1:
            return None
        return list(items) + self.store[(1, self.calls)]

    def play(self, run):
        """run() as rank 1, then as rank 0; returns rank 0's result."""
        self.rank, self.calls = 1, 0
        assert run() is None
        self.rank, self.calls = 0, 0
        return run()


def _samples(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]


def test_length_sorted_batches():
    assert length_sorted_batches([5, 1, 3, 1], 2) == [[1, 3], [2, 0]]
    assert length_sorted_batches([], 3) == [] and length_sorted_batches([2, 2], 5) == [[0, 1]]


@pytest.mark.parametrize("kind", KINDS)
def test_generate_cli_batch_sizes_and_a_prompt_alone(kind, loaded, tmp_path, capsys):
    folder = loaded[kind][0]
    prompts = ["Hi", "2 + 2 = ?", "a", "The quick brown fox", "x y", "Tell me a story"]
    options = ["--max-length", "48"] if kind == "flexmdm" else ["--gen-length", "8", "--block-length", "4"]

    def run(batch: int | None, texts=prompts) -> list[dict]:
        out = tmp_path / f"{batch}-{len(texts)}.jsonl"
        argv = ["generate", str(folder), "--steps", "4", "--temperature", "1", "--num-samples", "2", "--seed",
                "3", "--no-chat-template", "--output", str(out), *options]  # fmt: skip
        argv += [a for t in texts for a in ("--prompt", t)]
        assert cli_main(argv + ([] if batch is None else ["--batch-size", str(batch)])) == 0
        capsys.readouterr()
        return [json.loads(line)["token_ids"] for line in out.read_text().splitlines()]

    whole = run(None)
    assert len(whole) == 12 and len({tuple(t) for t in whole}) > 6  # samples differ
    assert run(1) == whole and run(4) == whole and run(6) == whole
    assert run(None, prompts[:1]) == whole[:2]  # prompt 0 alone: its samples 0 and 1


@pytest.mark.parametrize("kind", KINDS)
def test_eval_gsm8k_batch_sizes_and_two_processes(kind, loaded, data_dir, tmp_path, monkeypatch):
    def run(batch: int, out: Path):
        return gsm8k_mod.run_gsm8k(
            _generator(loaded, kind, batch), out, limit=QUESTIONS, seed=2, data_dir=data_dir
        )

    run(1, tmp_path / "b1")
    reference = [s["generation"] for s in _samples(tmp_path / "b1")]
    assert len(reference) == QUESTIONS and len(set(reference)) == QUESTIONS
    for batch in (4, 6):
        run(batch, tmp_path / f"b{batch}")
        assert [s["generation"] for s in _samples(tmp_path / f"b{batch}")] == reference
    ranks = FakeRanks(monkeypatch, gsm8k_mod)
    ranks.play(lambda: run(4, tmp_path / "ranks"))
    samples = _samples(tmp_path / "ranks")
    assert [s["index"] for s in samples] == list(range(QUESTIONS)) and [
        s["generation"] for s in samples
    ] == reference
    assert json.loads((tmp_path / "ranks" / "results.json").read_text())["config"]["world_size"] == 2


@pytest.mark.parametrize("kind", KINDS)
def test_eval_humaneval_infill_batch_sizes_and_two_processes(kind, loaded, data_dir, tmp_path, monkeypatch):
    tokenizer = loaded[kind][1][1]

    def run(batch: int, out: Path, chunk: int = 32):
        gen = _generator(loaded, kind, batch)

        def infill_fn(prefixes, suffixes, num_samples, seed, example_ids):
            return gen.infill(prefixes, suffixes, num_samples=num_samples, seed=seed, example_ids=example_ids)

        return he_mod.run_humaneval_infill(infill_fn, tokenizer, out, limit=5, num_samples=2, seed=1,
                                           data_dir=data_dir, chunk=chunk, n_workers=1, ks=(1,))  # fmt: skip

    def middles(out: Path) -> list[str]:
        return [s["completion"] for s in _samples(out)]

    run(1, tmp_path / "b1")
    reference = middles(tmp_path / "b1")
    assert len(reference) == 10 and len(set(reference)) > 5
    run(4, tmp_path / "b4", chunk=3)
    run(6, tmp_path / "b6")
    assert middles(tmp_path / "b4") == reference and middles(tmp_path / "b6") == reference
    FakeRanks(monkeypatch, he_mod).play(lambda: run(4, tmp_path / "ranks"))
    assert middles(tmp_path / "ranks") == reference


@pytest.mark.parametrize("kind", KINDS)
def test_eval_length_batch_sizes(kind, loaded):
    rows = [{"prompt": p} for p in ("a", "bb bb", "", "ccc c cc", "d", "ee")]
    per_prompt = [
        model_lengths(_generator(loaded, kind, b), rows, "per-prompt", 6, seed=4) for b in (1, 4, 6)
    ]
    assert per_prompt[0] == per_prompt[1] == per_prompt[2] and len(per_prompt[0]) == 6
    uncond = [model_lengths(_generator(loaded, kind, b), [], "unconditional", 6, seed=4) for b in (1, 4, 6)]
    assert uncond[0] == uncond[1] == uncond[2]
    if kind == "flexmdm":
        assert len(set(uncond[0])) > 1  # the lengths are draws


@pytest.mark.parametrize("kind", KINDS)
def test_lm_eval_generate_until_batches_order_and_split(kind, loaded):
    from lm_eval.api.instance import Instance

    from retrofit.evaluation.lm_eval_models import FlexMDMLM, LLaDALM

    cls = FlexMDMLM if kind == "flexmdm" else LLaDALM
    contexts = ["Q: 1+1?", "Q: what", "Q: a longer question here", "Q", "Q: x", "Q: yy"]

    def request(doc_id: int, copy: int = 0) -> Instance:
        args = (contexts[doc_id], {"until": ["\n\n"], "max_gen_toks": 16})
        return Instance("generate_until", {}, args, 0, metadata=("toy_task", doc_id, 2))

    def texts(batch: int, doc_ids: list[int]) -> dict[tuple[int, int], str]:
        lm = cls(generator=_generator(loaded, kind, batch), seed=11)
        reqs = [request(d) for d in doc_ids for _ in range(2)]  # lm-eval's repeats: two copies
        out = lm.generate_until(reqs)
        return {(d, k % 2): t for k, (d, t) in enumerate(zip([d for d in doc_ids for _ in range(2)], out))}

    reference = texts(1, list(range(6)))
    assert len(set(reference.values())) > 6  # the two copies of a request are two samples
    assert texts(4, list(range(6))) == reference
    assert texts(6, [3, 0, 5, 1, 4, 2]) == reference
    assert {**texts(6, [0, 2, 4]), **texts(6, [1, 3, 5])} == reference  # ranks 0 and 1 of 2
