"""Shared helpers for the benchmark scripts: machine line and docs/benchmarks.md sections."""

from __future__ import annotations

import re
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from upres.bench import machine

DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
MODELS_DOC = DOC.parent / "models.md"  # sections: ladder-x{s} (compare_peers), architectures
MODELS_HEADER = """# Models

The model ladder (tiers per scale: tiny, fast, standard and best; issues 8 and 23), made by
`benchmarks/compare_peers.py`, and every registered architecture, listed by
`scripts/model_table.py`.
"""
HEADER = """# Benchmarks

Every figure here was measured by the script named in its section, on the machine it names.
Re-run a script to refresh its section; the others are left as they are.
"""


def command() -> str:
    """The command line that is running now, as a user would type it."""
    return " ".join([".venv/bin/python", *(shlex.quote(a) for a in sys.argv)])


def update_section(name: str, title: str, body: str, *, doc: Path = DOC,
                   header: str = HEADER) -> None:
    """Replace (or append) the section ``name`` of ``doc`` (docs/benchmarks.md unless told;
    a missing file starts with ``header``)."""
    doc.parent.mkdir(parents=True, exist_ok=True)
    text = doc.read_text() if doc.exists() else header
    block = (f"<!-- BEGIN {name} -->\n## {title}\n\nCommand: `{command()}`  \n"
             f"Machine: {machine()}\n\n{body.strip()}\n<!-- END {name} -->")
    pattern = re.compile(rf"<!-- BEGIN {re.escape(name)} -->.*?<!-- END {re.escape(name)} -->",
                         re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else (
        text.rstrip() + "\n\n" + block + "\n")
    doc.write_text(text)
    print(f"updated section {name!r} of {doc}")


def timeit(fn: Callable[[], object], repeat: int, warmup: int = 1) -> float:
    """Median wall seconds of ``repeat`` calls of ``fn`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def timeit_rounds(fns: Sequence[Callable[[], object]], repeat: int, rounds: int = 3,
                  warmup: int = 1) -> list[float]:
    """Median wall seconds of each of ``fns``, timed in turn: ``rounds`` rounds, each
    :func:`timeit` of every function (``repeat`` calls after ``warmup``), the order reversed
    every other round; each function's figure is the median of its rounds. The machines here
    change speed over minutes (one function timed twice a few minutes apart differed by 30 %),
    so functions timed once each, minutes apart, are not comparable; in rounds, every function
    meets every phase of the drift."""
    per: list[list[float]] = [[] for _ in fns]
    for r in range(rounds):
        order = range(len(fns)) if r % 2 == 0 else reversed(range(len(fns)))
        for i in order:
            per[i].append(timeit(fns[i], repeat, warmup))
    return [statistics.median(t) for t in per]
