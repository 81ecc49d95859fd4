"""int8 networks: post-training static quantisation with onnxruntime.

A model is exported to ONNX (:func:`upres.export.onnx_bytes`) and quantised by onnxruntime's
static quantiser in QDQ form: weights int8 per output channel (symmetric), activations uint8 per
tensor with ranges from calibration, so onnxruntime runs the convolutions with integer kernels
(VNNI / AMX where the CPU has them). What keeps it near-lossless for super-resolution:

- The first convolution stays float32, and the last one too unless int8 keeps the rule: the
  first sees the raw pixels, the last writes the residual that becomes output pixels, where one
  8-bit step of an activation is already a visible fraction of an output level (quantising both
  was measured: tiny-x3 then lost 0.083 dB on the calibration crops instead of 0.040, for about
  10 % more speed; session 23 found where: 8-bit weights of the last convolution cost 0.0006 dB
  and its 8-bit output little, its 8-bit input (the skip sum, signed, about [-0.64, 1.13]) the
  rest, and narrower ranges for that input or channel ranges equalised across the sum brought it
  to 0.051-0.066 dB at best, still over :data:`INT8_RULE_DB`: ``scripts/exp_int8_tail.py``).
  Since session 26 :func:`make_int8` tries the last convolution in int8 first for every model
  (the fastest graph; float32, that convolution was a third of tiny-x4's int8 time on an
  AVX2-capped CPU) and keeps that graph where it loses at most the rule: fast-x2, fast-x3
  and x3 as they were trained (0.045, 0.033, 0.049 dB with the two-sided ranges below),
  tiny-x3, tiny-x4 and fast-x4 after quantisation-aware training with ``qat.tail``
  (:mod:`upres.train.qat`; :func:`int8_tail` reads that from the card's recipe, and such
  weights are tried with channel ranges equalised as well). Only
  ``Conv`` and ``Relu`` nodes are quantised, so the skip additions, the anchor and the pixel
  shuffle stay float32 as well; ReLU fuses into the convolution before it, so each body
  activation uses all 256 levels on ``[0, t]``.
- Activation ranges run from the 0.001th to the 99.999th percentile of each tensor's values
  over the calibration patches (widened to hold 0; :func:`two_sided_ranges`), not the bare
  min/max: one outlier does not stretch the step for every other value. onnxruntime's own
  percentile rule (the percentile of ``|x|``, clipped to the observed extremes), used until
  session 28, left the shorter side of a signed tensor at its single most extreme value.
- Where that still loses more than :data:`INT8_RULE_DB` on the calibration crops,
  :func:`make_int8` tries once more with channel ranges equalised (:func:`equalise_channels`)
  and keeps whichever graph loses less there. The float network's function is unchanged by the
  equalisation; it is not the default because it helped some networks and hurt others in a
  session-15 trial (``x4``'s int8 output error doubled; ``photo-x2`` at full strength went
  from losing 0.058 dB on the calibration crops to gaining 0.010).
- Where both still lose more than the rule, the convolutions that write or read the terms of
  the long skip into the last convolution stay float32 as well (:func:`skip_convs`): in RFDN
  the first block reads the first convolution's raw, signed features, and 8 bits there cost
  the best-x3 candidate 0.13 dB of its 0.199.
- Where even that loses more than the rule, each remaining convolution is measured quantised
  alone, and the most sensitive ones stay float32 too, one more at a time (at most a quarter
  of all convolutions, and at least one stays int8): a model trained by a user gets a graph
  within the rule where one exists at that cost, for one quantisation and one loss measurement
  per remaining convolution, and one more of each per convolution kept, on its first int8 use
  (photo-x2's endpoint: 96 s on one core; cached after). A shipped card carries what the scan
  measured for its weights (``int8_scan``), so that users of the shipped models skip it.
- Calibration patches are HR crops of the 291 training images (never benchmark images), shrunk
  by MATLAB bicubic at the model's scale: :data:`CALIB_FILE`, made by
  ``scripts/make_calibration.py``; any other folder of images can be given instead.

The card of a quantised graph says ``quantized="int8 ..."``; the :class:`~upres.inference.
upscaler.Upscaler` runs it like any ONNX model (tiling, alpha, gray, 16-bit unchanged).
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import logging
import os
import sys
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from upres.errors import UpresError, one_line
from upres.models.descriptor import ModelCard

__all__ = ["CALIB_FILE", "INT8_RULE_DB", "PERCENTILE", "cache_dir", "calibration_inputs",
           "calibration_loss", "equalise_channels", "graph_note", "int8_graph", "int8_note",
           "int8_tail", "load_calibration", "loss_words", "make_calibration", "make_int8",
           "percentile_range", "quantize_int8", "skip_convs", "two_sided_ranges"]

CALIB_FILE = Path(__file__).parent / "assets" / "calib_291.npz"
PERCENTILE = 99.999  # activation range: 100 - this to this percentile over the calibration patches
INT8_RULE_DB = 0.05  # int8 is chosen automatically only within this PSNR-Y loss of fp32
CROP = 96  # side of the HR calibration crops: a multiple of 2, 3 and 4 (and 8)
EQUALISE_ALPHA = 0.5  # equalise_channels moves this power of each channel's range to the next conv


def make_calibration(images: Sequence[np.ndarray], *, count: int = 48, seed: int = 0,
                     side: int = CROP) -> np.ndarray:
    """``count`` seeded random ``side x side`` crops, one per image (images picked without
    repetition while they last), from ``(H, W, 3)`` uint8 RGB images at least ``side`` on each
    side: ``(count, side, side, 3)`` uint8."""
    usable = [im for im in images if min(im.shape[:2]) >= side]
    if not usable:
        raise UpresError(f"calibration needs images at least {side}x{side} pixels; none given")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(usable))
    crops = []
    for i in range(count):
        im = usable[order[i % len(usable)]]
        y = int(rng.integers(0, im.shape[0] - side + 1))
        x = int(rng.integers(0, im.shape[1] - side + 1))
        crops.append(im[y:y + side, x:x + side, :3])
    return np.stack(crops)


def load_calibration(source: str | os.PathLike[str] | None = None) -> np.ndarray:
    """Calibration crops ``(N, 96, 96, 3)`` uint8: the bundled ones from the 291 training images
    (``source=None``) or :func:`make_calibration` over a folder of images."""
    if source is None:
        with np.load(CALIB_FILE) as f:
            return f["crops"]
    from upres.data.datasets import scan_images
    from upres.io import read_rgb8

    folder = Path(source)
    if not folder.is_dir():
        raise UpresError(f"{folder}: calibration needs a folder of images")
    files = scan_images([folder])
    if not files:
        raise UpresError(f"{folder}: no images to calibrate with")
    return make_calibration([read_rgb8(f) for f in files])


def calibration_inputs(crops: np.ndarray, card: ModelCard) -> list[np.ndarray]:
    """Network inputs made from HR crops by the model's convention: each crop shrunk by MATLAB
    bicubic at ``card.scale``, clipped to [0, 1], luma only for ``y`` models, bicubic-enlarged
    again for pre-upsampling models, times ``value_range``: ``(1, C, h, w)`` float32 each."""
    import torch

    from upres.inference.upscaler import rgb_to_ycbcr
    from upres.resize import imresize

    out = []
    s = card.scale
    for crop in crops:
        hr = crop.astype(np.float64) / 255.0
        lr = np.clip(imresize(hr, 1.0 / s), 0.0, 1.0)
        if card.pre_upsample:
            lr = imresize(lr, float(s))
        x = torch.from_numpy(lr.astype(np.float32)).permute(2, 0, 1)[None]
        if card.color == "y":
            x = rgb_to_ycbcr(x)[:, :1]
        out.append(np.ascontiguousarray((x * card.value_range).numpy(), dtype=np.float32))
    return out


class _Reader:
    """onnxruntime's CalibrationDataReader protocol over a list of inputs."""

    def __init__(self, name: str, inputs: list[np.ndarray]) -> None:
        self._name, self._it = name, iter(inputs)

    def get_next(self) -> dict[str, np.ndarray] | None:
        x = next(self._it, None)
        return None if x is None else {self._name: x}


