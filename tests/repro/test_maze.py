"""Tests of the subgoal-conditioned maze task (retrofit.repro.maze): BFS on a hand-built grid, the
exact path checker on hand-built paths, generated mazes per level, the word encodings and
evaluation."""

from __future__ import annotations

import json

import pytest

from retrofit.repro.maze import (
    LEVELS,
    Maze,
    check_maze_path,
    check_path,
    evaluate,
    generate,
    optimal_length,
    sample_record,
    segments,
    shortest_path,
    waypoints,
)
from retrofit.repro.maze_words import (
    MARKERS,
    decode_path,
    flexmdm_response,
    mdm_response,
    prompt_words,
    vocabulary,
)

# (0,0) . . . .      Two 6-move routes from (0,0) to (2,2): along the top and right side, or down
# (1,0) . # # .      the left side and along the bottom. BFS (up, down, left, right) reaches
# (2,0) . # . .      (2,2) first from (3,2), so the bottom route is returned.
# (3,0) . . . #
GRID = ("....", ".##.", ".#..", "...#")
START, GOAL, SUBS = (0, 0), (2, 2), [(3, 0)]
BOTTOM = [(0, 0), (1, 0), (2, 0), (3, 0), (3, 1), (3, 2), (2, 2)]
TOP = [(0, 0), (0, 1), (0, 2), (0, 3), (1, 3), (2, 3), (2, 2)]
PAD = "<pad>"


def test_shortest_path_hand_grid() -> None:
    assert shortest_path(GRID, START, GOAL) == BOTTOM
    assert shortest_path(GRID, (0, 3), (2, 2)) == [(0, 3), (1, 3), (2, 3), (2, 2)]
    assert shortest_path(GRID, START, START) == [START]
    assert shortest_path(GRID, START, (1, 1)) is None  # wall
    assert shortest_path(GRID, START, (3, 3)) is None  # wall
    assert shortest_path(GRID, START, (4, 0)) is None  # out of bounds
    assert optimal_length(GRID, [START, (3, 0), GOAL]) == 6
    assert optimal_length(GRID, [START, (0, 3), (3, 0), GOAL]) == 3 + 6 + 3


def test_shortest_path_unreachable() -> None:
    enclosed = ("..#.", "..#.", "###.", "....")
    assert shortest_path(enclosed, (0, 0), (0, 3)) is None
    assert optimal_length(enclosed, [(0, 0), (1, 1), (0, 3)]) is None
    with pytest.raises(ValueError, match="grid"):
        shortest_path(("..", "."), (0, 0), (0, 1))
    with pytest.raises(ValueError, match="points"):
        optimal_length(GRID, [])


def check(path):
    return check_path(GRID, START, GOAL, SUBS, path)


def test_check_path_correct_and_detour() -> None:
    ok = check(BOTTOM)
    assert (ok.success, ok.reason, ok.optimal, ok.length_error) == (True, "ok", True, 0)
    # JSON-style lists of lists are accepted too.
    assert check([list(c) for c in BOTTOM]).optimal
    detour = [(0, 0), (0, 1), (0, 0), (1, 0), (2, 0), (3, 0), (3, 1), (3, 2), (2, 2)]  # 8 moves
    res = check(detour)
    assert (res.success, res.reason, res.optimal, res.length_error) == (True, "ok", False, 2)


@pytest.mark.parametrize(
    ("path", "reason", "length_error"),
    [
        (None, "no_path", None),
        ([], "empty", None),
        ([(0, 0), (1, 0), (2, 0), (3, 0), (4, 0), (3, 0), (3, 1), (3, 2), (2, 2)], "out_of_bounds", 2),
        ([(1, 0), (2, 0), (3, 0), (3, 1), (3, 2), (2, 2)], "wrong_start", 1),
        ([(0, 0), (1, 0), (2, 0), (3, 0), (3, 1), (3, 2)], "wrong_goal", 1),
        ([(0, 0), (2, 0), (3, 0), (3, 1), (3, 2), (2, 2)], "not_adjacent", 1),
        ([(0, 0), (0, 1), (1, 1), (2, 1), (3, 1), (3, 2), (2, 2)], "wall", 0),
        (TOP, "subgoal_order", 0),  # a shortest route that skips the subgoal
        ([(1, 1), (2, 1)], "wrong_start", 5),  # wrong start is reported before the walls
    ],
)
def test_check_path_failures(path, reason: str, length_error: int | None) -> None:
    res = check(path)
    assert (res.success, res.reason, res.optimal, res.length_error) == (False, reason, False, length_error)


def test_check_path_subgoals_in_wrong_order() -> None:
    # Visits (3, 0) and only then (0, 3); the subgoals ask for (0, 3) first.
    path = BOTTOM + [(2, 3), (1, 3), (0, 3), (1, 3), (2, 3), (2, 2)]
    res = check_path(GRID, START, GOAL, [(0, 3), (3, 0)], path)
    assert (res.success, res.reason, res.length_error) == (False, "subgoal_order", 12 - 12)
    res = check_path(GRID, START, GOAL, [(3, 0), (0, 3)], path)
    assert (res.success, res.reason, res.optimal) == (True, "ok", True)


@pytest.fixture(scope="module")
def mazes() -> dict[str, list[Maze]]:
    return {name: generate(name, 50, seed=11) for name in LEVELS}


