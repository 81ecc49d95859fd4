"""Train several upres runs side by side on a lent GPU for a fixed wall time, each finishing its
cosine schedule exactly when the time is up.

A lent GPU comes for minutes (the device tool: 10 minutes a command, 15 a session, start
included), so the schedule must fit the time, and the step rate there is unknown until it is
measured. This does, in one command:

1. **probe**: every job runs ``--probe`` steps side by side (all on the one GPU, as they will
   run), through ``upres train`` with ``--stop-after``; its steps/s is read from its
   ``train.log``;
2. **fit**: each job's ``optim.steps`` is set so that the steps that fit in the time left end
   the cosine there. A resumed job gets ``optim.restart`` at the step it was resumed from (its
   probe runs at the start of that cycle), so its rate starts a new cycle at ``optim.lr`` (set
   it per job) and anneals to ``min_lr`` in the time (without the restart, a run resumed at
   step k with steps N would continue the old cosine at (k - warmup) / (N - warmup), near its
   end when N - k is small: session 17's first call ran so, its two resumed jobs at 1e-5 and
   below throughout; and a run whose schedule had ended would not train at all);
3. **train**: every job resumes with that ``optim.steps`` and runs to the end (final validation,
   ``final.safetensors``); a job still running at the deadline is stopped and keeps its last
   checkpoint (``ckpt_every`` steps);
4. **pack**: each run folder goes to ``OUT/<name>.tar`` (the device tool brings back 8 files).

A job is ``NAME=SOURCE[;KEY=VALUE...]``: SOURCE is a run folder to resume (a committed
``checkpoints/<name>``) or a config to start; the ``KEY=VALUE`` pairs are ``--set`` overrides
for that job alone; ``--set`` overrides apply to every job. For example (session 17)::

    python scripts/pack_train_data.py          # -> gpu-data/train (lossless WebP)
    # device run, carry ["gpu-data"]:
    PYTHONPATH=$PWD/src python3 scripts/gpu_stage.py --out $OUT --budget 520 --reserve 50 \\
        --set 'data.train=[gpu-data/train]' --set 'data.val=[gpu-data/Set5]' \\
        --set data.batch=64 --set data.patch=48 \\
        --job best-x2-rfdn=checkpoints/best-x2-rfdn --job best-x4-rfdn=checkpoints/best-x4-rfdn \\
        --job best-x3-rfdn=configs/best-x3-rfdn.yaml

(there, the three ran at 13.6, 7.3 and 10.8 steps/s side by side, the data sampler taking
33-59 % of a step: the machine's CPU, not its GPU, set the pace). The working tree that travels
is limited to 64 MiB: with the packed images (41 MB) it fit only with the zoo's weights moved
out of the tree for the call.

Back here, unpack a tar over ``runs/<name>`` and keep the committed ``config.yaml``'s data paths
(the run folder's own records the GPU's).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
RATE = re.compile(r"step (\d+)/\d+ .* ([0-9.]+) steps/s")


def say(msg: str) -> None:
    print(f"[gpu_stage {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def upres(*args: str) -> list[str]:
    return [sys.executable, "-m", "upres", "train", *args]


def step_of(run: Path) -> int:
    if not (run / "last.pt").is_file():
        return 0
    return int(torch.load(run / "last.pt", map_location="cpu", weights_only=True)["step"])


def rate_of(run: Path) -> float | None:
    """steps/s of the last sitting in ``train.log`` (the probe's: the lines after its last
    ``run``/``resumed from`` line), the slowest interval but the first (it holds warm-up);
    None when it logged none."""
    if not (run / "train.log").is_file():
        return None
    lines = (run / "train.log").read_text().splitlines()
    starts = [i for i, x in enumerate(lines) if re.search(r"^\S+ \S+ (run |resumed from )", x)]
    sitting = "\n".join(lines[starts[-1] if starts else 0:])
    rates = [float(m[2]) for m in RATE.finditer(sitting)]
    if not rates:
        return None
    return rates[-1] if len(rates) == 1 else min(rates[1:])


def run_all(cmds: dict[str, list[str]], work: Path, deadline: float) -> dict[str, int]:
    """Start every command at once, wait for all (stopping those past ``deadline``)."""
    procs = {}
    for name, cmd in cmds.items():
        with open(work / f"{name}.out", "a") as log:  # the child keeps its own descriptor
            procs[name] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    codes = {}
    while procs:
        for name, p in list(procs.items()):
            if p.poll() is not None:
                codes[name] = p.returncode
                del procs[name]
        if procs and time.time() > deadline:
            for name, p in procs.items():
                say(f"{name}: past the deadline, stopped (keeps its last checkpoint)")
                p.terminate()
                try:
                    codes[name] = p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    p.kill()
                    codes[name] = p.wait()
            break
        time.sleep(1)
    return codes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--job", action="append", required=True, metavar="NAME=SOURCE[;K=V...]")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--budget", type=float, required=True,
                    help="seconds from now until every job must have finished and been packed")
    ap.add_argument("--probe", type=int, default=400, help="steps each job runs to be timed")
    ap.add_argument("--ckpt-every", type=int, default=500)
    ap.add_argument("--reserve", type=float, default=45.0,
                    help="seconds kept for start-up (data loading), final validation, packing")
    ap.add_argument("--work", type=Path, default=Path("/tmp/gpu_stage"))
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    t0 = time.time()
    end = t0 + args.budget
    args.work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    say(f"torch {torch.__version__}, cuda {torch.cuda.is_available()}"
        f"{', ' + torch.cuda.get_device_name() if torch.cuda.is_available() else ''}, "
        f"{os.cpu_count()} CPUs")
    every = [f"log_every={max(1, args.probe // 4)}", f"ckpt_every={args.ckpt_every}"]
    common = [x for s in args.set + every for x in ("--set", s)]
    jobs: dict[str, tuple[Path, list[str], Path | None]] = {}
    for spec in args.job:
        name, _, rest = spec.partition("=")
        source, *own = rest.split(";")
        run = args.work / name
        src = ROOT / source
        if not name or not (src.is_file() or (src / "last.pt").is_file()):
            raise SystemExit(f"gpu_stage: --job {spec!r}: {src} is neither a config file nor "
                             "a run folder with last.pt")
        config = src if src.is_file() else None  # else a run folder to resume
        if config is None:
            shutil.copytree(src, run, ignore=shutil.ignore_patterns("README.md"))
        sets = common + [x for s in own for x in ("--set", s)]
        jobs[name] = (run, sets, config)

    # 1. probe
    start = {name: step_of(run) for name, (run, _, _) in jobs.items()}
    cmds = {}
    for name, (run, sets, config) in jobs.items():
        stop = ["--stop-after", str(start[name] + args.probe)]
        if not config:  # a new cycle from here; its length is fitted after the probe
            stop += ["--set", f"optim.restart={start[name]}",
                     "--set", f"optim.steps={start[name] + 100 * args.probe}"]
        cmds[name] = (upres(str(config), "--run-dir", str(run), *sets, *stop) if config
                      else upres("--resume", str(run), *sets, *stop))
    say(f"probe: {args.probe} steps each from {start}")
    codes = run_all(cmds, args.work, end - args.reserve)
    rates = {name: rate_of(run) for name, (run, _, _) in jobs.items()}
    failed = [name for name in jobs if codes.get(name) or rates[name] is None]
    for name in failed:  # said, and packed below as far as it got
        say(f"{name}: probe failed (exit {codes.get(name)}), not trained further; output:\n"
            + (args.work / f"{name}.out").read_text()[-3000:])
    # 2. fit
    left = end - time.time() - args.reserve
    cmds = {}
    for name, (run, sets, config) in jobs.items():
        if name in failed:
            continue
        rate, now = rates[name], step_of(run)
        steps = now + max(args.ckpt_every, int(rate * left * 0.95) // 100 * 100)
        say(f"{name}: {rate:.1f} steps/s side by side, step {now}; optim.steps -> {steps} "
            f"({steps - now} steps in {left:.0f} s)")
        fit = ["--set", f"optim.steps={steps}"]
        if config is None:  # a resumed run: the cycle begun at the probe
            fit += ["--set", f"optim.restart={start[name]}"]
        cmds[name] = upres("--resume", str(run), *sets, *fit)
    # 3. train
    codes = run_all(cmds, args.work, end - 20) if cmds else {}
    say(f"train: exit codes {codes}")
    # 4. pack
    for name, (run, _, _) in jobs.items():
        if not (run / "train.log").is_file():
            say(f"{name}: no run folder to pack")
            continue
        shutil.copy(args.work / f"{name}.out", run / "gpu_stage.out")
        with tarfile.open(args.out / f"{name}.tar", "w") as tar:
            for f in sorted(run.iterdir()):
                if f.is_file():
                    tar.add(f, arcname=f"{name}/{f.name}")
        say(f"{name}: step {step_of(run)}, packed {(args.out / f'{name}.tar').stat().st_size} B")
        log = (run / "train.log").read_text().splitlines()
        say(f"{name}: " + " | ".join(x for x in log[-40:] if "val step" in x or "stopped" in x))
    say(f"done in {time.time() - t0:.0f} s")
    if failed:
        raise SystemExit(f"gpu_stage: probe failed for {', '.join(failed)} (packed as it was)")


if __name__ == "__main__":
    main()
