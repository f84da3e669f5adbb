"""results.md and plots of `retrofit repro`: the three models side by side, next to the paper.

Every number is averaged over the seeds that ran (all of them: seeds are fixed before the run).
Brackets in brackets: with one seed, the 95 % interval over its test cases; with several, the
range over seeds. Each task ends with plain verdict lines against the issue's targets.

    >>> text = write_report(Path("repro-out"), json.loads(Path("repro-out/results.json").read_text()))
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

__all__ = ["PAPER_MAZE", "render_tables", "write_report"]

PAPER_MAZE = {
    "mdm": {"easy": 0.684, "medium": 0.293, "hard": 0.242},
    "flexmdm": {"easy": 0.923, "medium": 0.904, "hard": 0.900},
}
"""Maze planning success reported by the paper (Kim et al. 2025, the maze table)."""

MODEL_LABELS = {
    "mdm": "MDM (from scratch)",
    "flexmdm": "FlexMDM (from scratch)",
    "retrofit": "retrofit (MDM half + FlexMDM)",
}


def _groups(records: list[dict], task: str) -> dict[tuple[str, str | None], list[dict]]:
    groups: dict[tuple[str, str | None], list[dict]] = defaultdict(list)
    for r in records:
        if r["task"] == task:
            groups[(r["model"], r["level"])].append(r)
    return groups


def _cell(rows: list[dict], key: str, digits: int = 3) -> str:
    values = [r["metrics"][key] for r in rows if r["metrics"].get(key) is not None]
    if not values:
        return "n/a"
    mean = sum(values) / len(values)
    if len(values) > 1:
        lo, hi = min(values), max(values)
    else:
        lo, hi = rows[0]["metrics"].get(f"{key}_ci") or (None, None)
    spread = f" [{lo:.{digits}f}, {hi:.{digits}f}]" if lo is not None else ""
    return f"{mean:.{digits}f}{spread}"


def _mean(rows: list[dict], key: str) -> float | None:
    values = [r["metrics"][key] for r in rows if r["metrics"].get(key) is not None]
    return sum(values) / len(values) if values else None


def _budget(rows: list[dict]) -> str:
    r = rows[0]
    return f"{r['train_steps']} x {r['global_batch']} (~{r['train_tokens'] / 1e6:.2f}M tokens)"


def _brackets_table(records: list[dict]) -> list[str]:
    groups = _groups(records, "brackets")
    if not groups:
        return []
    lines = ["## Balanced brackets (unconditional; length law 4/8/32/64 w.p. .1/.2/.3/.4)", "",
             "| model | validity | length TV | length W1 | mean length | train steps x batch |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for model in ("mdm", "flexmdm", "retrofit"):
        rows = groups.get((model, None))
        if rows:
            lines.append(f"| {MODEL_LABELS[model]} | {_cell(rows, 'validity')} | {_cell(rows, 'tv')} | "
                         f"{_cell(rows, 'w1', 2)} | {_cell(rows, 'mean_length', 1)} | {_budget(rows)} |")  # fmt: skip
    flex, mdm = _mean(groups.get(("flexmdm", None), []), "tv"), _mean(groups.get(("mdm", None), []), "tv")
    fv, mv = (_mean(groups.get((m, None), []), "validity") for m in ("flexmdm", "mdm"))
    if None not in (flex, mdm, fv, mv):
        lines += ["", f"Targets: FlexMDM length TV <= 0.05: **{_yes(flex <= 0.05)}** ({flex:.3f}); at most a third of "
                  f"the MDM's: **{_yes(flex <= mdm / 3)}** ({flex:.3f} vs {mdm:.3f} / 3); validity at least the MDM's: "
                  f"**{_yes(fv >= mv)}** ({fv:.3f} vs {mv:.3f}){' (vacuous: both 0)' if max(fv, mv) == 0 else ''}."]  # fmt: skip
    return lines


def _maze_table(records: list[dict]) -> list[str]:
    groups = _groups(records, "maze")
    if not groups:
        return []
    levels = [lv for lv in ("easy", "medium", "hard") if any(k[1] == lv for k in groups)]
    lines = ["## Maze planning, subgoal-conditioned (success = legal path start -> subgoals -> goal)", "",
             "| model | " + " | ".join(f"success {lv}" for lv in levels) + " | optimal (hard) | length error (hard) "
             "| train steps x batch |", "|---|" + "---|" * (len(levels) + 3)]  # fmt: skip
    for model in ("mdm", "flexmdm", "retrofit"):
        cells = [_cell(groups.get((model, lv), []), "success") for lv in levels]
        hard = groups.get((model, levels[-1]), [])
        if hard:
            lines.append(f"| {MODEL_LABELS[model]} | " + " | ".join(cells) + f" | {_cell(hard, 'optimal')} | "
                         f"{_cell(hard, 'length_error', 2)} | {_budget(hard)} |")  # fmt: skip
    for model in ("mdm", "flexmdm"):
        lines.append(f"| paper: {model.upper() if model == 'mdm' else 'FlexMDM'} | "
                     + " | ".join(f"{PAPER_MAZE[model][lv]:.3f}" for lv in levels) + " | | | |")  # fmt: skip
    hardest = levels[-1]
    f, m, r = (_mean(groups.get((name, hardest), []), "success") for name in ("flexmdm", "mdm", "retrofit"))
    if None not in (f, m, r):
        vacuous = " (vacuous: both solve nothing)" if max(r, f) == 0 else ""
        lines += ["", f"Targets ({hardest}): FlexMDM >= MDM + 20 points: **{_yes(f >= m + 0.2)}** ({f:.3f} vs {m:.3f}); "
                  f"retrofit within 5 points of the FlexMDM: **{_yes(abs(r - f) <= 0.05)}** ({r:.3f} vs {f:.3f}){vacuous}."]  # fmt: skip
    return lines


def _yes(ok: bool) -> str:
    return "met" if ok else "NOT met"


def render_tables(results: dict[str, Any]) -> str:
    """The markdown tables (brackets, maze) with their target lines; empty for tasks that did not run."""
    records, config = results["records"], results["config"]
    seeds = config["seeds"]
    spread = "95 % interval over the test cases" if seeds == 1 else f"range over the {seeds} seeds"
    head = [f"Seeds: {seeds} (fixed before the run; all reported). Numbers are means over seeds, "
            f"[{spread}]." + (" QUICK run: sizes are tiny, the numbers mean nothing." if config.get("quick") else "")]  # fmt: skip
    parts = [head, _brackets_table(records), _maze_table(records)]
    return "\n\n".join("\n".join(p) for p in parts if p)


def write_report(out: Path, results: dict[str, Any]) -> str:
    """Write ``out/results.md`` and the PNGs; returns the markdown."""
    wall = results["config"].get("wall_seconds")
    text = "# retrofit repro: FlexMDM vs MDM vs retrofit at small scale\n\n"
    text += (f"Wall time: {wall / 60:.1f} min.\n\n" if wall else "") + render_tables(results) + "\n"
    pngs = _plots(out, results["records"])
    if pngs:
        text += "\nPlots: " + ", ".join(f"`{p.name}`" for p in pngs) + "\n"
    (out / "results.md").write_text(text)
    return text


def _plots(out: Path, records: list[dict]) -> list[Path]:
    """brackets-lengths.png (length histogram vs the law) and maze-success.png (success per level)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    brackets = _groups(records, "brackets")
    if brackets:
        from retrofit.repro.brackets import LENGTH_LAW

        fig, ax = plt.subplots(figsize=(7, 3.5))
        ax.bar(
            [k - 0.9 for k in LENGTH_LAW], list(LENGTH_LAW.values()), width=0.6, color="black", label="law"
        )
        for shift, model in zip((-0.3, 0.3, 0.9), ("mdm", "flexmdm", "retrofit")):
            counts: dict[int, int] = defaultdict(int)
            for r in brackets.get((model, None), []):
                for length, c in r["metrics"]["length_histogram"].items():
                    counts[int(length)] += c
            total = max(sum(counts.values()), 1)
            ax.bar([k + shift for k in counts], [c / total for c in counts.values()], width=0.6, label=model)
        ax.set_xlabel("length (tokens)"), ax.set_ylabel("frequency"), ax.legend()
        written.append(_save(fig, out / "brackets-lengths.png"))
    maze = _groups(records, "maze")
    if maze:
        levels = [lv for lv in ("easy", "medium", "hard") if any(k[1] == lv for k in maze)]
        fig, ax = plt.subplots(figsize=(6, 3.5))
        for i, model in enumerate(("mdm", "flexmdm", "retrofit")):
            values = [_mean(maze.get((model, lv), []), "success") or 0.0 for lv in levels]
            ax.bar([j + 0.27 * (i - 1) for j in range(len(levels))], values, width=0.27, label=model)
        ax.set_xticks(range(len(levels)), levels), ax.set_ylim(0, 1), ax.set_ylabel("success"), ax.legend()
        written.append(_save(fig, out / "maze-success.png"))
    return written


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