@pytest.mark.parametrize("name", list(LEVELS))
def test_generated_mazes_are_consistent(mazes, name: str) -> None:
    level = LEVELS[name]
    for maze in mazes[name]:
        assert maze.level == name and len(maze.grid) == level.size
        assert all(len(row) == level.size for row in maze.grid)
        assert len(maze.subgoals) == level.subgoals
        assert maze.path[0] == maze.start and maze.path[-1] == maze.goal
        assert len(maze.path) - 1 >= level.min_path
        res = check_maze_path(maze, list(maze.path))
        assert res.success and res.optimal and res.length_error == 0
        assert len(maze.path) - 1 == len(shortest_path(maze.grid, maze.start, maze.goal)) - 1
        segs = segments(maze)
        assert len(segs) == level.subgoals + 1
        assert all(len(s) <= level.max_segment for s in segs)
        assert sum(len(s) for s in segs) + len(waypoints(maze)) == len(maze.path)


@pytest.mark.parametrize("name", list(LEVELS))
def test_word_encodings(mazes, name: str) -> None:
    level = LEVELS[name]
    vocab = set(vocabulary(level.size))
    expected_len = (level.subgoals + 2) + (level.subgoals + 1) * level.max_segment
    for maze in mazes[name]:
        prompt = prompt_words(maze)
        walls = sum(row.count("#") for row in maze.grid)
        assert len(prompt) == 1 + walls + 2 * (level.subgoals + 2) and prompt[0] == f"<n{level.size}>"
        assert set(prompt) <= vocab
        words, anchors = mdm_response(maze, PAD)
        assert len(words) == expected_len
        assert [words[i] for i in anchors] == [f"c{r}_{c}" for r, c in waypoints(maze)]
        assert decode_path(words, pad_word=PAD) == list(maze.path)
        flex, flex_anchors = flexmdm_response(maze)
        assert len(flex) == len(maze.path) and flex_anchors[0] == 0 and flex_anchors[-1] == len(flex) - 1
        assert [flex[i] for i in flex_anchors] == [words[i] for i in anchors]
        assert decode_path(flex) == list(maze.path)


def test_hand_maze_encodings() -> None:
    maze = Maze("easy", GRID, START, GOAL, tuple(SUBS), tuple(BOTTOM))
    assert segments(maze) == [[(1, 0), (2, 0)], [(3, 1), (3, 2)]]
    walls = [f"c{r}_{c}" for r, row in enumerate(GRID) for c, ch in enumerate(row) if ch == "#"]
    assert walls[0] == "c1_1" and prompt_words(maze) == ["<n4>", *walls, "<start>", "c0_0", "<sub>", "c3_0",
                                                         "<goal>", "c2_2"]  # fmt: skip
    words, anchors = mdm_response(maze, PAD)  # easy: max_segment 3 -> 3 + 2 * 3 words
    assert words == ["c0_0", "c1_0", "c2_0", PAD, "c3_0", "c3_1", "c3_2", PAD, "c2_2"]
    assert anchors == [0, 4, 8]
    assert flexmdm_response(maze) == (["c0_0", "c1_0", "c2_0", "c3_0", "c3_1", "c3_2", "c2_2"], [0, 3, 6])
    with pytest.raises(ValueError, match="pad_word"):
        mdm_response(maze, "c0_0")
    vocab = vocabulary(2)
    assert (
        vocab[:5] == [*MARKERS, "<n1>", "<n2>"] and len(vocab) == 3 + 2 + 4 and len(set(vocab)) == len(vocab)
    )


def test_decode_path() -> None:
    assert decode_path(["c0_0", PAD, "c10_2"], pad_word=PAD) == [(0, 0), (10, 2)]
    assert decode_path([PAD, PAD], pad_word=PAD) == []
    assert decode_path(["c0_0", "w0_1", "c0_2"]) is None  # wall word
    assert decode_path(["c0_0", "<goal>"]) is None  # marker
    assert decode_path(["c0_0", PAD]) is None  # pad not dropped without pad_word
    assert decode_path(["c01_2"]) is None  # not canonical
    assert decode_path(["c0_"]) is None


def test_evaluate_and_records() -> None:
    easy, medium = generate("easy", 3, seed=0), generate("medium", 2, seed=0)
    paths = [list(easy[0].path), None, list(easy[2].path), list(medium[0].path), list(medium[1].path)[:-1]]
    report = evaluate(easy + medium, paths)
    e, m = report["easy"], report["medium"]
    assert (e["n"], e["success"], e["optimal"], e["decode_failures"]) == (3, 2 / 3, 2 / 3, 1)
    assert e["length_error"] == 0.0 and e["length_error_ci"] == [0.0, 0.0]
    assert e["success_ci"] == pytest.approx([0.2077, 0.9385], abs=1e-4)
    assert (m["n"], m["success"], m["decode_failures"], m["length_error"]) == (2, 0.5, 0, 0.5)
    assert m["reasons"] == {"ok": 1, "wrong_goal": 1}
    with pytest.raises(ValueError, match="same length"):
        evaluate(easy, paths)
    record = sample_record(easy[0], paths[0])
    assert json.loads(json.dumps(record)) == record
    assert record["start"] == list(easy[0].start) and record["path"][0] == record["start"]
    assert sample_record(easy[1], None)["path"] is None


def test_generate_determinism_and_errors() -> None:
    assert generate("hard", 5, seed=3) == generate("hard", 5, seed=3)
    assert generate("hard", 5, seed=3) != generate("hard", 5, seed=4)
    with pytest.raises(ValueError, match="level_name"):
        generate("impossible", 1, seed=0)
    with pytest.raises(ValueError, match="n must be"):
        generate("easy", -1, seed=0)
