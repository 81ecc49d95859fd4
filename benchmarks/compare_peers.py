"""upres's shipped models beside bicubic, the official peer weights (through upres's own
architectures) and OpenCV dnn_superres, on Set5, Set14 and BSD100 at x2/x3/x4: PSNR-Y/SSIM-Y by
the standard protocol and CPU latency for a 1280x720 output, in one run on one machine.

    .venv/bin/python benchmarks/compare_peers.py [--scales 2 3 4] [--repeat 5] [--rounds 3]

Writes one section per scale of docs/benchmarks.md ("peers-x2" ...) and docs/peers-x{s}.png
(BSD100 PSNR against latency), each as soon as that scale is done, and the model ladder at that
scale ("ladder-x{s}" in docs/models.md): each shipped tier against its latency budget (a share
of a peer's latency measured in the same run) and the PSNR it must reach.
Peers are measured only; they are never shipped, copied or trained from.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

import upres
from upres.bench import _frame
from upres.evaluate import evaluate, load_benchmark
from upres.models import zoo

from _report import DOC, MODELS_DOC, MODELS_HEADER, timeit_rounds, update_section

SHARED = Path(__file__).resolve().parents[2] / "shared"
BENCH = SHARED / "data" / "benchmark"
PT = SHARED / "peers" / "pytorch"
CV = SHARED / "peers" / "opencv_dnn_superres"
SETS = ("Set5", "Set14", "BSD100")
OUT_SIZE = (1280, 720)

# label -> (path, scales): official weights loaded through upres's architectures
PEERS = {
    "IMDN": {s: PT / f"IMDN/IMDN_x{s}.pth" for s in (2, 3, 4)},
    "CARN-M": {s: PT / "CARN-M/carn_m.pth" for s in (2, 3, 4)},
    "RFDN (AIM)": {4: PT / "RFDN/RFDN_AIM.pth"},
    "SAFMN (NTIRE23)": {4: PT / "SAFMN/SAFMN_NTIRE2023_x4.pth"},
    "FSRCNN (PyTorch port)": {s: PT / f"FSRCNN_yjn870/fsrcnn_x{s}.pth" for s in (2, 3, 4)},
}
CV_MODELS = {"OpenCV ESPCN": "espcn", "OpenCV FSRCNN": "fsrcnn", "OpenCV LapSRN": "lapsrn"}

# Published PSNR-Y (Set5, Set14, BSD100) of models trained on 291 / T91 images, from the papers.
PUBLISHED = {
    "FSRCNN": {2: (37.00, 32.63, 31.53), 3: (33.18, 29.37, 28.53), 4: (30.72, 27.61, 26.98)},
    "VDSR": {2: (37.53, 33.03, 31.90), 3: (33.66, 29.77, 28.82), 4: (31.35, 28.01, 27.29)},
    "IDN": {2: (37.83, 33.30, 32.08), 3: (34.11, 29.99, 28.95), 4: (31.82, 28.25, 27.41)},
}
# tier name pattern -> (peer whose measured latency sets the budget, share of it, the bar:
# a published row above or "measured:<peer label>")
TIERS = {
    "tiny-x{s}": ("OpenCV ESPCN", 1.0, "FSRCNN"),
    "fast-x{s}": ("IMDN", 0.25, "FSRCNN"),
    "x{s}": ("CARN-M", 0.5, "VDSR"),
    # issue 23: the best tier's bar is IDN's published figures (trained on the same 291 images)
    "best-x{s}": ("IMDN", 1.0, "IDN"),
}


def _ms(v: float) -> str:
    """Milliseconds as the ladder prints them: one decimal below 100 ms (close calls show)."""
    return f"{v:.1f}" if v < 100 else f"{v:.0f}"


# label -> the path an upres model ran on (its CPU default: fp32, or int8 for the int8 tier)
PATHS: dict[str, str] = {}


def ladder_rows(rows: list[dict], s: int) -> list[str]:
    """Markdown rows judging each shipped tier at scale ``s`` from one run's ``rows`` (dicts
    with label, psnr {Set5, Set14, BSD100}, latency_ms): budget, bar, and whether both hold
    (PSNR compared at the two decimals the papers print)."""
    by_label = {r["label"]: r for r in rows}
    out = []
    for pattern, (peer, share, bar) in TIERS.items():
        name = pattern.format(s=s)
        r, ref = by_label.get(f"upres {name}"), by_label.get(peer)
        if bar.startswith("measured:"):
            b = by_label.get(bar.split(":", 1)[1])
            need = tuple(b["psnr"][d] for d in SETS) if b else None
            bar_label = f"{bar.split(':', 1)[1]} as measured"
        else:
            need, bar_label = PUBLISHED[bar][s], f"{bar} published"
        if r is None:
            out.append(f"| `{name}` | not shipped | | | {bar_label} | |")
            continue
        got = tuple(r["psnr"][d] for d in SETS)
        budget = ref["latency_ms"] * share if ref else float("nan")
        fast_ok = ref is not None and r["latency_ms"] <= budget
        good_ok = need is not None and all(round(g, 2) >= n - 1e-9 for g, n in
                                           zip(got, need, strict=True))
        need_txt = " / ".join(f"{v:.2f}" for v in need) if need else "?"
        verdict = "**met**" if fast_ok and good_ok else "not met: " + ", ".join(
            w for w, ok in (("too slow", fast_ok), ("below the bar", good_ok)) if not ok)
        path = PATHS.get(f"upres {name}", "fp32")
        shown = f"`{name}`" + ("" if path == "fp32" else f" ({path}, its default)")
        out.append(f"| {shown} | {' / '.join(f'{v:.2f}' for v in got)} | "
                   f"{_ms(r['latency_ms'])} | {_ms(budget)} ({share:g} x {peer}) | "
                   f"{bar_label}: {need_txt} | {verdict} |")
    return out


def opencv_upscaler(kind: str, scale: int) -> Callable[[np.ndarray], np.ndarray] | None:
    name = {"espcn": "ESPCN", "fsrcnn": "FSRCNN", "lapsrn": "LapSRN"}[kind]
    path = CV / f"{name}_x{scale}.pb"
    if not path.is_file():
        return None
    sr = cv2.dnn_superres.DnnSuperResImpl_create()
    sr.readModel(str(path))
    sr.setModel(kind, scale)
    return lambda rgb: np.ascontiguousarray(sr.upsample(np.ascontiguousarray(rgb[:, :, ::-1]))
                                            [:, :, ::-1])


def candidates(scale: int) -> list[tuple[str, str, Callable[[np.ndarray], np.ndarray]]]:
    """``(label, group, rgb uint8 -> rgb uint8)`` for everything measured at ``scale``."""
    out = []
    for card in zoo.shipped():
        if card.scale == scale:
            up = upres.load(card.name, device="cpu")  # at its default path (fp32 or int8)
            PATHS[f"upres {card.name}"] = up.precision
            out.append((f"upres {card.name}", "upres", lambda x, up=up: up.upscale(x, tile=0)))
    for name in ("bicubic", "lanczos"):
        up = upres.load(name, scale=scale)
        out.append((name, "interpolation", up.upscale))
    for label, paths in PEERS.items():
        if scale in paths and paths[scale].is_file():
            up = upres.load(paths[scale], device="cpu", scale=scale)
            out.append((label, "peer", lambda x, up=up: up.upscale(x, tile=0)))
    for label, kind in CV_MODELS.items():
        fn = opencv_upscaler(kind, scale)
        if fn is not None:
            out.append((label, "opencv", fn))
    return out


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scales = sorted({r["scale"] for r in rows})
    fig, axes = plt.subplots(1, len(scales), figsize=(6.5 * len(scales), 4.6), squeeze=False)
    colours = {"upres": "tab:red", "peer": "tab:blue", "opencv": "tab:green",
               "interpolation": "tab:gray"}
    for ax, s in zip(axes[0], scales, strict=True):
        for r in (r for r in rows if r["scale"] == s):
            ax.scatter(r["latency_ms"], r["psnr"]["BSD100"], c=colours[r["group"]], s=28)
            ax.annotate(r["label"], (r["latency_ms"], r["psnr"]["BSD100"]), fontsize=7,
                        xytext=(3, 3), textcoords="offset points")
        ax.set_xscale("log")
        ax.set_xlabel("CPU latency for 1280x720 output (ms, log)")
        ax.set_ylabel("BSD100 PSNR-Y (dB)")
        ax.set_title(f"x{s}")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


def write_scale(rows: list[dict], s: int, repeat: int, rounds: int) -> None:
    """The section ``peers-x{s}`` of docs/benchmarks.md and docs/peers-x{s}.png."""
    lines = ["| model | kind | Set5 PSNR / SSIM | Set14 PSNR / SSIM | BSD100 PSNR | "
             "CPU ms (1280x720 out) |", "|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: r["latency_ms"]):
        p, q = r["psnr"], r["ssim"]
        lines.append(f"| {r['label']} | {r['group']} | {p['Set5']:.2f} / {q['Set5']:.4f} | "
                     f"{p['Set14']:.2f} / {q['Set14']:.4f} | {p['BSD100']:.2f} | "
                     f"{r['latency_ms']:.1f} |")
    png = DOC.parent / f"peers-x{s}.png"
    plot(rows, png)
    body = ("Standard protocol (MATLAB-bicubic LR from the modcropped HR, Y channel, border "
            "shaved by the scale; SSIM on Set5/Set14). Latency: the median of "
            f"{rounds} rounds, each timing every model in turn (the order reversed every other "
            f"round) after all were evaluated, of the median of {repeat} runs after one "
            "warm-up (the machine's speed drifts over minutes), whole frame, uint8 RGB in "
            "and out, in this "
            "one process, every model at its CPU default (fp32 for all but upres models made "
            "to run int8, labelled in the ladder) and memory format; OpenCV graphs get "
            "BGR. Peers: the authors' weights from `../shared/peers`, run by upres's own "
            "implementations; OpenCV dnn_superres models were trained on OpenCV-bicubic LR, "
            "which is why they score near bicubic here.\n\n" + "\n".join(lines)
            + f"\n\n![PSNR against CPU latency at x{s}]({png.name})\n")
    update_section(f"peers-x{s}", f"upres against peers at x{s} (quality and CPU latency)", body)
    ladder = ("Tiers judged in one run of this script: latency for a 1280x720 output on this "
              "CPU at each model's default precision (fp32; int8 where labelled), PSNR-Y on "
              "Set5 / Set14 / BSD100 by the standard protocol on that same path. Budgets are "
              "shares of the peer's latency measured in the same run.\n\n"
              "| model | Set5 / Set14 / BSD100 | CPU ms | budget, ms | must reach | verdict |\n"
              "|---|---|---|---|---|---|\n" + "\n".join(ladder_rows(rows, s))
              + f"\n\n![PSNR against CPU latency at x{s}]({png.name})\n\nAll rows of this run: "
              f"[benchmarks.md, peers-x{s}](benchmarks.md).\n")
    update_section(f"ladder-x{s}", f"The ladder at x{s}", ladder, doc=MODELS_DOC,
                   header=MODELS_HEADER)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scales", type=int, nargs="+", default=[2, 3, 4])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3,
                    help="timing rounds, every model timed in each (median of rounds)")
    args = ap.parse_args()
    for s in args.scales:
        rows = []
        data = {d: load_benchmark(BENCH / d, s) for d in SETS}
        frame = _frame(OUT_SIZE[0] // s, OUT_SIZE[1] // s)
        cands = candidates(s)
        for label, group, fn in cands:
            psnr, ssim = {}, {}
            for d in SETS:
                r = evaluate(fn, model_name=label, dataset=BENCH / d, scale=s, images=data[d],
                             with_ssim=d != "BSD100")
                psnr[d], ssim[d] = r.psnr_y, r.ssim_y
            rows.append({"label": label, "group": group, "scale": s, "psnr": psnr,
                         "ssim": ssim})
            print(f"x{s} {label:<24} " + " ".join(f"{d} {psnr[d]:.2f}" for d in SETS),
                  flush=True)
        # every model timed in each of args.rounds rounds, after all the evaluations
        lats = timeit_rounds([lambda fn=fn, frame=frame: fn(frame) for _, _, fn in cands],
                             args.repeat, args.rounds)
        for row, lat in zip(rows, lats, strict=True):
            row["latency_ms"] = lat * 1000
            print(f"x{s} {row['label']:<24} {lat * 1000:.1f} ms", flush=True)
        write_scale(rows, s, args.repeat, args.rounds)


if __name__ == "__main__":
    main()
