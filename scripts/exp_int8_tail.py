"""Where a shipped UpNet loses PSNR when its last convolution runs int8 too (issue 25, session 23).

``upres.quantize`` keeps the first and last convolutions float32. The last one is a large share
of a small network's time (tiny-x3: about a quarter of its int8 time on an AVX2-capped CPU), so
this script measures what quantising it costs and where the cost comes from. Each line is the
PSNR-Y change against the float32 network (negative = int8 worse), on the calibration crops
(what ``make_int8`` judges by) and on Set5 / Set14 / BSD100::

    .venv/bin/python scripts/exp_int8_tail.py tiny-x3

Variants: ``kept`` (upres's graph: first and last float32), ``tail`` (the last convolution int8
too), ``tail-float-out`` (its output left float: the Q/DQ pair after it removed), ``tail-range
LO:HI`` (its input's range set by hand instead of calibrated), ``tail-eq A`` (the skip sum's
channel ranges equalised in the float network, exponent ``A``, before quantising), and
``weights`` (only the last convolution's weights rounded to int8, per output channel, in the
float network). Slow-ish: a few seconds per variant and set for the tiny models.
Every graph keeps onnxruntime's own activation ranges (``ranges="onnxruntime"``), the rule
this study measured; ``upres.quantize`` has since set two-sided ranges by default.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import numpy as np
import onnx
import torch

ROOT = Path(__file__).resolve().parents[1]
RANGES = "onnxruntime"  # the calibration this study varied (tail-range sets it by hand)


def main() -> None:
    import onnxruntime
    import onnxruntime.quantization as oq

    import upres.quantize as Q
    from upres.evaluate import load_benchmark
    from upres.export import OnnxNet, onnx_bytes
    from upres.inference.upscaler import Upscaler
    from upres.metrics import psnr_y
    from upres.models import zoo
    from upres.models.weights import load_model

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model", help="a shipped UpNet model, e.g. tiny-x3")
    ap.add_argument("--ranges", nargs="*", default=["-0.64:1.13", "-0.5:1.0", "-0.4:0.9"])
    ap.add_argument("--bench", type=Path, default=ROOT.parent / "shared" / "data" / "benchmark")
    a = ap.parse_args()
    onnxruntime.set_default_logger_severity(3)  # not the unused-initializer notes of the surgery

    model, card = load_model(zoo.resolve(a.model))
    model.eval()
    s = card.scale
    sets = {d: [(hr, lr) for _, hr, lr in load_benchmark(a.bench / d, s)]
            for d in ("Set5", "Set14", "BSD100")}
    ref = Upscaler(model, card, device="cpu", precision="fp32", int8_ok=False)
    ref_psnr = {d: np.mean([psnr_y(ref.upscale(lr, tile=0), hr, shave=s) for hr, lr in v])
                for d, v in sets.items()}

    keep = {"tail": False, "override": None}
    plain = oq.quantize_static

    def quantize_static(*args, **kw):  # upres.quantize's call, with the variant's changes
        if keep["tail"]:
            kw["nodes_to_exclude"] = kw["nodes_to_exclude"][:1]
        if keep["override"]:
            kw["extra_options"] = {**kw["extra_options"],
                                   "TensorQuantOverrides": keep["override"]}
        return plain(*args, **kw)

    oq.quantize_static = quantize_static

    def report(label: str, graph: bytes) -> None:
        calib = -Q.calibration_loss(model, card, graph)
        q = Upscaler(OnnxNet(graph), card)
        cells = [np.mean([psnr_y(q.upscale(lr, tile=0), hr, shave=s) for hr, lr in v])
                 - ref_psnr[d] for d, v in sets.items()]
        print(f"{label:24s} calibration {calib:+.4f}  Set5 / Set14 / BSD100 "
              + " / ".join(f"{c:+.4f}" for c in cells), flush=True)

    report("kept", Q.quantize_int8(model, card, tail=False, ranges=RANGES))
    keep["tail"] = True
    report("tail", Q.quantize_int8(model, card, ranges=RANGES))

    g = onnx.load_from_string(Q.quantize_int8(model, card, ranges=RANGES))
    out = [n for n in g.graph.node if n.op_type == "Conv"][-1].output[0]
    qn = next(n for n in g.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == out)
    dq = next(n for n in g.graph.node
              if n.op_type == "DequantizeLinear" and n.input[0] == qn.output[0])
    for n in g.graph.node:
        n.input[:] = [out if x == dq.output[0] else x for x in n.input]
    g.graph.node.remove(qn)
    g.graph.node.remove(dq)
    report("tail-float-out", g.SerializeToString())

    float_graph = onnx.load_from_string(onnx_bytes(model, card))
    sum_name = [n for n in float_graph.graph.node if n.op_type == "Conv"][-1].input[0]
    for r in a.ranges:
        lo, hi = (np.float32(v) for v in r.split(":"))
        keep["override"] = {sum_name: [{"rmin": lo, "rmax": hi}]}
        report(f"tail-range {r}", Q.quantize_int8(model, card, ranges=RANGES))
    keep["override"] = None

    # the skip sum's channel ranges (99.999th percentile of |x| over the calibration crops)
    seen: list[torch.Tensor] = []
    hook = model.tail.register_forward_hook(lambda m, i, o: seen.append(i[0].detach()))
    with torch.no_grad():
        for x in Q.calibration_inputs(Q.load_calibration(), card):
            model(torch.from_numpy(x))
    hook.remove()
    acts = torch.cat([x.transpose(0, 1).reshape(x.shape[1], -1) for x in seen], 1)[:, ::7]
    span = torch.quantile(acts.abs(), 0.99999, dim=1)
    for alpha in (0.5, 1.0):
        k = ((span.median() / span) ** alpha).clamp(0.25, 4.0)
        m2 = copy.deepcopy(model)
        convs = [m for m in m2.body if isinstance(m, torch.nn.Conv2d)]
        with torch.no_grad():  # the same function: both branches of the sum scaled by k
            m2.head.weight.mul_(k[:, None, None, None])
            m2.head.bias.mul_(k)
            convs[0].weight.div_(k[None, :, None, None])
            convs[-1].weight.mul_(k[:, None, None, None])
            convs[-1].bias.mul_(k)
            m2.tail.weight.div_(k[None, :, None, None])
        report(f"tail-eq {alpha}", Q.quantize_int8(m2, card, ranges=RANGES))

    m3 = copy.deepcopy(model)
    with torch.no_grad():
        w = m3.tail.weight
        step = w.abs().amax(dim=(1, 2, 3), keepdim=True) / 127
        w.copy_(torch.round(w / step) * step)
    report("weights", onnx_bytes(m3, card))


if __name__ == "__main__":
    sys.exit(main())
