"""Score a training run's checkpoint (its EMA weights when the run keeps them) mid-run.

    .venv/bin/python scripts/eval_checkpoint.py runs/photo-x4-psnr blind-BSD100 blind-Set14
    .venv/bin/python scripts/eval_checkpoint.py runs/x4 Set5 --threads 1

``SET`` is a benchmark folder name under ``../shared/data/benchmark`` (bicubic LR, the standard
protocol) or ``blind-NAME`` for the seeded blind set that ``scripts/make_blind_testset.py`` wrote
to ``runs/blind-x{s}/NAME``. Prints one line: the checkpoint's step and PSNR-Y per set. Uses the
same ``evaluate`` as ``upres eval``; the run keeps training undisturbed (one thread by default).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from upres.errors import UpresError
from upres.evaluate import evaluate, load_benchmark
from upres.train.config import load_config
from upres.train.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT.parent / "shared" / "data" / "benchmark"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("sets", nargs="+")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    if not (args.run / "last.pt").is_file():
        ap.error(f"{args.run}: no checkpoint last.pt")
    try:
        print(score(args.run, args.sets, args.threads))
    except UpresError as exc:
        ap.error(str(exc))


def score(run: Path, sets: list[str], threads: int) -> str:
    """One line: ``RUN step N SET PSNR-Y ...`` for the checkpoint ``run/last.pt``."""
    # The run's own Trainer builds the model, its EMA copy, the exported (folded) form and the
    # card with the architecture's input conventions, and loads the checkpoint as a resumed run
    # would (without writing to its train.log, where it would read as a new sitting), so the
    # weights are scored exactly as its validation scores them. No start-up weights are needed
    # (the checkpoint replaces them) and nothing is written.
    cfg = load_config(run / "config.yaml", ["model.init=null", f"threads={threads}", "device=cpu"])
    tr = Trainer(cfg, run, log=lambda _: None, log_file=False)
    tr.resume()
    up = tr.upscaler()
    scale = cfg.scale
    out = [f"{run} step {tr.step}"]
    for s in sets:
        name = s.removeprefix("blind-")
        lr_dir = ROOT / "runs" / f"blind-x{scale}" / name if s.startswith("blind-") else None
        images = load_benchmark(BENCH / name, scale, lr_dir)
        r = evaluate(up.upscale, model_name=run.name, dataset=BENCH / name, scale=scale,
                     images=images)
        out.append(f"{s} {r.psnr_y:.3f}")
    return " ".join(out)


if __name__ == "__main__":
    main()
