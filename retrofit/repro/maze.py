"""Subgoal-conditioned shortest-path planning on random grid mazes: generator and exact checker.

A maze is a square grid of '#' (wall) and '.' (free) cells with a start, a goal and subgoals lying,
in order, on a shortest start-goal path. The model reads the grid and waypoints and writes a path
start..goal through the subgoals; it is scored on success (legal path) and optimality (shortest).
`generate(level_name, n, seed)` draws mazes of a `LEVELS` entry deterministically; `check_path` is
the exact checker and `evaluate` aggregates per level. The mazes as model words (prompt, targets,
decoding) are in `retrofit.repro.maze_words`.

Example:
    >>> maze = generate("easy", 1, seed=0)[0]
    >>> check_path(maze.grid, maze.start, maze.goal, maze.subgoals, list(maze.path)).optimal
    True
"""

from __future__ import annotations

import operator
import random
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass

from retrofit.repro.stats import mean_interval, wilson_interval

Cell = tuple[int, int]
_MAX_ATTEMPTS = 100_000


@dataclass(frozen=True)
class MazeLevel:
    """One difficulty level: grid size, wall density, subgoal count and path-length bounds."""

    name: str
    size: int
    wall_density: float
    subgoals: int
    max_segment: int  # max intermediate cells strictly between two consecutive waypoints
    min_path: int  # min number of moves of the reference path


LEVELS: dict[str, MazeLevel] = {
    "easy": MazeLevel("easy", size=5, wall_density=0.25, subgoals=1, max_segment=3, min_path=4),
    "medium": MazeLevel("medium", size=6, wall_density=0.3, subgoals=2, max_segment=3, min_path=7),
    "hard": MazeLevel("hard", size=7, wall_density=0.3, subgoals=3, max_segment=4, min_path=10),
}


@dataclass(frozen=True)
class Maze:
    """A maze instance; `path` is a reference shortest path start..goal through the subgoals."""

    level: str
    grid: tuple[str, ...]
    start: Cell
    goal: Cell
    subgoals: tuple[Cell, ...]
    path: tuple[Cell, ...]


@dataclass(frozen=True)
class PathCheck:
    """Result of `check_path`: legality, failure reason, optimality and |moves - optimal|."""

    success: bool
    reason: str
    optimal: bool
    length_error: int | None


def _check_grid(grid: Sequence[str]) -> tuple[int, int]:
    """Validate a grid -> (rows, cols)."""
    if len(grid) == 0 or not all(isinstance(row, str) for row in grid):
        raise ValueError("grid must be a non-empty sequence of strings")
    cols = len(grid[0])
    if cols == 0 or any(len(row) != cols for row in grid) or any(set(row) - {"#", "."} for row in grid):
        raise ValueError("grid rows must be non-empty, of equal length, and use only '#' and '.'")
    return len(grid), cols


def _as_cell(cell: Sequence[int], name: str) -> Cell:
    try:
        if len(cell) == 2 and not any(isinstance(x, bool) for x in cell):
            return operator.index(cell[0]), operator.index(cell[1])
    except TypeError:
        pass
    raise ValueError(f"{name} must be a (row, col) pair of ints, got {cell!r}")


def _free(grid: Sequence[str], cell: Cell) -> bool:
    r, c = cell
    return 0 <= r < len(grid) and 0 <= c < len(grid[0]) and grid[r][c] == "."


def shortest_path(grid: Sequence[str], a: Cell, b: Cell) -> list[Cell] | None:
    """BFS shortest path from `a` to `b` (4-neighbourhood, neighbour order up, down, left, right).

    Args:
        grid: Rows of '#' (wall) and '.' (free).
        a, b: End cells (row, col).

    Returns:
        The cells a..b (both included; [a] if a == b), or None if a or b is a wall or out of
        bounds, or b is unreachable.

    Raises:
        ValueError: If the grid is malformed or a / b is not a pair of ints.
    """
    _check_grid(grid)
    a, b = _as_cell(a, "a"), _as_cell(b, "b")
    if not (_free(grid, a) and _free(grid, b)):
        return None
    parent: dict[Cell, Cell | None] = {a: None}
    queue = deque([a])
    while queue:
        cell = queue.popleft()
        if cell == b:
            out = [cell]
            while parent[out[-1]] is not None:
                out.append(parent[out[-1]])
            return out[::-1]
        r, c = cell
        for nxt in ((r - 1, c), (r + 1, c), (r, c - 1), (r, c + 1)):
            if nxt not in parent and _free(grid, nxt):
                parent[nxt] = cell
                queue.append(nxt)
    return None


