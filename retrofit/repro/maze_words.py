"""Maze tasks as words (one token each): the prompt, the two targets and the decoder.

`prompt_words` is the model's input (grid size, wall cells, start / subgoals / goal),
`flexmdm_response` the variable-length target (the path, its waypoints as anchors),
`mdm_response` the fixed-budget target (segments padded to the level's `max_segment`), and
`decode_path` turns generated words back into cells. Path cells and wall cells share the words
"c{r}_{c}", so "is this path cell a wall" is a match of identical tokens.

Example:
    >>> from retrofit.repro.maze import generate
    >>> maze = generate("easy", 1, seed=0)[0]
    >>> words, anchors = mdm_response(maze, pad_word="<pad>")
    >>> decode_path(words, pad_word="<pad>") == list(maze.path)
    True
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from retrofit.repro.maze import (
    LEVELS,
    Cell,
    Maze,
    MazeLevel,
    _as_cell,
    _waypoint_indices,
    segments,
    waypoints,
)

__all__ = ["MARKERS", "cell_word", "decode_path", "flexmdm_response", "mdm_response", "prompt_words", "size_word",
           "vocabulary"]  # fmt: skip

MARKERS = ("<start>", "<sub>", "<goal>")
_CELL_RE = re.compile(r"c(0|[1-9][0-9]*)_(0|[1-9][0-9]*)")


def cell_word(cell: Cell, wall: bool) -> str:
    """The word of a cell: "c{r}_{c}" if free, "w{r}_{c}" if a wall.

    Raises:
        ValueError: If cell is not a pair of ints >= 0.
    """
    r, c = _as_cell(cell, "cell")
    if r < 0 or c < 0:
        raise ValueError(f"cell must have non-negative coordinates, got {cell!r}")
    return f"{'w' if wall else 'c'}{r}_{c}"


def size_word(size: int) -> str:
    """The prompt's first word: the grid size, "<n{size}>" (where the grid ends)."""
    return f"<n{size}>"


def vocabulary(max_size: int) -> list[str]:
    """All words of mazes up to `max_size` x `max_size`: MARKERS, the size words "<n1>".."<n{max_size}>",
    then every cell word "c{r}_{c}" (row-major). Marker indices do not depend on `max_size`.

    Raises:
        ValueError: If max_size < 1.
    """
    if isinstance(max_size, bool) or not isinstance(max_size, int) or max_size < 1:
        raise ValueError(f"max_size must be an int >= 1, got {max_size!r}")
    cells = [(r, c) for r in range(max_size) for c in range(max_size)]
    sizes = [size_word(n) for n in range(1, max_size + 1)]
    return [*MARKERS, *sizes, *(cell_word(x, False) for x in cells)]


def prompt_words(maze: Maze) -> list[str]:
    """The maze as words: its size, its wall cells (row-major, as the same cell words a path uses, so
    "is this path cell a wall" is a match of identical tokens), then "<start>" start,
    ("<sub>" subgoal)*, "<goal>" goal. With the size, the walls describe the grid completely."""
    walls = [
        cell_word((r, c), False) for r, row in enumerate(maze.grid) for c, ch in enumerate(row) if ch == "#"
    ]
    words = [size_word(len(maze.grid)), *walls, MARKERS[0], cell_word(maze.start, False)]
    for sub in maze.subgoals:
        words += [MARKERS[1], cell_word(sub, False)]
    return words + [MARKERS[2], cell_word(maze.goal, False)]


def flexmdm_response(maze: Maze) -> tuple[list[str], list[int]]:
    """Variable-length target: (reference path as cell words, indices of the waypoints in it)."""
    return [cell_word(cell, False) for cell in maze.path], _waypoint_indices(maze)


def mdm_response(maze: Maze, pad_word: str, level: MazeLevel | None = None) -> tuple[list[str], list[int]]:
    """Fixed-budget target: start, segment 1 padded to `max_segment` words, subgoal 1, ..., goal.

    Its length is (subgoals + 2) + (subgoals + 1) * max_segment for every maze of the level.

    Args:
        maze: The maze.
        pad_word: Word filling each segment up to `max_segment` words.
        level: The level; default `LEVELS[maze.level]`.

    Returns:
        (words, anchor indices of the waypoints in words).

    Raises:
        ValueError: If pad_word is empty / has whitespace / is a cell word, the level is unknown,
            or a segment is longer than max_segment.
    """
    if not pad_word or any(ch.isspace() for ch in pad_word) or _CELL_RE.fullmatch(pad_word):
        raise ValueError(f"pad_word must be a non-empty word that is not a cell word, got {pad_word!r}")
    if level is None:
        if maze.level not in LEVELS:
            raise ValueError(f"maze.level {maze.level!r} is not in LEVELS; pass level=")
        level = LEVELS[maze.level]
    points = waypoints(maze)
    words, anchors = [cell_word(points[0], False)], [0]
    for seg, point in zip(segments(maze), points[1:]):
        if len(seg) > level.max_segment:
            raise ValueError(f"segment of {len(seg)} cells exceeds max_segment={level.max_segment}")
        words += [cell_word(x, False) for x in seg] + [pad_word] * (level.max_segment - len(seg))
        anchors.append(len(words))
        words.append(cell_word(point, False))
    return words, anchors


def decode_path(words: Sequence[str], pad_word: str | None = None) -> list[Cell] | None:
    """Generated words -> cells: drop `pad_word` (if given), parse every other word as "c{r}_{c}".

    Returns:
        The cells (possibly empty), or None if any remaining word is not a canonical free-cell
        word (a wall word, a marker, "c01_2", anything else).
    """
    cells = []
    for word in words:
        if pad_word is not None and word == pad_word:
            continue
        match = _CELL_RE.fullmatch(word)
        if match is None:
            return None
        cells.append((int(match.group(1)), int(match.group(2))))
    return cells
