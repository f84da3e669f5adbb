"""The reproduction's tasks as the runner sees them: vocabulary, training files, test cases, scoring.

A `Task` knows how to write its training data (one JSONL file per model kind: the FlexMDM's
variable-length targets, the MDM's fixed-length ones), draw its test cases, sample them with a
trained model (`retrofit.repro.sample`) and score them with its exact checker
(`retrofit.repro.brackets` / `retrofit.repro.maze`). Training rows, test cases and model
initialisation are all drawn from the run seed (test cases from a stream disjoint from training).

Sizes (`Sizes`) are per task, for the full run and for ``--quick`` (a seconds-long smoke run).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from retrofit.io_utils import write_jsonl_atomic
from retrofit.repro import brackets, maze, maze_words
from retrofit.repro.sample import sample_brackets, sample_mazes

__all__ = ["TASKS", "BracketsTask", "MazeTask", "Sizes"]

EOS_WORD = "<|endoftext|>"
TEST_SEED_OFFSET = 1_000_003  # test cases come from another stream than the training rows


@dataclass(frozen=True)
class Sizes:
    """How much to train and test: steps N per from-scratch model (the retrofit: N/2 + N/2),
    training rows written, test cases per (model, seed), sampler steps, model shape."""

    steps: int
    train_rows: int
    test_cases: int
    sample_steps: int
    layers: int = 4
    d_model: int = 128
    heads: int = 4

    def shape(self) -> dict[str, int]:
        """Keyword arguments of `retrofit.models.tiny.write_tiny_llada`."""
        return {"layers": self.layers, "d_model": self.d_model, "heads": self.heads}


class BracketsTask:
    """Unconditional balanced brackets with a multimodal length law (default 4/8/32/64 w.p. .1/.2/.3/.4)."""

    name = "brackets"
    canvas = 64
    full = Sizes(steps=1000, train_rows=20000, test_cases=256, sample_steps=64)
    quick = Sizes(steps=4, train_rows=64, test_cases=8, sample_steps=8, layers=2, d_model=32)

    def __init__(self, law: dict[int, float] | None = None, types: int = brackets.DEFAULT_TYPES):
        self.law = dict(law or brackets.LENGTH_LAW)
        self.types = types
        if max(self.law) > self.canvas:
            raise ValueError(f"brackets: the length law's largest length must be <= {self.canvas}")

    def words(self) -> list[str]:
        """The bracket characters, one token each."""
        return list(brackets.BRACKETS[: 2 * self.types])

    def write_data(self, folder: Path, seed: int, rows: int) -> dict[str, Path]:
        """One text file for every model (the MDM's EOS tail comes from its collator)."""
        texts = brackets.generate(rows, seed=seed, law=self.law, types=self.types)
        path = write_jsonl_atomic(folder / "train.jsonl", [{"text": " ".join(t)} for t in texts])
        return {"mdm": path, "flexmdm": path, "retrofit": path}

    def mean_tokens(self) -> float:
        """Mean x1 tokens of a training example (the law's mean length)."""
        return sum(length * p for length, p in self.law.items())

    def test_cases(self, seed: int, n: int) -> list[None]:
        """Unconditional: n empty prompts."""
        return [None] * n

    def sample(
        self,
        model: Any,
        kind: str,
        tokenizer: Any,
        cases: list,
        seed: int,
        steps: int,
        options: dict | None = None,
    ) -> list[str]:
        """Bracket strings sampled from the model (see `sample_brackets`; options: sampler fields)."""
        return sample_brackets(
            model, kind, tokenizer, n=len(cases), steps=steps, canvas=self.canvas, seed=seed, options=options
        )

    def score(self, cases: list, outputs: list[str]) -> list[tuple[str | None, dict]]:
        """[(None, metrics)]: validity, TV / W1 to the law (with 95 % intervals), validity per length."""
        return [(None, brackets.evaluate(outputs, self.law, self.types))]

    def records(self, cases: list, outputs: list[str]) -> list[dict]:
        """samples/*.jsonl rows: ``{"text": ...}``."""
        return [{"text": text} for text in outputs]


class MazeTask:
    """Subgoal-conditioned shortest-path planning on random grid mazes, three levels."""

    name = "maze"
    canvas = 64
    full = Sizes(steps=1000, train_rows=30000, test_cases=96, sample_steps=32)
    quick = Sizes(steps=4, train_rows=64, test_cases=6, sample_steps=4, layers=2, d_model=32)

    def __init__(self, levels: tuple[str, ...] = tuple(maze.LEVELS)):
        self.levels = levels
        self.max_size = max(maze.LEVELS[name].size for name in levels)

    def words(self) -> list[str]:
        """Free / wall cell words of the largest grid and the markers."""
        return maze_words.vocabulary(self.max_size)

    def _mazes(self, seed: int, n: int) -> list[maze.Maze]:
        per = [n // len(self.levels) + (i < n % len(self.levels)) for i in range(len(self.levels))]
        return [
            m
            for i, (name, k) in enumerate(zip(self.levels, per))
            for m in maze.generate(name, k, seed * 7 + i)
        ]

    def write_data(self, folder: Path, seed: int, rows: int) -> dict[str, Path]:
        """FlexMDM rows (prompt, path, anchor indices) and MDM rows (prompt, padded template, anchors)."""
        flex, fixed = [], []
        for m in self._mazes(seed, rows):
            prompt = " ".join(maze_words.prompt_words(m))
            words, anchors = maze_words.flexmdm_response(m)
            flex.append({"prompt": prompt, "response": " ".join(words), "anchors": anchors})
            words, anchors = maze_words.mdm_response(m, EOS_WORD)
            fixed.append({"prompt": prompt, "response": " ".join(words), "anchors": anchors})
        flex_path = write_jsonl_atomic(folder / "train-flexmdm.jsonl", flex)
        return {
            "mdm": write_jsonl_atomic(folder / "train-mdm.jsonl", fixed),
            "flexmdm": flex_path,
            "retrofit": flex_path,
        }

    def mean_tokens(self) -> float:
        """Mean x1 tokens (prompt + FlexMDM path) of a training example, on 300 mazes."""
        sample = self._mazes(0, 300)
        return sum(len(maze_words.prompt_words(m)) + len(m.path) for m in sample) / len(sample)

    def test_cases(self, seed: int, n: int) -> list[maze.Maze]:
        """n mazes, levels in equal shares, from a stream disjoint from the training rows."""
        return self._mazes(seed + TEST_SEED_OFFSET, n)

    def sample(
        self,
        model: Any,
        kind: str,
        tokenizer: Any,
        cases: list,
        seed: int,
        steps: int,
        options: dict | None = None,
    ) -> list:
        """Decoded paths (see `sample_mazes`; options: sampler fields)."""
        return sample_mazes(
            model, kind, tokenizer, cases, steps=steps, canvas=self.canvas, seed=seed, options=options
        )

    def score(self, cases: list, outputs: list) -> list[tuple[str | None, dict]]:
        """[(level, metrics)] per level: success, optimal-length rate, mean length error (95 % intervals)."""
        return list(maze.evaluate(cases, outputs).items())

    def records(self, cases: list, outputs: list) -> list[dict]:
        """samples/*.jsonl rows (`maze.sample_record`)."""
        return [maze.sample_record(m, p) for m, p in zip(cases, outputs)]


TASKS = {"brackets": BracketsTask, "maze": MazeTask}