def int8_note(percentile: float = PERCENTILE, crops: int = 48, *,
              equalised: bool = False, tail: bool = False, skip: bool = False,
              more: int = 0, why: str = "", trained: bool = True) -> str:
    """The card's ``quantized`` text for a graph made by :func:`quantize_int8`; ``trained``:
    with ``tail``, whether the weights were trained for an int8 last convolution."""
    kept = ("first convolution float32 (the last int8"
            + (": the weights were trained for it)" if trained else ")")
            if tail else "first and last convolutions float32")
    if skip:
        kept += ", and those writing or reading the long skip into the last"
    if more:
        kept += f", and {more} more" + (f" ({why})" if why else "")
    return (f"int8 (onnxruntime QDQ: per-channel int8 weights, uint8 activations between the "
            f"{100 - percentile:g}th and {percentile:g}th percentiles of {crops} calibration "
            f"crops; {kept}"
            + ("; channel ranges equalised" if equalised else "") + ")")


def graph_note(graph: bytes) -> str:
    """The ``quantized`` text of the card in a graph made by :func:`quantize_int8`."""
    from upres.export import metadata

    return str(json.loads(metadata(graph)["upres"])["quantized"])


_HOMOGENEOUS = ("Relu", "LeakyRelu")  # f(s x) = s f(x) for s > 0


def _chains(proto: object) -> list[tuple[Any, Any, Any]]:
    """The ``(Conv A, activation, Conv B)`` chains :func:`equalise_channels` may rescale."""
    g = proto.graph  # type: ignore[attr-defined]
    inits = {t.name for t in g.initializer}
    uses: dict[str, int] = {}
    for n in g.node:
        for name in n.input:
            uses[name] = uses.get(name, 0) + 1
    for o in g.output:
        uses[o.name] = uses.get(o.name, 0) + 1
    by_input: dict[str, list[Any]] = {}
    for n in g.node:
        for name in n.input[:1]:
            by_input.setdefault(name, []).append(n)

    def plain_conv(n: Any) -> bool:
        group = next((a.i for a in n.attribute if a.name == "group"), 1)
        return (n.op_type == "Conv" and group == 1
                and all(i in inits and uses.get(i) == 1 for i in list(n.input)[1:] if i))

    pairs = []
    for a in g.node:
        if not plain_conv(a) or uses.get(a.output[0]) != 1:
            continue
        act = by_input.get(a.output[0], [None])[0]
        if act is None or act.op_type not in _HOMOGENEOUS or uses.get(act.output[0]) != 1:
            continue
        b = by_input.get(act.output[0], [None])[0]
        if b is None or not plain_conv(b) or b.input[0] != act.output[0]:
            continue
        pairs.append((a, act, b))
    return pairs


