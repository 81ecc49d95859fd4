"""Make the degradation ladder (issue 22): Set14 and BSD100 at rungs L0-L3 (seeded; the
definitions are in ``upres.data.ladder``).

    .venv/bin/python scripts/make_ladder.py [--out runs/ladder] [--scales 2 4]

Writes OUT-x{s}/{L0,L1,L2,L3}/{Set14,BSD100}/X{s}/{name}x{s}.png; score a model with
``upres eval -m MODEL -d ../shared/data/benchmark/Set14 -s 4 --lr-dir runs/ladder-x4/L1/Set14``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from upres.data.ladder import make_ladder_set

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT.parent / "shared" / "data" / "benchmark"
SETS = ("Set14", "BSD100")
LEVELS = ("L0", "L1", "L2", "L3")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "runs" / "ladder"))
    ap.add_argument("--scales", type=int, nargs="+", default=[2, 4])
    ap.add_argument("--seed", type=int, default=2026)
    args = ap.parse_args()
    for s in args.scales:
        for level in LEVELS:
            for name in SETS:
                out = Path(f"{args.out}-x{s}") / level / name
                files = make_ladder_set(BENCH / name, out, scale=s, rung=level, seed=args.seed)
                print(f"x{s} {level} {name}: {len(files)} LR images in {out}")


if __name__ == "__main__":
    main()
