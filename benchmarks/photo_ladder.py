"""The degradation ladder (issue 22): every model on rungs L0 (clean) to L3 (Real-ESRGAN's
second-order), PSNR-Y on Set14 and BSD100, and NIQE on L3.

Rungs are made by ``scripts/make_ladder.py`` (definitions in ``upres.data.ladder``); this script
makes any that are missing. Rows: bicubic, ``fast-x{s}``, ``x{s}``, the photo model at fixed
clean-up strengths, and at ``auto`` (the default: strength measured per image). Then, per rung:
the best fixed strength against auto, the best single model against auto, and the issue's
targets for the photo model at auto against ``x{s}``.

    .venv/bin/python benchmarks/photo_ladder.py [--scales 4 2] [--strengths 0 0.25 0.5 0.75 1]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import upres
from upres.data.ladder import make_ladder_set
from upres.evaluate import evaluate, load_benchmark
from upres.models import zoo

from _report import update_section

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT.parent / "shared" / "data" / "benchmark"
SETS = ("Set14", "BSD100")
RUNGS = ("L0", "L1", "L2", "L3")
#: photo model at auto minus x{s}, per rung (issue 22); L3's is 1 dB at x2
TARGETS = {"L0": -0.5, "L1": 0.0, "L2": 0.5, "L3": 0.75}


def _shown(path: str) -> str:
    """``path`` relative to the repository when it lies inside it."""
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scales", type=int, nargs="+", default=[4, 2])
    ap.add_argument("--strengths", type=float, nargs="+", default=[0.25, 0.5, 0.75, 1.0])
    ap.add_argument("--ladder", default=str(ROOT / "runs" / "ladder"))
    args = ap.parse_args()
    for s in args.scales:
        photo = zoo.photo_for(s)
        if photo is None:
            print(f"x{s}: no photo model shipped; skipped")
            continue
        data = {}
        for rung in RUNGS:
            for name in SETS:
                lr_dir = Path(f"{args.ladder}-x{s}") / rung / name
                make_ladder_set(BENCH / name, lr_dir, scale=s, rung=rung)
                data[rung, name] = load_benchmark(str(BENCH / name), s, str(lr_dir))
        rows: dict[str, dict] = {}
        models = [("bicubic", upres.load("bicubic", scale=s), {}),
                  (f"fast-x{s}", upres.load(f"fast-x{s}", device="cpu"), {}),
                  (f"x{s}", upres.load(f"x{s}", device="cpu"), {})]
        pu = upres.load(photo.name, device="cpu")
        models += [(f"{photo.name} {t:g}", pu, {"denoise": t}) for t in args.strengths]
        models.append((f"{photo.name} auto", pu, {"denoise": "auto"}))
        strengths: dict[tuple[str, str], list[float]] = {}
        for label, up, kw in models:
            rows[label] = {}
            for (rung, name), images in data.items():
                niqe = rung == "L3" and (label.endswith("auto") or label.endswith(" 1")
                                         or label == f"x{s}")
                used = strengths.setdefault((rung, name), []) if label.endswith("auto") \
                    else []

                def run(lr, up=up, kw=kw, used=used):
                    out = up.upscale(lr, **kw)
                    used.append(up.last[0] if hasattr(up, "last") else 0.0)
                    return out

                r = evaluate(run, model_name=label, dataset=str(BENCH / name), scale=s,
                             images=images, niqe=niqe)
                rows[label][rung, name] = (r.psnr_y, r.niqe if niqe else None)
            print(label, " ".join(f"{v[0]:.2f}" for v in rows[label].values()), flush=True)
        head = "| model | " + " | ".join(f"{r} {n}" for r in RUNGS for n in SETS) + \
            " | NIQE L3 (Set14 / BSD100) |"
        lines = [head, "|---" * (2 + len(RUNGS) * len(SETS)) + "|"]
        for label, vals in rows.items():
            cells = [f"{vals[r, n][0]:.2f}" for r in RUNGS for n in SETS]
            nq = [vals["L3", n][1] for n in SETS]
            nq_cell = " / ".join(f"{v:.2f}" for v in nq) if all(v is not None for v in nq) \
                else ""
            lines.append(f"| {label} | " + " | ".join(cells) + f" | {nq_cell} |")
        auto = rows[f"{photo.name} auto"]
        base = rows[f"x{s}"]
        fixed = [k for k in rows if k.startswith(photo.name) and not k.endswith("auto")]
        verdict = ["", "| rung | set | auto - x{s} (target) | best fixed strength (its PSNR) | "
                   "auto - best fixed | best single model | auto - best model |",
                   "|---|---|---|---|---|---|---|"]
        for r in RUNGS:
            for n in SETS:
                tgt = TARGETS[r] if not (r == "L3" and s == 2) else 1.0
                diff = auto[r, n][0] - base[r, n][0]
                bf = max([*fixed, f"x{s}"], key=lambda k, r=r, n=n: rows[k][r, n][0])
                bm = max((k for k in rows if not k.endswith("auto")),
                         key=lambda k, r=r, n=n: rows[k][r, n][0])
                verdict.append(
                    f"| {r} | {n} | {diff:+.2f} (>= {tgt:+.2f}: "
                    f"{'met' if diff >= tgt else 'NOT met'}) | {bf} ({rows[bf][r, n][0]:.2f}) | "
                    f"{auto[r, n][0] - rows[bf][r, n][0]:+.2f} | {bm} | "
                    f"{auto[r, n][0] - rows[bm][r, n][0]:+.2f} |")
        verdict += ["", "Strength `auto` chose per rung (the estimated damage level; 0 runs "
                    f"`x{s}` itself): mean, and the share of images left at 0.", "",
                    "| rung | " + " | ".join(SETS) + " |", "|---" * (1 + len(SETS)) + "|"]
        for r in RUNGS:
            cells = []
            for n in SETS:
                ts = strengths[r, n]
                zero = 100 * sum(t == 0 for t in ts) / len(ts)
                cells.append(f"{sum(ts) / len(ts):.2f} ({zero:.0f} % at 0)")
            verdict.append(f"| {r} | " + " | ".join(cells) + " |")
        body = ("PSNR-Y (dB) by the standard protocol on each rung's LR "
                f"(`{_shown(args.ladder)}-x{s}`, "
                "made by `scripts/make_ladder.py`, rungs defined in `upres.data.ladder`); "
                "NIQE (upres's own fit, lower is more natural) on L3. "
                f"`{photo.name} t` is the clean-up strength t; `auto` measures each image.\n\n"
                + "\n".join(lines + verdict))
        update_section(f"photo-ladder-x{s}", f"Photo models on the degradation ladder (x{s})",
                       body)


if __name__ == "__main__":
    main()