def skip_convs(proto: object) -> list[str]:
    """Names of the convolutions around the long skip into the last convolution: where the last
    convolution reads a sum (``Add``), the convolutions that write its terms (through a ReLU or
    leaky ReLU) and every convolution that reads a term. Empty where the last convolution does
    not read a sum.

    Why: the sum is the network's output before the upsampler, and its terms carry the image
    at full precision (in RFDN the first convolution's raw features, read again by the first
    block). Measured on the best-x3 candidate (RFDN 50x4, session 25): with every other
    convolution float32, rounding only the first block's input to 8 bits lost 0.13 dB on the
    calibration crops, the last body convolution's 0.03; keeping these three float32 as well as
    the first and last took the whole graph from 0.199 to 0.038 dB (RFDN 50x4 has 64
    convolutions)."""
    g = proto.graph  # type: ignore[attr-defined]
    convs = [n for n in g.node if n.op_type == "Conv"]
    if not convs:
        return []
    made = {o: n for n in g.node for o in n.output}
    total = made.get(convs[-1].input[0])
    if total is None or total.op_type != "Add":
        return []
    names: list[str] = []
    for term in total.input:
        writer = made.get(term)
        while writer is not None and writer.op_type in _HOMOGENEOUS:
            writer = made.get(writer.input[0])
        if writer is not None and writer.op_type == "Conv":
            names.append(writer.name)
        names += [n.name for n in convs if n.input[0] == term]
    return [n for n in dict.fromkeys(names) if n not in (convs[0].name, convs[-1].name)]


def equalise_channels(proto: object, inputs: list[np.ndarray], *,
                      percentile: float = PERCENTILE, alpha: float = EQUALISE_ALPHA) -> int:
    """Rescale channels between convolutions so that their activation ranges are closer,
    leaving the float network's function unchanged; returns how many pairs were rescaled.

    For each ``Conv A -> Relu|LeakyRelu -> Conv B`` chain (no other reader of A's or the
    activation's output, ``group`` 1, weights and biases as initializers used once), channel
    ``c`` of A's output is divided by ``s_c = (r_c / max r) ** alpha`` and B's input column
    ``c`` multiplied by it, where ``r_c`` is the ``percentile`` of channel ``c``'s activation
    over ``inputs`` (the float graph run on them; ``(1, C, h, w)`` float32 each). A per-tensor
    uint8 activation then spends its 256 levels on channels of more equal size (as in
    data-free quantisation [Nagel et al., ICCV 2019], by activation ranges rather than weight
    ranges). ``proto`` (an ``onnx.ModelProto``) is changed in place. The cost: B's small input
    columns shrink, and B's weights are quantised per output channel, so some error moves into
    them; which way the balance goes depends on the network, hence :func:`make_int8`'s retry."""
    from onnx import numpy_helper

    pairs = _chains(proto)
    if not pairs:
        return 0
    inits = {t.name: t for t in proto.graph.initializer}  # type: ignore[attr-defined]
    sess = _probe(proto, [act.output[0] for _, act, _ in pairs])
    name = sess.get_inputs()[0].name
    seen: list[list[np.ndarray]] = [[] for _ in pairs]
    for x in inputs:  # every second pixel each way keeps the memory to a quarter
        for k, y in enumerate(sess.run(None, {name: x})):
            seen[k].append(np.abs(y[0, :, ::2, ::2]).reshape(y.shape[1], -1))
    for (a, _, b), values in zip(pairs, seen, strict=True):
        r = np.percentile(np.concatenate(values, axis=1), percentile, axis=1)
        s = np.ones_like(r)
        live = r > 0
        if not live.any():
            continue
        s[live] = np.maximum((r[live] / r.max()) ** alpha, 1e-3)
        scaled = [(a.input[1], 1 / s[:, None, None, None]), (b.input[1], s[None, :, None, None])]
        if len(a.input) > 2 and a.input[2]:
            scaled.append((a.input[2], 1 / s))
        for key, factor in scaled:
            w = numpy_helper.to_array(inits[key])
            inits[key].CopyFrom(numpy_helper.from_array((w * factor).astype(w.dtype), key))
    return len(pairs)


def int8_tail(card: ModelCard) -> bool:
    """Whether the weights were fine-tuned with their last convolution rounded to int8
    (recipe key ``qat.tail``, :mod:`upres.train.qat`): :func:`make_int8` then tries that
    convolution int8 with channel ranges equalised as well (every model gets the plain try),
    and the card's note says the weights were trained for it."""
    q = card.config.get("qat") if isinstance(card.config, dict) else None
    return bool(isinstance(q, dict) and q.get("enabled") and q.get("tail"))


