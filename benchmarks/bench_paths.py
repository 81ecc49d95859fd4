"""Every path on this machine (issue 25, items 1, 2 and 6): the convolution peak of each path,
and for every shipped model its latency, share of that peak and PSNR-Y on Set5 / Set14 /
BSD100 in fp32 (PyTorch, upres's default), bf16 (PyTorch autocast) and int8
(:mod:`upres.quantize`'s graph on onnxruntime, and on OpenVINO where installed: ``int8-ov``),
all in one run.

Peaks: a 3x3 convolution, 64 -> 64 channels (an UpNet body layer), 8 layers in a row, on
feature maps from 48x48 to 360x640; fp32 and bf16 with ``torch.conv2d`` (channels-last), int8
with onnxruntime (and OpenVINO) on the same 8 layers quantised as upres quantises (QDQ,
per-channel weights, ReLU between layers, fused). Latency: ``Upscaler.upscale`` of one 1280x720
output (the full path: conversion, network, rounding), the fastest of ``--repeat`` runs (more
for fast paths: at least 1 s of them); photo
models are timed as their ``x{s}`` (the same network). PSNR: ``upres.evaluate`` by the
standard protocol; photo models at clean-up strength 1 (their own weights; strength 0 is
``x{s}``); how far each path's Set5 outputs are from fp32's (PSNR-Y between the two outputs:
the higher, the closer). Verdicts:
each int8 path loses at most 0.05 dB against fp32 on each of the three sets, and is at least
1.6x faster than fp32.

    .venv/bin/python benchmarks/bench_paths.py [--repeat 5] [--models x4 fast-x4]
    .venv/bin/python benchmarks/bench_paths.py --emulate-avx2   # its own section

``--emulate-avx2`` runs the same measurements with oneDNN capped at AVX2
(``ONEDNN_MAX_CPU_ISA=AVX2``, and PyTorch's own kernels by ``ATEN_CPU_CAPABILITY=avx2``, set
before torch loads), the instruction set of the CI machines
(AVX2-only AMD EPYC) on a machine that has more: PyTorch's convolutions and OpenVINO's int8
kernels then use AVX2 code (no AVX-512, no VNNI: int8 products through ``vpmaddubsw``, as on
those CPUs), so the int8 speed-up and any int8 rounding that AVX2 kernels change are measured
here. bf16 (emulated without native support) and onnxruntime's int8 (its kernels are picked
from the CPU's own flags, which the cap does not reach) are left out of that section.
OpenVINO's convolutions run on its oneDNN, which the cap reaches; kernels of its own outside
oneDNN may still pick AVX-512. An emulation, not the CI machine: its clock, caches and cores
are this one's.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import upres
from upres.bench import _frame
from upres.evaluate import evaluate
from upres.metrics import psnr_y
from upres.models import zoo
from upres.ovnet import available as _ov_available
from upres.quantize import loss_words

from _report import update_section

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT.parent / "shared" / "data" / "benchmark"
SETS = ("Set5", "Set14", "BSD100")
PATHS = ("fp32", "bf16", "int8") + (("int8-ov",) if _ov_available() else ())
# --emulate-avx2 runs again with both caps set (main); a cap set by hand without the flag is
# refused there, so capped figures never land in the native section
EMULATED = ("--emulate-avx2" in sys.argv and os.environ.get("ONEDNN_MAX_CPU_ISA") == "AVX2"
            and os.environ.get("ATEN_CPU_CAPABILITY") == "avx2")
if EMULATED:  # the paths the cap reaches (see the docstring)
    PATHS = ("fp32",) + (("int8-ov",) if _ov_available() else ())
# path -> (precision, int8 runtime)
RUN = {"fp32": ("fp32", None), "bf16": ("bf16", None), "int8": ("int8", "onnxruntime"),
       "int8-ov": ("int8", "openvino")}
SIZES = ((48, 48), (96, 96), (128, 128), (180, 320), (360, 640))
OUT = (1280, 720)


def isa() -> str:
    """The vector and matrix instruction sets that matter for convolutions (those the
    precision cache keys on)."""
    from upres.inference.paths import cpu_info

    return ", ".join(cpu_info()[1]) or "none of AVX2/AVX-512/AMX"


def best_of(fn, repeat: int, min_s: float = 1.0, cap: int = 200) -> float:
    """The fastest of at least ``repeat`` timed calls, and more until ``min_s`` seconds of
    them (at most ``cap``), after two untimed ones (seconds): fast paths get many samples,
    so a moment of noise on the shared host does not set their figure."""
    for _ in range(2):
        fn()
    best, spent, n = float("inf"), 0.0, 0
    while n < repeat or (spent < min_s and n < cap):
        t = time.perf_counter()
        fn()
        dt = time.perf_counter() - t
        best, spent, n = min(best, dt), spent + dt, n + 1
    return best


def torch_peak(dtype: torch.dtype, repeat: int) -> tuple[float, tuple[int, int]]:
    """Best GMAC/s of 8 chained 64->64 3x3 ``torch.conv2d`` (channels-last) over SIZES."""
    best = (0.0, SIZES[0])
    w = torch.randn(64, 64, 3, 3).to(dtype).contiguous(memory_format=torch.channels_last)
    for h, wd in SIZES:
        x = torch.randn(1, 64, h, wd).to(dtype).contiguous(memory_format=torch.channels_last)
        reps = max(1, 360 * 640 // (h * wd))

        def chain(x=x, reps=reps):
            for _ in range(reps):
                y = x
                for _ in range(8):
                    y = torch.conv2d(y, w, padding=1)

        with torch.inference_mode():
            t = best_of(chain, repeat) / 8
        best = max(best, (64 * 64 * 9 * h * wd * reps / t / 1e9, (h, wd)))
    return best


def int8_peaks(repeat: int) -> dict[str, tuple[float, tuple[int, int]]]:
    """Best GMAC/s of 8 chained 64->64 3x3 convolutions + ReLU, quantised by onnxruntime as
    upres quantises (QDQ, per-channel int8 weights, uint8 activations), over SIZES, run by
    onnxruntime (``int8``) and OpenVINO (``int8-ov``, where installed)."""
    import contextlib

    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    torch.manual_seed(0)
    layers = []
    for _ in range(8):
        layers += [torch.nn.Conv2d(64, 64, 3, padding=1), torch.nn.ReLU()]
    net = torch.nn.Sequential(*layers).eval()
    calib = [{"x": torch.rand(1, 64, 32, 32).numpy()} for _ in range(4)]

    class Reader:
        def __init__(self):
            self.it = iter(calib)

        def get_next(self):
            return next(self.it, None)

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "f.onnx", Path(tmp) / "q.onnx"
        torch.onnx.export(net, (torch.rand(1, 64, 32, 32),), str(src), dynamo=False,
                          input_names=["x"], dynamic_axes={"x": {2: "h", 3: "w"}})
        with contextlib.redirect_stdout(io.StringIO()):
            quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ,
                            per_channel=True, activation_type=QuantType.QUInt8,
                            weight_type=QuantType.QInt8,
                            calibrate_method=CalibrationMethod.Percentile,
                            op_types_to_quantize=["Conv", "Relu"])
        graph = dst.read_bytes()
    sess = ort.InferenceSession(graph, providers=["CPUExecutionProvider"])
    runners = {"int8": lambda x: sess.run(None, {"x": x})}
    if "int8-ov" in PATHS:
        from upres.ovnet import OvNet

        ovn = OvNet(graph)
        runners["int8-ov"] = lambda x: ovn(torch.from_numpy(x))
    peaks = {}
    for path, run in runners.items():
        best = (0.0, SIZES[0])
        for h, wd in SIZES:
            x = np.random.rand(1, 64, h, wd).astype(np.float32)
            reps = max(1, 360 * 640 // (h * wd))

            def chain(x=x, reps=reps, run=run):
                for _ in range(reps):
                    run(x)

            t = best_of(chain, repeat) / 8
            best = max(best, (64 * 64 * 9 * h * wd * reps / t / 1e9, (h, wd)))
        peaks[path] = best
    return peaks


def load(name: str, path: str):
    """The shipped model ``name`` on ``path``; photo models at strength 1 (fixed weights)."""
    card = next(c for c in zoo.shipped() if c.name == name)
    kw = {"denoise": 1.0} if card.denoise_base else {}
    precision, runtime = RUN[path]
    up = upres.load(name, device="cpu", precision=precision, int8_runtime=runtime, **kw)
    if runtime == "openvino" and hasattr(up.model, "compile_at"):
        up.model.compile_at = 1  # every image on OpenVINO (it leaves one-off sizes to
        # onnxruntime by default)
    return up


def took(up, path: str) -> bool:
    """Whether ``up`` runs ``path`` (a model may refuse bf16 or int8)."""
    precision, runtime = RUN[path]
    return up.precision == precision and (runtime is None or up.int8_runtime == runtime)


def main() -> None:
    if "--emulate-avx2" not in sys.argv and (os.environ.get("ONEDNN_MAX_CPU_ISA")
                                              or os.environ.get("ATEN_CPU_CAPABILITY")):
        sys.exit("bench_paths: ONEDNN_MAX_CPU_ISA or ATEN_CPU_CAPABILITY is set; the native "
                 "section runs uncapped (use --emulate-avx2 for the AVX2 one)")
    if "--emulate-avx2" in sys.argv and not EMULATED:
        # the cap must be in the environment before torch and OpenVINO load oneDNN: run again
        os.execve(sys.executable, [sys.executable, *sys.argv],
                  {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"})
    # no abbreviations: "--emulate" would run uncapped and replace the native section
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--models", nargs="+", help="shipped models (default: all)")
    ap.add_argument("--emulate-avx2", action="store_true",
                    help="cap oneDNN at AVX2 (the CI machines' instruction set); its own "
                         "section")
    args = ap.parse_args()
    cards = [c for c in zoo.shipped() if not args.models or c.name in args.models]
    t0 = time.time()
    peaks = {"fp32": torch_peak(torch.float32, args.repeat)}
    if "bf16" in PATHS:
        peaks["bf16"] = torch_peak(torch.bfloat16, args.repeat)
    peaks.update({p: v for p, v in int8_peaks(args.repeat).items() if p in PATHS})
    for p, (v, hw) in peaks.items():
        print(f"peak {p}: {v:.1f} GMAC/s at {hw[0]}x{hw[1]}", flush=True)
    # Latency first, on a quiet machine, then the (load-independent) PSNR columns.
    lat: dict[tuple[str, str], float] = {}
    loss: dict[tuple[str, str], float | None] = {}
    for card in cards:
        if card.denoise_base:
            continue  # the same network as x{s}
        lr = _frame(OUT[0] // card.scale, OUT[1] // card.scale)
        for p in PATHS:
            up = load(card.name, p)
            if not took(up, p):
                continue
            lat[card.name, p] = best_of(lambda up=up, lr=lr: up.upscale(lr, tile=0),
                                        args.repeat)
            print(f"{card.name} {p}: {lat[card.name, p] * 1e3:.1f} ms", flush=True)
    psnr: dict[tuple[str, str, str], float] = {}
    fidelity: dict[tuple[str, str], float] = {}  # PSNR-Y of the path's Set5 output vs fp32's
    for card in cards:
        ref: dict[str, np.ndarray] | None = None  # fp32's Set5 outputs by image name
        for p in PATHS:
            up = load(card.name, p)
            if not took(up, p):
                continue
            loss[card.name, p] = getattr(up, "int8_loss", None)
            outs: dict[str, np.ndarray] = {}
            for ds in SETS:
                r = evaluate(lambda im, up=up, **_: up.upscale(im), model_name=card.name,
                             dataset=BENCH / ds, scale=card.scale, with_ssim=False,
                             on_output=outs.__setitem__ if ds == "Set5" else None)
                psnr[card.name, p, ds] = r.psnr_y
            if p == "fp32":
                ref = outs
            elif ref is not None:
                fidelity[card.name, p] = float(np.mean(
                    [psnr_y(o, ref[k], shave=card.scale) for k, o in outs.items()]))
            print(card.name, p, " / ".join(f"{psnr[card.name, p, d]:.3f}" for d in SETS),
                  flush=True)
    rows = ["| model | path | ms (1280x720 out) | vs fp32 | GMAC/s | share of the path's peak "
            "| Set5 / Set14 / BSD100 | vs fp32 (dB) |", "|---|---|---|---|---|---|---|---|"]
    verdicts = []
    for card in cards:
        timed = f"x{card.scale}" if card.denoise_base else card.name
        for p in PATHS:
            if (card.name, p, "Set5") not in psnr:
                rows.append(f"| {card.name} | {p} | not available | | | | | |")
                continue
            t = lat.get((timed, p))
            t32 = lat.get((timed, "fp32"))
            if t is None or t32 is None:
                ms = speed = rate = share = "-"
            else:
                ms, speed = f"{t * 1e3:.0f}", f"{t32 / t:.2f}x"
                rate = f"{card.gmacs / t:.1f}" if card.gmacs else "-"
                share = f"{100 * card.gmacs / t / peaks[p][0]:.0f} %" if card.gmacs else "-"
            vals = [psnr[card.name, p, d] for d in SETS]
            diffs = [psnr[card.name, p, d] - psnr[card.name, "fp32", d] for d in SETS]
            label = card.name + (" (strength 1)" if card.denoise_base else "")
            rows.append(f"| {label} | {p} | {ms} | {speed} | {rate} | {share} | "
                        + " / ".join(f"{v:.3f}" for v in vals) + " | "
                        + ("-" if p == "fp32" else " / ".join(f"{d:+.3f}" for d in diffs))
                        + " |")
            if p.startswith("int8"):
                worst = -min(diffs)
                fast = None if t is None or t32 is None else t32 / t
                verdicts.append(
                    f"{label}: {p} changes PSNR-Y by {min(diffs):+.3f} to {max(diffs):+.3f} dB "
                    f"(loss at most 0.05: {'met' if worst <= 0.05 else 'NOT met'})"
                    + ("" if fast is None else
                       f", {fast:.2f}x fp32's speed ({'met' if fast >= 1.6 else 'NOT met'}, "
                       "target 1.6x)")
                    + ("" if loss.get((card.name, p)) is None else
                       f"; on the calibration crops it {loss_words(loss[card.name, p])}")
                    + ("" if (card.name, p) not in fidelity else
                       f"; Set5 output {fidelity[card.name, p]:.1f} dB PSNR-Y from fp32's"
                       + ("" if (card.name, "bf16") not in fidelity else
                          f" (bf16's {fidelity[card.name, 'bf16']:.1f} dB)")))
    emulated = ("Emulated AVX2-only CPU: oneDNN capped at AVX2 (`ONEDNN_MAX_CPU_ISA=AVX2`) on "
                f"a CPU with {isa()}, so PyTorch fp32 and OpenVINO int8 (int8-ov) run AVX2 "
                "kernels (int8 without VNNI; PyTorch's other kernels capped by "
                "`ATEN_CPU_CAPABILITY=avx2`; OpenVINO's kernels outside oneDNN may not be), "
                "as on the CI machines; onnxruntime int8 and bf16 "
                "are left out (the cap does not reach onnxruntime's kernels; AVX2 has no "
                "bf16). Not the CI machine itself: clock, caches and cores are this one's. "
                if EMULATED else "")
    body = (emulated + f"Instruction sets: {isa()}; torch threads {torch.get_num_threads()}. "
            "Peaks (8 "
            "chained 64->64 3x3 convolutions, best over feature maps 48x48 to 360x640): "
            + ", ".join(f"{p} {v:.1f} GMAC/s (at {hw[0]}x{hw[1]})"
                        for p, (v, hw) in peaks.items())
            + f". Latency: the full `Upscaler.upscale` path for one 1280x720 output, fastest "
            f"of at least {args.repeat} runs and at least 1 s of them; photo models run the "
            "same network as x{s}. PSNR-Y by the "
            "standard protocol; photo models at clean-up strength 1. int8: onnxruntime "
            "(int8-ov: the same graph on OpenVINO), `upres.quantize` (calibrated on 48 "
            "crops of the training images; a graph that "
            "loses more than 0.05 dB on them is made again with channel ranges equalised, "
            "and kept if it loses less). "
            f"One run, {(time.time() - t0) / 60:.1f} min.\n\n" + "\n".join(rows)
            + "\n\nVerdicts (issue 25 item 1):\n\n" + "\n".join(f"- {v}" for v in verdicts))
    print(body)
    if EMULATED:
        update_section("paths-avx2", "Paths on an AVX2-only CPU (emulated): fp32 and int8",
                       body)
    else:
        update_section("paths", "Paths per machine: peak, latency and PSNR in fp32, bf16 and "
                       "int8", body)


if __name__ == "__main__":
    main()