def optimal_length(grid: Sequence[str], points: Sequence[Cell]) -> int | None:
    """Sum of BFS distances (moves) between consecutive `points`, e.g. (start, *subgoals, goal).

    Returns:
        The total number of moves, or None if a consecutive pair is not connected (or a point is
        a wall / out of bounds).

    Raises:
        ValueError: If points is empty or the grid is malformed.
    """
    if len(points) == 0:
        raise ValueError("points is empty")
    total = 0
    for a, b in zip(points[:-1], points[1:]):
        leg = shortest_path(grid, a, b)
        if leg is None:
            return None
        total += len(leg) - 1
    return total if len(points) > 1 or _free(grid, _as_cell(points[0], "points[0]")) else None


def waypoints(maze: Maze) -> tuple[Cell, ...]:
    """(start, *subgoals, goal) of a maze."""
    return (maze.start, *maze.subgoals, maze.goal)


def _waypoint_indices(maze: Maze) -> list[int]:
    """Index in `maze.path` of each waypoint, matched in order."""
    out, pos = [], 0
    for point in waypoints(maze):
        try:
            pos = maze.path.index(point, pos)
        except ValueError:
            raise ValueError(f"maze.path does not visit waypoint {point} in order") from None
        out.append(pos)
    return out


def segments(maze: Maze) -> list[list[Cell]]:
    """subgoals + 1 lists: the reference path's cells strictly between consecutive waypoints.

    Raises:
        ValueError: If maze.path does not visit the waypoints in order.
    """
    idx = _waypoint_indices(maze)
    return [list(maze.path[i + 1 : j]) for i, j in zip(idx[:-1], idx[1:])]


def _check_level(level: MazeLevel) -> None:
    if level.size < 2:
        raise ValueError(f"level.size must be >= 2, got {level.size}")
    if not 0.0 <= level.wall_density < 1.0:
        raise ValueError(f"level.wall_density must be in [0, 1), got {level.wall_density}")
    if level.subgoals < 0 or level.max_segment < 0:
        raise ValueError("level.subgoals and level.max_segment must be >= 0")
    lo, hi = level.subgoals + 1, (level.subgoals + 1) * (level.max_segment + 1)
    if not lo <= level.min_path <= hi:
        raise ValueError(
            f"level.min_path must be in [subgoals + 1, (subgoals + 1) * (max_segment + 1)] = [{lo}, {hi}]"
        )