def quantize_int8(model: nn.Module, card: ModelCard, *, crops: np.ndarray | None = None,
                  percentile: float = PERCENTILE, equalise: bool = False,
                  tail: bool | None = None, skip: bool = False,
                  keep: Sequence[str] = (), why: str = "", fp32: bytes | None = None,
                  ranges: str = "two-sided",
                  memo: dict[str, tuple[float, float]] | None = None) -> bytes:
    """The serialized int8 (QDQ) ONNX graph of ``model``, calibrated on ``crops``
    (:func:`load_calibration`; default the bundled training-set crops), with channel ranges
    equalised first if ``equalise`` (:func:`equalise_channels`), and the last convolution in
    int8 too if ``tail`` (default :func:`int8_tail` of the card), and the convolutions around
    the long skip (:func:`skip_convs`) float32 if ``skip``, and the convolutions named in
    ``keep`` (ONNX node names) float32 too, ``why`` saying in the card's note why.
    ``ranges``: activation ranges by :func:`two_sided_ranges` (the default) or as onnxruntime's
    calibration left them (``"onnxruntime"``, upres's rule before session 28); ``memo``:
    :func:`two_sided_ranges`' memo, for calls on the same ``fp32`` graph, ``crops``,
    ``percentile`` and ``equalise``. ``fp32``:
    the float32 graph of ``model`` (:func:`upres.export.onnx_bytes`) where already exported.
    Input and output are as :func:`upres.export.onnx_bytes` (float32 ``(N, C, H, W)``); the card
    travels in the metadata with ``quantized`` set."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    from upres.export import describe_io, onnx_bytes

    crops = load_calibration() if crops is None else crops
    proto = onnx.load_from_string(onnx_bytes(model, card) if fp32 is None else fp32)
    convs = [n.name for n in proto.graph.node if n.op_type == "Conv"]
    if len(convs) < 3:
        raise UpresError(f"{card.name}: int8 needs a network with at least 3 convolutions "
                         f"(the first stays float32, the last usually too); it has {len(convs)}")
    tail = int8_tail(card) if tail is None else tail
    skipped = skip_convs(proto) if skip else []
    base = [convs[0]] if tail else [convs[0], convs[-1]]
    more = [n for n in dict.fromkeys(keep) if n not in skipped and n not in base]
    if any(n not in convs for n in more):
        raise UpresError(f"{card.name}: int8: no convolution named "
                         f"{next(n for n in more if n not in convs)!r}")
    excluded = base + skipped + more
    inputs = calibration_inputs(crops, card)
    equalised = bool(equalise and equalise_channels(proto, inputs, percentile=percentile))
    note = int8_note(percentile, len(crops), equalised=equalised, tail=tail,
                     skip=bool(skipped), more=len(more), why=why, trained=int8_tail(card))
    with tempfile.TemporaryDirectory(prefix="upres-int8-") as tmp:
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        src.write_bytes(proto.SerializeToString())
        root = logging.getLogger()
        _LOCK.acquire()
        level = root.level
        try:  # the quantiser prints progress on stdout and advice through logging: keep quiet
            root.setLevel(logging.ERROR)
            with contextlib.redirect_stdout(io.StringIO()):
                quantize_static(
                    str(src), str(dst), _Reader(proto.graph.input[0].name, inputs),
                    quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.Percentile,
                    op_types_to_quantize=["Conv", "Relu"],
                    nodes_to_exclude=excluded,
                    extra_options={"CalibPercentile": percentile})
        except Exception as exc:  # onnxruntime's own error types
            raise UpresError(f"{card.name}: int8 quantisation failed "
                             f"({one_line(exc, 200)})") from None
        finally:
            root.setLevel(level)
            _LOCK.release()
        qproto = onnx.load(str(dst))
    if ranges == "two-sided":
        try:
            two_sided_ranges(qproto, proto, inputs, percentile, memo)
        except Exception as exc:  # onnxruntime's own error types
            raise UpresError(f"{card.name}: int8 calibration failed "
                             f"({one_line(exc, 200)})") from None
    elif ranges != "onnxruntime":
        raise ValueError(f"ranges: 'two-sided' or 'onnxruntime', not {ranges!r}")
    del qproto.metadata_props[:]
    entry = qproto.metadata_props.add()
    entry.key = "upres"
    qcard = card.with_(quantized=note, int8_scan={})  # the graph's own metadata has the scan
    entry.value = json.dumps(asdict(qcard), sort_keys=True)
    qproto.producer_name = "upres"
    describe_io(qproto, qcard)  # the quantiser keeps neither metadata nor doc strings
    return qproto.SerializeToString()


def percentile_range(values: np.ndarray, percentile: float = PERCENTILE) -> tuple[float, float]:
    """``(lo, hi)`` of an activation quantised from calibration ``values`` (any shape, float;
    non-finite values left out): the ``100 - percentile``th and ``percentile``th percentiles,
    widened to hold 0; ``(0, 0)`` when no value is finite."""
    flat = np.asarray(values, dtype=np.float32).ravel()
    flat = flat[np.isfinite(flat)]
    if flat.size == 0:
        return 0.0, 0.0
    lo, hi = np.percentile(flat, [100.0 - percentile, percentile])
    return min(float(lo), 0.0), max(float(hi), 0.0)


def _probe(proto: Any, names: Sequence[str]) -> Any:
    """An onnxruntime session of the float graph ``proto`` whose outputs are its tensors
    ``names`` (graph optimisations off, so every tensor keeps its name and value)."""
    import onnx
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(proto)
    del probe.graph.output[:]
    probe.graph.output.extend(onnx.ValueInfoProto(name=nm) for nm in names)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(probe.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])


def two_sided_ranges(qproto: Any, fproto: Any, inputs: list[np.ndarray],
                     percentile: float = PERCENTILE,
                     memo: dict[str, tuple[float, float]] | None = None) -> int:
    """Set the range of every activation quantised in the QDQ graph ``qproto`` (in place) to
    :func:`percentile_range` of that tensor's values in the float graph ``fproto`` (the one
    ``qproto`` was quantised from) over ``inputs``, and each integer convolution's bias to
    match (:func:`_requantise_biases`). onnxruntime's percentile calibration takes the
    percentile of ``|x|`` and clips it to the observed extremes, so a signed tensor whose
    negative side is the shorter one gets its single most negative value as the bottom of its
    range: the skip sum into tiny-x3's last convolution was [-0.784, 1.195] where its values
    lie in [-0.671, 1.192] but for 0.002 %. A range onnxruntime starts at 0 (a ReLU's output:
    zero point at the type's minimum) stays at 0; tensors the float graph does not make, and
    ranges of zero width, are left as they are. Returns how many ranges changed. ``memo``:
    tensor name -> its :func:`percentile_range`, filled and reused by calls with the same float
    graph, inputs and percentile (:func:`make_int8`'s graphs differ only in what they
    quantise)."""
    from onnx import numpy_helper

    consts = {i.name: i for i in qproto.graph.initializer}
    made = {o for n in fproto.graph.node for o in n.output}
    qs = [n for n in qproto.graph.node if n.op_type == "QuantizeLinear"
          and n.input[0] not in consts and n.input[0] in made
          and len(n.input) == 3 and n.input[1] in consts and n.input[2] in consts
          and numpy_helper.to_array(consts[n.input[1]]).size == 1]
    if not qs:
        return 0
    memo = {} if memo is None else memo
    names = sorted({n.input[0] for n in qs} - set(memo))
    if names:
        sess = _probe(fproto, names)
        feed = sess.get_inputs()[0].name
        seen: dict[str, list[np.ndarray]] = {nm: [] for nm in names}
        for x in inputs:
            for nm, v in zip(names, sess.run(names, {feed: x}), strict=True):
                seen[nm].append(np.asarray(v, dtype=np.float32).ravel())
        for nm in names:
            memo[nm] = percentile_range(np.concatenate(seen.pop(nm)), percentile)
    changed = 0
    for n in qs:
        scale, zero = consts[n.input[1]], consts[n.input[2]]
        z_arr = numpy_helper.to_array(zero)
        lim = np.iinfo(z_arr.dtype)
        z0, s0 = int(z_arr), float(numpy_helper.to_array(scale))
        lo, hi = memo[n.input[0]]
        if z0 == lim.min:
            lo = 0.0
        if hi - lo <= 0:
            continue
        s = np.float32((hi - lo) / (int(lim.max) - int(lim.min)))
        z = int(np.clip(round(int(lim.min) - lo / float(s)), lim.min, lim.max))
        if z == z0 and abs(float(s) - s0) <= 1e-6 * max(s0, 1e-12):
            continue
        scale.CopyFrom(numpy_helper.from_array(np.array(s, dtype=np.float32), scale.name))
        zero.CopyFrom(numpy_helper.from_array(np.array(z, dtype=z_arr.dtype), zero.name))
        changed += 1
    if changed:
        _requantise_biases(qproto)
    return changed


def _requantise_biases(qproto: Any) -> None:
    """Each quantised convolution's int32 bias again at the scale onnxruntime's integer
    convolution adds it at, its input's scale times its weights' (per output channel), after
    :func:`two_sided_ranges` moved input scales: the bias keeps its float value."""
    from onnx import numpy_helper

    consts = {i.name: i for i in qproto.graph.initializer}
    made = {o: n for n in qproto.graph.node for o in n.output}
    for conv in qproto.graph.node:
        if conv.op_type != "Conv" or len(conv.input) < 3:
            continue
        x, w, b = (made.get(i) for i in conv.input[:3])
        if not all(n is not None and n.op_type == "DequantizeLinear" for n in (x, w, b)):
            continue
        if not all(i in consts for i in (*x.input[1:2], *w.input[1:2], *b.input[:2])):
            continue
        sx = numpy_helper.to_array(consts[x.input[1]]).astype(np.float64)
        sw = numpy_helper.to_array(consts[w.input[1]]).astype(np.float64)
        qb = numpy_helper.to_array(consts[b.input[0]]).astype(np.float64)
        sb = numpy_helper.to_array(consts[b.input[1]]).astype(np.float64)
        new = (sx * sw).astype(np.float32)
        if np.array_equal(new, sb.astype(np.float32)):
            continue
        q = np.clip(np.round(qb * sb / new), -2**31, 2**31 - 1).astype(np.int32)
        for name, arr in ((b.input[0], q), (b.input[1], new)):
            consts[name].CopyFrom(numpy_helper.from_array(arr.reshape(
                numpy_helper.to_array(consts[name]).shape), name))


def cache_dir() -> Path:
    """Where upres keeps what it measured or built once per machine: ``$UPRES_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/upres``, else ``~/.cache/upres``."""
    env = os.environ.get("UPRES_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME")
    if not base:
        try:
            base = str(Path.home() / ".cache")
        except RuntimeError:  # no HOME and no passwd entry (containers with arbitrary uids)
            base = tempfile.gettempdir()
    return Path(base) / "upres"


def calibration_loss(model: nn.Module, card: ModelCard, graph: bytes,
                     crops: np.ndarray | None = None, *,
                     reference: list[float] | None = None) -> float:
    """How much PSNR-Y (dB, mean over crops, standard protocol: 8-bit LR by MATLAB bicubic,
    ``scale`` pixels shaved) the int8 ``graph`` loses against ``model`` in float32 on the
    calibration crops, through the full upscale path. Positive = int8 is worse.
    ``reference``: the float32 PSNR-Y of ``model`` per crop, where already measured."""
    from upres.export import OnnxNet

    crops = load_calibration() if crops is None else crops
    ref = _psnrs(model, card, crops) if reference is None else reference
    if len(ref) != len(crops):
        raise ValueError(f"reference has {len(ref)} PSNRs for {len(crops)} crops")
    return float(np.mean(np.subtract(ref, _psnrs(OnnxNet(graph), card, crops))))


def _psnrs(net: Any, card: ModelCard, crops: np.ndarray) -> list[float]:
    """PSNR-Y of ``net`` (a float32 torch network, or an :class:`~upres.export.OnnxNet`) per
    calibration crop, by the standard protocol through the full upscale path."""
    from upres.inference.upscaler import Upscaler
    from upres.metrics import psnr_y
    from upres.resize import imresize

    up = (Upscaler(net, card, device="cpu", precision="fp32", int8_ok=False)
          if isinstance(net, nn.Module) else Upscaler(net, card))
    s = card.scale
    out = []
    for hr in crops:
        lr = np.clip(np.round(imresize(hr.astype(np.float64), 1.0 / s)), 0, 255).astype(np.uint8)
        out.append(psnr_y(up.upscale(lr, tile=0), hr, shave=s))
    return out


def make_int8(model: nn.Module, card: ModelCard, *, crops: np.ndarray | None = None,
              percentile: float = PERCENTILE) -> tuple[bytes, float]:
    """``(int8 graph, calibration_loss)``: graphs from :func:`quantize_int8` tried in order of
    falling speed until one loses at most :data:`INT8_RULE_DB` on the calibration ``crops``:
    first with the last convolution int8 too (the fastest graph: float32, that convolution
    was a third of tiny-x4's int8 time on an AVX2-capped CPU; without training for it, it
    rarely keeps the rule; weights trained with it int8, :func:`int8_tail`, are tried
    equalised as well); then as it is (the last convolution float32); then, where the network
    has chains to equalise, with channel ranges
    equalised; then the same two with the convolutions around the long skip float32
    (:func:`skip_convs`), where it has them; last, on the best of the float-tail graphs so
    far, the other convolutions are each measured quantised alone (the rest float32) and the
    most sensitive ones are kept float32 as well, one more at a time, up to a quarter of all
    convolutions and never all of them. The first graph within the rule is kept, else
    the one that loses least. Only the calibration crops decide, so where several were tried the
    loss returned is the lowest measured on the crops that chose it (slightly optimistic).

    What the scan measured travels in the graph's metadata (:func:`_stamp`) and, for shipped
    weights, in their card (``int8_scan``, ``scripts/stamp_cards.py --int8-scan``): for those
    very weights in the same setting (:func:`_setting`: convention, crops, percentile,
    quantiser, rule), where the tries start the scan from the same graph (equalised or not,
    long skip float32 or not), the order is taken from there instead of measured; and where
    the same int8 kernels (:func:`_kernels`: onnxruntime's version, the CPU's int8 instruction
    sets) chose a graph, that graph is made first and kept if it still keeps the rule (one
    graph instead of every try above: the same graph those tries would end at)."""
    import onnx

    from upres.export import onnx_bytes
    from upres.models.weights import state_sha256

    crops = load_calibration() if crops is None else crops
    fp32 = onnx_bytes(model, card)  # exported once: each quantize_int8 below starts from it
    proto = onnx.load_from_string(fp32)
    ref = _psnrs(model, card, crops)
    memos: dict[bool, dict[str, tuple[float, float]]] = {False: {}, True: {}}  # by equalise
    convs = [n.name for n in proto.graph.node if n.op_type == "Conv"]
    skipped = skip_convs(proto)

    def graph_with(eq: bool, sk: bool, keep: Sequence[str]) -> tuple[bytes, float]:
        g = quantize_int8(model, card, crops=crops, percentile=percentile, equalise=eq,
                          tail=False, skip=sk, keep=keep, why="the most sensitive",
                          fp32=fp32, memo=memos[eq])
        return g, calibration_loss(model, card, g, crops, reference=ref)

    def rest_of(sk: bool) -> list[str]:  # what the sensitivity scan measures
        return [n for n in convs[1:-1] if not (sk and n in skipped)]

    def cap_of(sk: bool) -> int:  # the most convolutions the scan may keep float32
        return min(len(convs) // 4, len(rest_of(sk)) - 1)  # some convolution stays int8

    weights, setting, kernels = state_sha256(model), _setting(card, crops, percentile), _kernels()
    record = _record(card, weights, setting, convs)
    keep = _choice(record, kernels)
    if record and keep and keep <= cap_of(record["skip"]):
        order = _order(record, rest_of(record["skip"]))
        if order:
            graph, loss = graph_with(record["equalise"], record["skip"], order[:keep])
            if loss <= INT8_RULE_DB:  # the graph the steps below chose for these weights
                return _stamp(graph, loss, len(crops), record), loss
    equalise = [False, True] if _chains(proto) else [False]
    skip = bool(skipped)
    tries = [(True, e, False) for e in (equalise if int8_tail(card) else [False])]
    tries += [(False, e, False) for e in equalise]
    tries += [(False, e, True) for e in equalise] if skip else []
    best: tuple[bytes, float] | None = None
    scan: dict[str, Any] | None = None  # what the sensitivity scan measured, where it ran
    base: tuple[float, bool, bool] | None = None  # (loss, equalise, skip): best float-tail try
    for tail, eq, sk in tries:
        try:
            graph = quantize_int8(model, card, crops=crops, percentile=percentile,
                                  equalise=eq, tail=tail, skip=sk, fp32=fp32, memo=memos[eq])
        except UpresError:
            if tail:  # a graph the quantiser refuses with the last convolution int8: go on
                continue  # to the float-tail graphs
            raise
        loss = calibration_loss(model, card, graph, crops, reference=ref)
        if best is None or loss < best[1]:
            best = graph, loss
        if not tail and (base is None or loss < base[0]):
            base = loss, eq, sk
        if loss <= INT8_RULE_DB:
            break
    assert best is not None
    _, eq, sk = base if base is not None else (0.0, False, False)  # None: a tail graph passed
    rest, cap = rest_of(sk), cap_of(sk)
    if best[1] > INT8_RULE_DB and cap >= 1:  # last: the most sensitive ones float32 as well
        order = _order(record, rest, (eq, sk))
        if order is None:
            print(f"upres: {card.name}: int8 still loses {best[1]:.3f} dB on the calibration "
                  f"crops; measuring each of {len(rest)} convolutions' sensitivity (once: the "
                  "graph is cached)", file=sys.stderr)
            alone = {n: graph_with(eq, sk, [m for m in rest if m != n])[1] for n in rest}
            order = sorted(rest, key=lambda n: -alone[n])
        scan = {"weights": weights, "setting": setting, "equalise": eq, "skip": sk,
                "order": order}
        for k in range(1, cap + 1):
            graph, loss = graph_with(eq, sk, order[:k])
            if loss < best[1]:
                best = graph, loss
            if loss <= INT8_RULE_DB:
                scan["choice"] = {"keep": k, "kernels": kernels}
                break
    return _stamp(best[0], best[1], len(crops), scan), best[1]


def _setting(card: ModelCard, crops: np.ndarray, percentile: float) -> str:
    """SHA-256 of everything besides the weights that a sensitivity scan's result depends on
    and upres controls: the card's input convention (as :func:`_weights_key` takes it), whether
    the weights were trained with the last convolution int8, the percentile, the quantiser's
    version, the loss rule, the equalisation's alpha and the calibration crops."""
    import hashlib

    conv = {k: getattr(card, k) for k in ("arch", "scale", "hparams", "color", "value_range",
                                            "pre_upsample", "min_size", "size_multiple")}
    a = np.ascontiguousarray(crops)
    h = hashlib.sha256(json.dumps(
        {"convention": conv, "tail": int8_tail(card), "percentile": percentile,
         "quantiser": _QUANTISER, "rule_db": INT8_RULE_DB, "alpha": EQUALISE_ALPHA,
         "crops": f"{a.shape}|{a.dtype}"}, sort_keys=True, default=str).encode())
    h.update(a.tobytes())
    return h.hexdigest()


def _kernels() -> str:
    """What decides the int8 kernels that measure the calibration losses: onnxruntime's
    version, the machine and its int8-relevant instruction sets (without VNNI, onnxruntime's
    u8s8 kernels round differently, so a graph can pass the loss rule on one CPU and not on
    another)."""
    import platform

    import onnxruntime

    from upres.inference.paths import cpu_info

    sets = [f for f in cpu_info()[1] if f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni",
                                             "amx_int8")]
    return f"onnxruntime {onnxruntime.__version__} | {platform.machine()} {' '.join(sets)}"


