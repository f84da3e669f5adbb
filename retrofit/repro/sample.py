"""Sample the reproduction's test cases from trained model folders with the product's samplers.

Each task's models are reloaded from disk (`retrofit.sampling.load.load_model`) and sampled with
`FlexMDMSampler` (``flexmdm``, ``retrofit``) or `MDMSampler` (``mdm``) at equal step counts:

* brackets, unconditional: the FlexMDM starts from the empty sequence and inserts / unmasks for
  S steps; the MDM unmasks a fixed 64-token canvas in S steps and its text ends at the first EOS.
  Both draw tokens at temperature 1 in a random order (ancestral sampling of the model), so
  length and validity statistics are the models' own;
* maze, subgoal-conditioned: the canvas starts as the prompt plus the path's given points
  (start, subgoals, goal). The FlexMDM inserts only between start and goal (the prompt and start
  are its fixed prefix, the goal its suffix, the subgoals its ``middles``) and so picks every
  segment's length; the MDM fills a fixed budget of masks per
  segment (`MDMSampler.infill` with template ``middles``), padding with EOS as LLaDA does.
  Both decode greedily (temperature 0, most confident first).

Every row draws from its own stream keyed by (seed, case index, 0): a brackets sample's index in
0..n-1, a maze's index in the test cases, so a case's sample does not depend on the batch size or
on how the cases are grouped (``_base_seed`` mixes the run seed first).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from retrofit.repro import maze as maze_task
from retrofit.repro import maze_words

__all__ = ["sample_brackets", "sample_mazes"]


def _base_seed(seed: int) -> int:
    from retrofit.time_sampling import derive_seed

    return derive_seed("repro", seed)


def _words(tokenizer: Any, ids: Sequence[int]) -> list[str]:
    """Token texts; ids past the tokenizer (the embedding is padded to a multiple of 64) -> "<?>"."""
    return [w if w is not None else "<?>" for w in tokenizer.convert_ids_to_tokens(list(ids))]


def sample_brackets(
    model: Any,
    kind: str,
    tokenizer: Any,
    *,
    n: int,
    steps: int,
    canvas: int,
    seed: int,
    batch: int = 128,
    options: Mapping[str, Any] | None = None,
) -> list[str]:
    """``n`` unconditional samples as bracket strings (spaces removed; EOS-cut for the MDM).

    Args:
        model: FlexMDMModel (kind "flexmdm") or LLaDAModelLM ("llada"), eval mode.
        tokenizer: the word-level tokenizer of the task. n: samples. steps: sampler steps S.
        canvas: the MDM's fixed canvas / the FlexMDM's max length (tokens). seed: sampling seed.
        batch: rows per sampler call. options: further sampler config fields for both kinds
            (e.g. the fast-sampling settings unmask_threshold, prompt_cache, cache_refresh).

    Returns:
        list of n strings, one character per generated token: a token that is not a bracket
        (BOS, a chat-template token, an unused id) is written as "?", so the string's length is
        the sample's length in tokens and the checker counts it invalid.
    """
    from retrofit.sampling import FlexMDMSampler, FlexMDMSamplerConfig, MDMSampler, MDMSamplerConfig

    texts: list[str] = []
    for start in range(0, n, batch):
        rows = min(batch, n - start)
        ids = dict(seed=_base_seed(seed), example_ids=list(range(start, start + rows)))
        if kind == "flexmdm":
            config = FlexMDMSamplerConfig(
                steps=steps, max_length=canvas, confidence="random", temperature=1.0, **dict(options or {})
            )
            out = FlexMDMSampler(model, config).sample([[] for _ in range(rows)], **ids)
        else:
            config = MDMSamplerConfig(gen_length=canvas, block_length=canvas, steps=steps, temperature=1.0,
                                      remasking="random", **dict(options or {}))  # fmt: skip
            out = MDMSampler(model, config, tokenizer).sample([[] for _ in range(rows)], **ids)
        texts += ["".join(w if len(w) == 1 else "?" for w in _words(tokenizer, ids)) for ids in out.generated]
    return texts


def sample_mazes(
    model: Any,
    kind: str,
    tokenizer: Any,
    mazes: Sequence[maze_task.Maze],
    *,
    steps: int,
    canvas: int,
    seed: int,
    batch: int = 64,
    options: Mapping[str, Any] | None = None,
) -> list[list[tuple[int, int]] | None]:
    """Plan a path for every maze; returns the decoded paths (None where decoding fails).

    Args:
        model, kind, tokenizer: as in :func:`sample_brackets`. mazes: test cases (any levels).
        steps: sampler steps S. canvas: the training canvas (data.max_length): the MDM fills its
            template and, after it, masks up to this width, as its training rows were EOS-padded
            to it (only the template part is decoded). seed: sampling seed. batch: rows per
            sampler call (one level per call: the template length depends on the level).
        options: further sampler config fields (as in :func:`sample_brackets`).

    Returns:
        one path (list of (row, col) cells) or None per maze, in input order.
    """
    from retrofit.sampling import FlexMDMSampler, FlexMDMSamplerConfig, MDMSampler, MDMSamplerConfig

    pad = tokenizer.pad_token
    mask_word = tokenizer.convert_ids_to_tokens(int(model.config.mask_token_id))
    paths: list[list[tuple[int, int]] | None] = [None] * len(mazes)
    order = sorted(range(len(mazes)), key=lambda i: mazes[i].level)
    chunks = [order[i : i + batch] for i in range(0, len(order), batch)]
    for idx in chunks:
        level_groups: dict[str, list[int]] = {}
        for i in idx:
            level_groups.setdefault(mazes[i].level, []).append(i)
        for group in level_groups.values():
            ids = dict(seed=_base_seed(seed), example_ids=list(group))
            prompts = [_ids(tokenizer, maze_words.prompt_words(mazes[i])) for i in group]
            if kind == "flexmdm":  # start ends the fixed prefix, goal is the suffix: insert only between
                points = [_ids(tokenizer, [maze_words.cell_word(p, False) for p in maze_task.waypoints(mazes[i])])
                          for i in group]  # fmt: skip
                config = FlexMDMSamplerConfig(steps=steps, confidence="top_prob", temperature=0.0, fill="argmax",
                                              max_middle=4 * len(mazes[group[0]].grid) ** 2, **dict(options or {}))  # fmt: skip
                out = FlexMDMSampler(model, config).infill(
                    [p + w[:1] for p, w in zip(prompts, points)],
                    [w[-1:] for w in points],
                    middles=[w[1:-1] for w in points],
                    **ids,
                )
                out.generated[:] = [w[:1] + ids + w[-1:] for w, ids in zip(points, out.generated)]
            else:
                words = [_mdm_template(mazes[i], pad, mask_word) for i in group]  # one length per level
                tail = [mask_word] * max(canvas - len(prompts[0]) - len(words[0]), 0)
                templates = [_ids(tokenizer, w + tail) for w in words]
                config = MDMSamplerConfig(gen_length=canvas, block_length=canvas, steps=steps, temperature=0.0,
                                          remasking="low_confidence", stop_at_eos=False, **dict(options or {}))  # fmt: skip
                out = MDMSampler(model, config, tokenizer).infill(
                    prompts, [[] for _ in group], middles=templates, **ids
                )
                out.generated[:] = [ids[: len(words[0])] for ids in out.generated]
            for i, ids in zip(group, out.generated):
                paths[i] = maze_words.decode_path(_words(tokenizer, ids), pad_word=pad)
    return paths


def _mdm_template(maze: maze_task.Maze, pad: str, mask: str) -> list[str]:
    """The MDM's canvas after the prompt: given points kept, every other slot a mask."""
    words, anchors = maze_words.mdm_response(maze, pad)
    keep = set(anchors)
    return [w if i in keep else mask for i, w in enumerate(words)]


def _ids(tokenizer: Any, words: Sequence[str]) -> list[int]:
    ids = tokenizer.convert_tokens_to_ids(list(words))
    if any(i is None for i in ids):
        raise ValueError(f"repro: a word of {list(words)[:8]}... is not in the task's tokenizer")
    return ids
