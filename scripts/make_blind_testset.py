"""Make the blind-SR test sets: Set14 and BSD100 degraded by the second-order pipeline (seeded).

    .venv/bin/python scripts/make_blind_testset.py [--out runs/blind-x4] [--scale 4]

Writes OUT/{Set14,BSD100}/X{s}/{name}x{s}.png; evaluate with
``upres eval -m MODEL -d ../shared/data/benchmark/Set14 -s 4 --lr-dir OUT/Set14``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from upres.data.blindset import make_blind_set

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT.parent / "shared" / "data" / "benchmark"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "runs" / "blind-x4"))
    ap.add_argument("--scale", type=int, default=4)
    ap.add_argument("--seed", type=int, default=2026)
    args = ap.parse_args()
    for name in ("Set14", "BSD100"):
        files = make_blind_set(BENCH / name, Path(args.out) / name, scale=args.scale,
                               seed=args.seed)
        print(f"{name}: {len(files)} LR images in {Path(args.out) / name}")


if __name__ == "__main__":
    main()