def _record(card: ModelCard, weights: str, setting: str,
            convs: Sequence[str]) -> dict[str, Any] | None:
    """The card's ``int8_scan`` where it was measured on these very ``weights`` (their
    :func:`~upres.models.weights.state_sha256`) in this ``setting`` (:func:`_setting`), as a
    new dict of its checked fields (``choice`` only where well formed); else None. A card's
    field is data from a file: nothing of it is used unchecked, and nothing else is kept."""
    scan = card.int8_scan if isinstance(card.int8_scan, dict) else {}
    eq, sk, order = scan.get("equalise"), scan.get("skip"), scan.get("order")
    if (scan.get("weights") != weights or scan.get("setting") != setting
            or not isinstance(eq, bool) or not isinstance(sk, bool)
            or not isinstance(order, list) or not all(isinstance(n, str) for n in order)
            or not set(order) <= set(convs)):
        return None
    out: dict[str, Any] = {"weights": weights, "setting": setting, "equalise": eq, "skip": sk,
                           "order": list(order)}
    c = scan.get("choice")
    if isinstance(c, dict) and isinstance(c.get("kernels"), str) and \
            isinstance(c.get("keep"), int) and not isinstance(c.get("keep"), bool):
        out["choice"] = {"keep": c["keep"], "kernels": c["kernels"]}
    return out