def generate_maze(level: MazeLevel, rng: random.Random) -> Maze:
    """Draw one maze of `level` by rejection sampling.

    Walls are i.i.d. with probability `wall_density`; start and goal are distinct random cells
    (forced free). Draws are rejected until the BFS shortest path has >= `min_path` moves and,
    with the k subgoals on that path at indices i * moves // (k + 1) (i = 1..k), every segment
    has <= `max_segment` intermediate cells.

    Args:
        level: The difficulty level.
        rng: The random source (`random.Random`).

    Returns:
        The maze; its `path` is the BFS shortest path (so it is shortest through the subgoals).

    Raises:
        ValueError: If the level's parameters are inconsistent.
        RuntimeError: If no maze is accepted within a large number of attempts.
    """
    _check_level(level)
    n, k = level.size, level.subgoals
    cells = [(r, c) for r in range(n) for c in range(n)]
    for _ in range(_MAX_ATTEMPTS):
        walls = {cell for cell in cells if rng.random() < level.wall_density}
        start, goal = rng.sample(cells, 2)
        walls -= {start, goal}
        grid = tuple("".join("#" if (r, c) in walls else "." for c in range(n)) for r in range(n))
        path = shortest_path(grid, start, goal)
        if path is None or len(path) - 1 < level.min_path:
            continue
        moves = len(path) - 1
        idx = [0, *(i * moves // (k + 1) for i in range(1, k + 1)), moves]
        if max(j - i - 1 for i, j in zip(idx[:-1], idx[1:])) > level.max_segment:
            continue
        subgoals = tuple(path[i] for i in idx[1:-1])
        return Maze(level.name, grid, start, goal, subgoals, tuple(path))
    raise RuntimeError(f"no maze accepted for level {level.name!r} in {_MAX_ATTEMPTS} attempts")


def generate(level_name: str, n: int, seed: int) -> list[Maze]:
    """`n` mazes of `LEVELS[level_name]` from `generate_maze` with `random.Random(seed)`.

    Raises:
        ValueError: If level_name is unknown or n < 0.
    """
    if level_name not in LEVELS:
        raise ValueError(f"level_name must be one of {sorted(LEVELS)}, got {level_name!r}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be an int >= 0, got {n!r}")
    rng = random.Random(seed)
    return [generate_maze(LEVELS[level_name], rng) for _ in range(n)]


def check_path(
    grid: Sequence[str], start: Cell, goal: Cell, subgoals: Sequence[Cell], path: Sequence[Cell] | None
) -> PathCheck:
    """Exact checker of a proposed path.

    Checks, in this order (the first failure is the reason): "empty", "out_of_bounds",
    "wrong_start", "wrong_goal", "not_adjacent" (a step with |dr| + |dc| != 1), "wall",
    "subgoal_order" (subgoals not a subsequence of the path, greedy match). Revisits are allowed.

    Args:
        grid: Rows of '#' and '.'.
        start, goal: Required first and last cells.
        subgoals: Cells the path must visit in this order.
        path: The proposed cells, or None (undecodable output -> reason "no_path").

    Returns:
        PathCheck: reason "ok" on success; optimal iff success and moves equal
        `optimal_length(grid, (start, *subgoals, goal))`; length_error = |moves - that length|
        for any non-empty path (None for an empty / None path or an unsolvable maze).

    Raises:
        ValueError: If the grid is malformed or a cell is not a pair of ints.
    """
    rows, cols = _check_grid(grid)
    if path is None:
        return PathCheck(False, "no_path", False, None)
    cells = [_as_cell(cell, f"path[{i}]") for i, cell in enumerate(path)]
    if not cells:
        return PathCheck(False, "empty", False, None)
    start, goal = _as_cell(start, "start"), _as_cell(goal, "goal")
    subs = [_as_cell(s, "subgoals[i]") for s in subgoals]
    best = optimal_length(grid, [start, *subs, goal])
    error = None if best is None else abs(len(cells) - 1 - best)
    matched = 0
    for cell in cells:
        if matched < len(subs) and cell == subs[matched]:
            matched += 1
    checks = (  # lazy, in order: the wall check may only index in-bounds cells
        ("out_of_bounds", lambda: any(not (0 <= r < rows and 0 <= c < cols) for r, c in cells)),
        ("wrong_start", lambda: cells[0] != start),
        ("wrong_goal", lambda: cells[-1] != goal),
        (
            "not_adjacent",
            lambda: any(abs(a[0] - b[0]) + abs(a[1] - b[1]) != 1 for a, b in zip(cells, cells[1:])),
        ),
        ("wall", lambda: any(grid[r][c] == "#" for r, c in cells)),
        ("subgoal_order", lambda: matched < len(subs)),
    )
    for reason, failed in checks:
        if failed():
            return PathCheck(False, reason, False, error)
    return PathCheck(True, "ok", error == 0, error)


def check_maze_path(maze: Maze, path: Sequence[Cell] | None) -> PathCheck:
    """`check_path` with the grid, start, goal and subgoals of `maze`."""
    return check_path(maze.grid, maze.start, maze.goal, maze.subgoals, path)


def evaluate(mazes: Sequence[Maze], paths: Sequence[Sequence[Cell] | None]) -> dict:
    """Per-level success / optimality / length error of `paths` (one per maze, None = decode failure).

    Returns:
        {level: {"n", "success", "success_ci", "optimal", "optimal_ci", "length_error" (mean
        |moves - optimal| over non-empty decoded paths, None if there are none),
        "length_error_ci", "decode_failures", "reasons": {reason: count}}}, levels in order of
        first appearance; intervals are 95% ([lo, hi], Wilson for fractions).

    Raises:
        ValueError: If mazes and paths differ in length.
    """
    if len(mazes) != len(paths):
        raise ValueError(f"mazes and paths must have the same length, got {len(mazes)} and {len(paths)}")
    checks: dict[str, list[PathCheck]] = {}
    for maze, path in zip(mazes, paths):
        checks.setdefault(maze.level, []).append(check_maze_path(maze, path))
    out = {}
    for name, items in checks.items():
        n = len(items)
        wins, best = sum(c.success for c in items), sum(c.optimal for c in items)
        errors = [c.length_error for c in items if c.length_error is not None]
        out[name] = {
            "n": n,
            "success": wins / n,
            "success_ci": list(wilson_interval(wins, n)),
            "optimal": best / n,
            "optimal_ci": list(wilson_interval(best, n)),
            "length_error": sum(errors) / len(errors) if errors else None,
            "length_error_ci": list(mean_interval(errors)) if errors else None,
            "decode_failures": sum(c.reason == "no_path" for c in items),
            "reasons": dict(Counter(c.reason for c in items)),
        }
    return out


def sample_record(maze: Maze, path: Sequence[Cell] | None) -> dict:
    """A JSON-ready record of a maze and a (decoded) path: lists, not tuples."""
    return {
        "level": maze.level,
        "grid": list(maze.grid),
        "start": list(maze.start),
        "goal": list(maze.goal),
        "subgoals": [list(s) for s in maze.subgoals],
        "path": None if path is None else [list(cell) for cell in path],
    }
