"""Experiment (issue 22): how good can a network be on one damage level when it is trained for
that level alone, outside the weight blend the photo models are trained through?

    .venv/bin/python scripts/exp_fixed_level.py --level 0.5 --steps 3000 --out runs/fixed-l05

Fine-tunes a copy of ``x{s}`` (UpNet, same architecture as the photo models) on the everyday
branch of :class:`upres.data.degrade.Leveled` at one level ``t`` (fresh damage for every patch,
no second-order branch: at ``t = 0.5`` it never draws it anyway), MSE, Adam, cosine, bf16
autocast where the CPU has it, and writes ``OUT/final.safetensors`` and ``OUT/train.log``.
Score it on the ladder with ``upres eval -m OUT/final.safetensors ... --lr-dir
runs/ladder-x{s}/L2/BSD100``. It is a bound for what the blend costs, not a shipped model.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch

from upres.data.datasets import PairedPatchSampler
from upres.data.degrade import Leveled
from upres.data.ladder import KINDS, RUNGS
from upres.data.ladder import degrade as ladder_degrade
from upres.models import zoo
from upres.models.weights import load_model, save_model

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT.parent / "shared" / "data" / "train"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=int, default=4)
    ap.add_argument("--level", type=float, default=0.5)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--patch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ladder", choices=("L1", "L2"),
                    help="train on the ladder rung's own damage (upres.data.ladder: a random kind "
                         "and parameters in its ranges per patch) instead of Leveled at --level: "
                         "a bound on what the architecture reaches on that rung, fitted to it")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    base = zoo.resolve(f"x{args.scale}")
    assert base is not None
    net, card = load_model(base)
    net.train().to(memory_format=torch.channels_last)
    pipe = Leveled(args.scale)
    t = args.level
    def on_rung(hr: np.ndarray, g: np.random.Generator) -> np.ndarray:
        rung = RUNGS[args.ladder]
        kind = KINDS[int(g.integers(len(KINDS)))]
        hr8 = np.floor(hr * 255 + 0.5).astype(np.uint8)
        return ladder_degrade(hr8, args.scale, rung, kind, g).astype(np.float32) / 255

    data = PairedPatchSampler([TRAIN], scale=args.scale, patch=args.patch,
                              degrade=on_rung if args.ladder else
                              lambda hr, g: pipe.draw(hr, g, t, blind=False))
    opt = torch.optim.Adam(net.parameters(), lr=args.lr)
    def cosine(k: int) -> float:  # to 1 % of the start
        return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(k, args.steps) / args.steps))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, cosine)
    bf16 = torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    rng = np.random.default_rng(args.seed)
    ema = {k: v.detach().clone() for k, v in net.state_dict().items()}
    log = (out / "train.log").open("a")
    t0, run = time.time(), 0.0
    for step in range(1, args.steps + 1):
        lr_b, hr_b = data.sample(args.batch, rng)
        lr_b = lr_b.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            sr = net(lr_b)
        loss = torch.nn.functional.mse_loss(sr.float(), hr_b)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        with torch.no_grad():
            for k, v in net.state_dict().items():
                ema[k].mul_(0.999).add_(v.detach(), alpha=0.001) if v.is_floating_point() \
                    else ema[k].copy_(v)
        run += float(loss.detach())
        if step % 100 == 0:
            print(f"step {step}/{args.steps} loss {run / 100:.5f} "
                  f"{step / (time.time() - t0):.2f} steps/s", file=log, flush=True)
            run = 0.0
    net.load_state_dict(ema)
    save_model(out / "final.safetensors", net.eval().to(memory_format=torch.contiguous_format),
               card)
    print(f"done in {time.time() - t0:.0f} s", file=log, flush=True)


if __name__ == "__main__":
    main()