def _choice(record: dict[str, Any] | None, kernels: str) -> int | None:
    """How many of the most sensitive convolutions the graph a checked :func:`_record` chose
    keeps float32 (at least 1), where the same int8 kernels (:func:`_kernels`) chose it; else
    None. Its ``equalise`` and ``skip`` are the record's."""
    c = (record or {}).get("choice")
    if not isinstance(c, dict) or c.get("kernels") != kernels or c.get("keep", 0) < 1:
        return None
    return int(c["keep"])


def _order(record: dict[str, Any] | None, rest: Sequence[str],
           base: tuple[bool, bool] | None = None) -> list[str] | None:
    """The sensitivity order a checked :func:`_record` holds, where it ranks exactly the
    convolutions ``rest`` the scan would measure and, given ``base`` (the ``(equalise,
    skip)`` of the graph the scan starts from), was measured from that same graph; else
    None (measure)."""
    if not record or (base is not None and base != (record["equalise"], record["skip"])):
        return None
    order = record["order"]
    return list(order) if sorted(order) == sorted(rest) else None


def _stamp(graph: bytes, loss: float, crops: int, scan: dict[str, Any] | None = None) -> bytes:
    """``graph`` with its measured loss in the metadata (``upres_int8``: ``loss_db``, the
    ``rule_db`` a graph must meet to be chosen automatically, ``crops`` and the ``sha256`` of
    the graph, :func:`_graph_hash`; and ``scan``, what a sensitivity scan measured, where one
    ran: the card's ``int8_scan``), so that an exported int8 file says what it loses against
    fp32 (the card's ``psnr`` is that of the path its ``default_precision`` names, fp32 for
    most models) and :func:`int8_graph` can trust a cached copy."""
    import onnx

    from upres.export import set_metadata

    proto = onnx.load_from_string(graph)
    entry: dict[str, Any] = {"loss_db": round(loss, 4), "rule_db": INT8_RULE_DB,
                             "crops": crops, "sha256": _graph_hash(proto)}
    if scan:
        entry["scan"] = scan
    set_metadata(proto, {"upres_int8": json.dumps(entry, sort_keys=True)})
    return proto.SerializeToString()


