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

import torch
import yaml

from upres.evaluate import evaluate, load_benchmark
from upres.inference.upscaler import Upscaler
from upres.models.descriptor import ModelCard
from upres.models.registry import REGISTRY

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT.parent / "shared" / "data" / "benchmark"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("sets", nargs="+")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = yaml.safe_load((args.run / "config.yaml").read_text())
    ck = torch.load(args.run / "last.pt", map_location="cpu", weights_only=False)
    scale, arch, hp = cfg["scale"], cfg["model"]["arch"], cfg["model"]["params"]
    model = REGISTRY.build(arch, {"scale": scale, **hp})
    model.load_state_dict(ck["ema"] if ck.get("ema") is not None else ck["model"])
    if hasattr(model, "fold"):  # re-parameterised training forms run folded, as exported
        model = model.fold()
    card = ModelCard(name=args.run.name, arch=arch, scale=scale, hparams=hp, params=0)
    up = Upscaler(model.eval(), card, device="cpu")
    out = [f"{args.run} step {ck['step']}"]
    for s in args.sets:
        name = s.removeprefix("blind-")
        lr_dir = ROOT / "runs" / f"blind-x{scale}" / name if s.startswith("blind-") else None
        images = load_benchmark(BENCH / name, scale, lr_dir)
        r = evaluate(up.upscale, model_name=args.run.name, dataset=BENCH / name, scale=scale,
                     images=images)
        out.append(f"{s} {r.psnr_y:.3f}")
    print(" ".join(out))


if __name__ == "__main__":
    main()
