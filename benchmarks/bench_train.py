"""Training throughput of the default recipe on this CPU: steps/s and the fraction of step time
spent waiting for data.

    .venv/bin/python benchmarks/bench_train.py [--steps 300]

Runs configs/fast-x2.yaml (validation off) in a temporary folder and writes the "training"
section of docs/benchmarks.md from the run's metrics.jsonl (the first logged window, which
includes warm-up, is left out).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from upres.train.config import load_config
from upres.train.trainer import Trainer

from _report import update_section

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "configs" / "fast-x2.yaml"  # the default recipe the docstring names


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--recipe", default=str(RECIPE))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        cfg = load_config(args.recipe, [f"optim.steps={args.steps}", "val_every=1000000",
                                        "log_every=50", f"ckpt_every={args.steps}",
                                        "data.val=[]"])
        Trainer(cfg, Path(d) / "run", log=lambda _: None).run()
        rows = [json.loads(x) for x in (Path(d) / "run" / "metrics.jsonl").read_text()
                .splitlines() if "loss" in x][1:]
    sps = sum(r["steps_per_s"] for r in rows) / len(rows)
    wait = sum(r["data_wait"] for r in rows) / len(rows)
    print(f"{sps:.2f} steps/s, data wait {100 * wait:.1f}%")
    body = (f"Recipe `{Path(args.recipe).name}` ({cfg.model.arch} {cfg.model.params}, batch "
            f"{cfg.data.batch} of {cfg.data.patch}x{cfg.data.patch} LR patches, x{cfg.scale}), "
            f"{args.steps} steps, {cfg.threads or 'default'} threads, validation off; means over "
            f"the logged windows after the first.\n\n| steps/s | time waiting for data |\n"
            f"|---|---|\n| {sps:.2f} | {100 * wait:.1f} % |\n")
    update_section("training", "Training throughput (default recipe, CPU)", body)


if __name__ == "__main__":
    main()