def int8_entry(graph: bytes | object) -> dict[str, Any]:
    """The ``upres_int8`` metadata of an int8 graph (serialized bytes or an ONNX model proto)
    as :func:`_stamp` wrote it (``loss_db``, ``rule_db``, ``crops``, ``sha256``, and ``scan``
    where a sensitivity scan ran); ``{}`` for a graph without one. Raises ``ValueError`` where
    the entry is not a JSON object."""
    from upres.export import metadata

    meta = metadata(graph)
    if "upres_int8" not in meta:
        return {}
    entry = json.loads(meta["upres_int8"])
    if not isinstance(entry, dict):
        raise ValueError("upres_int8 metadata is not a JSON object")
    return entry


def loss_words(loss: float) -> str:
    """``calibration_loss`` in words: ``"loses 0.016 dB"`` / ``"gains 0.002 dB"``."""
    return f"{'loses' if loss >= 0 else 'gains'} {abs(loss):.3f} dB"


@functools.cache
def calibration_sha256() -> str:
    """SHA-256 of the bundled calibration crops (read once per process)."""
    import hashlib

    return hashlib.sha256(CALIB_FILE.read_bytes()).hexdigest()


def _weights_key(model: nn.Module, card: ModelCard, percentile: float) -> str:
    import hashlib

    import onnxruntime

    from upres.models.weights import state_sha256

    h = hashlib.sha256(state_sha256(model).encode())
    conv = {k: getattr(card, k) for k in ("arch", "scale", "hparams", "color", "value_range",
                                            "pre_upsample", "min_size", "size_multiple")}
    if int8_tail(card):  # (only then: the other models' cached graphs keep their names)
        conv["int8_tail"] = True
    h.update(json.dumps(conv, sort_keys=True).encode())
    h.update(f"{percentile}|{onnxruntime.__version__}|{_QUANTISER}|{INT8_RULE_DB}|"
             f"{EQUALISE_ALPHA}".encode())
    h.update(calibration_sha256().encode())
    return h.hexdigest()[:24]


