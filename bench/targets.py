"""Issue 16's targets beside the figures: each benchmark records what it measured here,
and ``python bench/targets.py`` prints one table of them (``make bench`` ends with it).

A record is one line of JSON in ``.bench/targets.jsonl`` (git-ignored): the target's name,
the figure measured, the goal, whether the figure meets it, and the baseline measured in
the same run that the figure is a ratio of (or that bounds it). ``make bench`` empties the
file first, so the table shows one ``make bench``; a benchmark run by hand adds its
records, and the table shows the newest record of each target.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / ".bench" / "targets.jsonl"


@dataclass(frozen=True, slots=True)
class Target:
    """One issue-16 target as measured by one benchmark run."""

    name: str  # e.g. "worker: one process, relay in it"
    figure: str  # what was measured, with its unit: "5,210 transitions/s"
    goal: str  # the target: ">= 8,000 transitions/s"
    met: bool
    baseline: str  # the same run's baseline: "plain aiokafka 110,000 msg/s"
    bench: str  # which script measured it
    at: float = 0.0  # time.time() when recorded


def record(
    name: str, figure: str, goal: str, met: bool, baseline: str, *, bench: str | None = None
) -> None:
    """Append one target's figure to the results file."""
    RESULTS.parent.mkdir(exist_ok=True)
    target = Target(name, figure, goal, met, baseline, bench or Path(sys.argv[0]).name, time.time())
    with RESULTS.open("a", encoding="utf-8") as out:
        out.write(json.dumps(asdict(target)) + "\n")


def reset() -> None:
    """Forget earlier records (``make bench`` starts with it)."""
    RESULTS.unlink(missing_ok=True)


def latest() -> list[Target]:
    """The newest record of each target, in the order they were first recorded."""
    if not RESULTS.exists():
        return []
    newest: dict[str, Target] = {}
    for line in RESULTS.read_text(encoding="utf-8").splitlines():
        if line.strip():
            target = Target(**json.loads(line))
            newest.pop(target.name, None)
            newest[target.name] = target
    return list(newest.values())


def table(targets: list[Target]) -> str:
    header = ("target", "figure", "goal", "met", "baseline (same run)", "bench")
    rows = [
        (t.name, t.figure, t.goal, "yes" if t.met else "NO", t.baseline, t.bench) for t in targets
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True))
        for row in [header, *rows]
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    met = sum(t.met for t in targets)
    lines.append(f"\n{met} of {len(targets)} targets met")
    return "\n".join(lines)


def main() -> None:
    if sys.argv[1:] == ["--reset"]:
        reset()
        return
    targets = latest()
    if not targets:
        print("no target recorded yet: run the benchmarks (make bench)")
        return
    print("Issue 16 targets (.bench/targets.jsonl)\n")
    print(table(targets))


if __name__ == "__main__":
    main()