_QUANTISER = 11  # bump when quantize_int8 or make_int8 change what they write
_LOCK = threading.Lock()  # the quantiser redirects the process's stdout and logging level


def _file_stem(name: str) -> str:
    """``name`` (a card's, which a weights file's own metadata sets) as a safe file-name part:
    letters, digits, ``-``, ``_`` and ``.`` kept, anything else ``_``, no leading dot, at most
    64 characters, and a hash of the name where it had to change. Taken as it was, ``../../x``
    wrote the cached graph outside the cache folder and a name with ``/`` or NUL failed to
    cache at all."""
    import hashlib
    import re

    stem = re.sub(r"[^A-Za-z0-9._-]", "_", name)[:64].lstrip(".") or "model"
    if stem != name:  # two names made alike must not share a cached graph (and its card)
        stem += "-" + hashlib.sha256(name.encode("utf-8", "replace")).hexdigest()[:8]
    return stem


def _graph_hash(proto: object) -> str:
    """SHA-256 of a graph's nodes and tensors (not its metadata): a cached graph whose bytes
    changed since it was written is made again rather than run."""
    import hashlib

    return hashlib.sha256(proto.graph.SerializeToString()).hexdigest()  # type: ignore[attr-defined]


def int8_graph(model: nn.Module, card: ModelCard, *, percentile: float = PERCENTILE,
               cache: bool = True) -> tuple[bytes, float]:
    """``(int8 graph, calibration_loss)`` for ``model`` with the bundled calibration crops,
    from the cache (:func:`cache_dir` ``/int8``, keyed by the weights, the convention, the
    quantiser and onnxruntime's version) or made and cached (seconds for the shipped models).
    A cache that cannot be written is skipped."""
    import onnx

    name = f"{_file_stem(card.name)}-{_weights_key(model, card, percentile)}.onnx"
    path = cache_dir() / "int8" / name
    if cache:
        try:
            data = path.read_bytes()
            proto = onnx.load_from_string(data)
            entry = int8_entry(proto)
            if entry.get("sha256") == _graph_hash(proto):  # written whole, by this code
                return data, float(entry["loss_db"])
        except Exception:  # missing, unreadable or damaged: made again
            pass
    graph, loss = make_int8(model, card, percentile=percentile)  # stamped: loss and hash
    if cache:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.part")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_bytes(graph)
            os.replace(tmp, path)
        except OSError:
            tmp.unlink(missing_ok=True)
    return graph, loss
