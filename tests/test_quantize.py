"""int8 through onnxruntime (upres.quantize) and the automatic choice of path: near-lossless on
the benchmarks, the same image handling as fp32, and a measured choice that is cached."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import upres
from upres import ovnet
from upres.cli import main
from upres.errors import UpresError
from upres.evaluate import evaluate
from upres.formats.image import read_image
from upres.inference import paths
from upres.inference.upscaler import FORMAT_MARGIN, choose_precision
from upres.models import zoo
from upres.quantize import CALIB_FILE, INT8_RULE_DB, calibration_inputs, load_calibration

from conftest import BENCH, DATA

NETWORKS = [c.name for c in zoo.shipped()]


def _upnet(seed: int, depth: int):
    """A small random UpNet x2 (8 channels) with a non-zero last convolution (it starts at
    zero: nothing to quantise), and its card."""
    from upres.models.archs.upnet import UpNet
    from upres.models.descriptor import ModelCard

    torch.manual_seed(seed)
    net = UpNet(scale=2, channels=8, depth=depth).eval()
    with torch.no_grad():
        net.tail.weight.normal_(0, 0.05)
    return net, ModelCard(name="t", arch="upnet", scale=2, hparams=net.hparams,
                          params=sum(p.numel() for p in net.parameters()))


def _set5(up, scale: int, **kw) -> float:
    return evaluate(lambda im, **_: up.upscale(im, **kw), model_name="m",
                    dataset=BENCH / "Set5", scale=scale, with_ssim=False).psnr_y


@pytest.mark.parametrize("name", NETWORKS)
def test_int8_set5_within_005_db_of_fp32(name):
    """Every shipped network (photo models at full clean-up strength, a fixed weight set):
    int8 PSNR-Y on Set5 within 0.05 dB of the same weights in fp32."""
    kw = {"denoise": 1.0} if zoo.photo_for(2) and name.startswith("photo-") else {}
    fp32 = upres.load(name, device="cpu", precision="fp32", **kw)
    int8 = upres.load(name, precision="int8", **kw)
    assert int8.precision == "int8" and int8.backend == "onnxruntime"
    assert int8.card.quantized.startswith("int8")
    a, b = _set5(fp32, fp32.scale), _set5(int8, int8.scale)
    assert a - b <= INT8_RULE_DB, f"{name}: fp32 {a:.3f} dB, int8 {b:.3f} dB"
    assert int8.int8_loss <= INT8_RULE_DB  # and on the calibration crops
    if name == "best-x3":  # RFDN: 8 bits on the first block's input cost 0.13 dB (skip_convs)
        assert "long skip" in int8.card.quantized
    if name == "photo-x2":  # at full strength it keeps the rule only with the long skip and
        # its most sensitive convolution float32 (plain, its endpoint of session 23 lost 0.116 dB
        # on the calibration crops and 0.149 on Set5; with the skip rule alone 0.062)
        assert "long skip" in int8.card.quantized and "most sensitive" in int8.card.quantized


def test_recorded_int8_scans_of_shipped_models_are_current():
    """A shipped card's ``int8_scan`` (``scripts/stamp_cards.py --int8-scan``) is used only for
    the weights and setting it was measured with: one gone stale (new weights, a bumped
    ``_QUANTISER``, new calibration crops, another loss rule) would silently cost its scan
    again on every first int8 use. Its order names the network's own convolutions, and on a
    CPU with the int8 kernels that chose its graph, that choice is taken. photo-x2 and
    best-x2 (their own weights; photo-x2 at strength 1) need the scan and carry it."""
    import onnx

    from upres import quantize
    from upres.export import onnx_bytes
    from upres.models.weights import state_sha256

    carried = []
    for card in zoo.shipped():
        if not card.int8_scan:
            continue
        carried.append(card.name)
        kw = {"denoise": 1.0} if card.denoise_base else {}
        up = upres.load(card.name, device="cpu", precision="fp32", **kw)
        net = up.int8_source()
        weights = state_sha256(net)
        setting = quantize._setting(up.card, load_calibration(), quantize.PERCENTILE)
        proto = onnx.load_from_string(onnx_bytes(net, up.card))
        convs = [n.name for n in proto.graph.node if n.op_type == "Conv"]
        rec = quantize._record(up.card, weights, setting, convs)
        assert rec is not None, card.name
        skipped = quantize.skip_convs(proto) if rec["skip"] else []
        rest = [n for n in convs[1:-1] if n not in skipped]
        assert quantize._order(rec, rest, (rec["equalise"], rec["skip"])) is not None
        if rec["choice"]["kernels"] == quantize._kernels():
            assert quantize._choice(rec, quantize._kernels()) == rec["choice"]["keep"]
    assert {"photo-x2", "best-x2"} <= set(carried)


def test_activation_ranges_are_two_sided_percentiles_and_biases_follow():
    """Each quantised activation spans its values' 0.001th to 99.999th percentiles (0 kept in
    the range), not onnxruntime's |x| percentile clipped to the extremes; every int8
    convolution's int32 bias is at its input's scale times its weights'."""
    import onnx
    from onnx import numpy_helper

    from upres.quantize import PERCENTILE, quantize_int8

    net, card = _upnet(3, depth=2)
    crops = load_calibration()[:8]
    inputs = calibration_inputs(crops, card)
    seen = []
    hook = net.tail.register_forward_hook(lambda m, i, o: seen.append(i[0].numpy().ravel()))
    with torch.no_grad():
        for x in inputs:
            net(torch.from_numpy(x))
    hook.remove()
    vals = np.concatenate(seen)  # the skip sum into the last convolution: signed
    lo, hi = np.percentile(vals, [100 - PERCENTILE, PERCENTILE])
    assert lo < 0 < hi and vals.min() < lo  # an outlier below the percentile
    g = onnx.load_from_string(quantize_int8(net, card, crops=crops, tail=True)).graph
    consts = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    made = {o: n for n in g.node for o in n.output}
    tail = [n for n in g.node if n.op_type == "Conv"][-1]
    q = made[made[tail.input[0]].input[0]]
    assert q.op_type == "QuantizeLinear"
    step, zero = float(consts[q.input[1]]), int(consts[q.input[2]])
    assert abs(-zero * step - lo) <= step and abs((255 - zero) * step - hi) <= step
    assert vals.min() < lo - 2 * step  # onnxruntime's rule would have reached down to it
    biases = {n: m.bias.detach().numpy() for n, m in net.named_modules()
              if isinstance(m, torch.nn.Conv2d)}
    checked = 0
    for conv in (n for n in g.node if n.op_type == "Conv" and len(n.input) == 3):
        x, w, b = (made.get(i) for i in conv.input)
        if b is None or b.op_type != "DequantizeLinear" or x.op_type != "DequantizeLinear":
            continue
        want = float(consts[x.input[1]]) * consts[w.input[1]].astype(np.float64)
        np.testing.assert_allclose(consts[b.input[1]], want, rtol=1e-6)
        value = consts[b.input[0]] * consts[b.input[1]].astype(np.float64)  # the float bias
        module = conv.name.strip("/").split("/")[-2]  # "/body/body.0/Conv" -> "body.0"
        np.testing.assert_allclose(value, biases[module], atol=float(want.max()))
        checked += 1
    assert checked >= 2


def test_range_memo_gives_the_same_graphs_without_probing_again(monkeypatch):
    """make_int8's graphs share one float graph: the percentile ranges measured for one are
    reused by the next (the same bytes as measuring again), and nothing is probed twice."""
    from upres import quantize

    net, card = _upnet(4, depth=3)
    crops = load_calibration()[:6]
    plain = [quantize.quantize_int8(net, card, crops=crops, tail=t) for t in (False, True)]
    probes = []
    real = quantize._probe
    monkeypatch.setattr(quantize, "_probe", lambda p, names: probes.append(names) or real(p, names))
    memo: dict = {}
    shared = [quantize.quantize_int8(net, card, crops=crops, tail=t, memo=memo)
              for t in (False, True)]
    assert shared == plain
    # the second graph probes only what the first did not quantise: the tail's input and output
    assert len(probes) == 2 and len(probes[1]) == 2 and not set(probes[0]) & set(probes[1])
    assert set(memo) == set(probes[0]) | set(probes[1])


def test_equalising_channels_keeps_the_float_function_and_evens_the_ranges():
    """equalise_channels rescales Conv -> ReLU -> Conv chains only: the float graph computes the
    same output, and each rescaled activation's channels are closer in range."""
    import onnx
    import onnxruntime as ort
    import torch

    from upres.export import onnx_bytes
    from upres.quantize import equalise_channels

    net, card = _upnet(0, depth=3)
    with torch.no_grad():
        for conv in (m for m in net.body if isinstance(m, torch.nn.Conv2d)):
            conv.weight[:4] *= 20.0  # four channels far larger than the other four
    proto = onnx.load_from_string(onnx_bytes(net, card))
    rng = np.random.default_rng(0)
    xs = [rng.random((1, 3, 24, 24), dtype=np.float32) for _ in range(4)]
    acts = [n.output[0] for n in proto.graph.node if n.op_type == "Relu"]

    def run(p):
        probe = onnx.ModelProto()
        probe.CopyFrom(p)
        probe.graph.output.extend(onnx.ValueInfoProto(name=a) for a in acts)
        sess = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
        return [sess.run(None, {sess.get_inputs()[0].name: x}) for x in xs]

    def spread(outs, k):  # largest channel range over the smallest live one, activation k
        r = np.max([np.abs(o[1 + k][0]).reshape(8, -1).max(axis=1) for o in outs], axis=0)
        return r.max() / r[r > 0].min()

    before = run(proto)
    # body convs 0->1 and 1->2 are chains; body 2's ReLU feeds the skip addition, not a conv
    assert equalise_channels(proto, xs) == 2
    after = run(proto)
    for b, a in zip(before, after, strict=True):  # float32 sums in another order
        assert np.abs(a[0] - b[0]).max() <= 1e-5 * max(1.0, np.abs(b[0]).max())
    for k in (0, 1):
        assert spread(after, k) < spread(before, k) / 2
    np.testing.assert_allclose(spread(after, 2), spread(before, 2), rtol=1e-5)  # untouched


def _float_convs(proto) -> set[str]:
    """Names of the convolutions of a quantised graph whose weights are not dequantised."""
    made = {o: n for n in proto.graph.node for o in n.output}
    return {n.name for n in proto.graph.node if n.op_type == "Conv" and n.input[1] not in made}


def test_skip_convs_are_those_around_the_sum_the_last_convolution_reads():
    """skip_convs finds the writers and readers of the long skip's terms (through activations):
    RFDN's first block reads the first convolution's raw features and LR_conv writes the other
    term; UpNet's first body convolution reads the head's output and its last writes (through a
    ReLU) the other term; a network whose last convolution reads no sum has none. With
    ``skip=True`` exactly those convolutions (and the first and last) keep float32 weights."""
    import onnx

    from upres.export import onnx_bytes
    from upres.models.archs.rfdn import RFDN
    from upres.models.archs.srcnn import SRCNN
    from upres.models.archs.upnet import UpNet
    from upres.models.descriptor import ModelCard
    from upres.quantize import quantize_int8, skip_convs

    def graph(net, arch):
        card = ModelCard(name="t", arch=arch, scale=net.scale, hparams=getattr(net, "hparams", {}),
                         params=sum(p.numel() for p in net.parameters()))
        return card, onnx.load_from_string(onnx_bytes(net.eval(), card))

    torch.manual_seed(0)
    rfdn = RFDN(scale=2, channels=8, blocks=2)
    card, proto = graph(rfdn, "rfdn")
    assert skip_convs(proto) == ["/LR_conv/Conv", "/B1/c1_d/Conv", "/B1/c1_r/Conv"]
    assert skip_convs(graph(UpNet(scale=2, channels=8, depth=3), "upnet")[1]) == [
        "/body/body.4/Conv", "/body/body.0/Conv"]
    assert skip_convs(graph(SRCNN(scale=2), "srcnn")[1]) == []

    crops = load_calibration()[:4]
    q = onnx.load_from_string(quantize_int8(rfdn, card, crops=crops, skip=True))
    assert _float_convs(q) == {"/fea_conv/Conv", "/upsampler/upsampler.0/Conv", "/LR_conv/Conv",
                      "/B1/c1_d/Conv", "/B1/c1_r/Conv"}
    assert "reading the long skip" in json.loads(
        {e.key: e.value for e in q.metadata_props}["upres"])["quantized"]
    plain = onnx.load_from_string(quantize_int8(rfdn, card, crops=crops))
    assert _float_convs(plain) == {"/fea_conv/Conv", "/upsampler/upsampler.0/Conv"}


def test_make_int8_keeps_the_most_sensitive_convolution_float_when_nothing_else_helps():
    """A convolution that int8 cannot represent, and that neither equalising nor the long-skip
    rule touches, is found by its sensitivity and kept float32: fast-x2 (8
    convolutions; body.0 and body.10 are the long skip's) with one input channel of body.4 dead
    (zero in float) and that channel's weights huge, so its per-channel int8 weights round every
    live weight to zero (the float function keeps them)."""
    import onnx

    from upres.models.weights import load_model
    from upres.quantize import calibration_loss, make_int8, quantize_int8, skip_convs

    model, card = load_model(zoo.ZOO_DIR / "fast-x2.safetensors")
    model.eval()
    card = card.with_(default_precision="")
    with torch.no_grad():
        model.body[2].bias[5] = -100.0  # channel 5 after the ReLU: always zero
        model.body[4].weight[:, 5] = 1000.0
    crops = load_calibration()[:12]
    plain = quantize_int8(model, card, crops=crops, skip=True)
    skipped = set(skip_convs(onnx.load_from_string(plain)))
    assert skipped == {"/body/body.0/Conv", "/body/body.10/Conv"}
    assert calibration_loss(model, card, plain, crops) > 1.0  # body.4 in int8 is ruined
    graph, loss = make_int8(model, card, crops=crops)
    assert loss <= INT8_RULE_DB
    q = onnx.load_from_string(graph)
    floats = _float_convs(q)
    rest = {f"/body/body.{i}/Conv" for i in (2, 4, 6, 8)}
    more = floats & rest  # at most a quarter of the 8 convolutions, and never all of the rest
    assert "/body/body.4/Conv" in more and len(more) <= 2
    assert f"{len(more)} more (the most sensitive)" in json.loads(
        {e.key: e.value for e in q.metadata_props}["upres"])["quantized"]
    # A convolution kept float32 runs float32 in onnxruntime too: its optimiser would otherwise
    # quantise its weights (WeightBiasQuantization), body.4's huge dead-channel
    # weights then rounding the live ones to zero again (max output error 0.24 measured).
    from upres.export import OnnxNet

    x = (crops[0][None].transpose(0, 3, 1, 2)[:, :, :48, :48] / 255.0).astype(np.float32)
    kept = quantize_int8(model, card, crops=crops, skip=True, keep=["/body/body.4/Conv"])
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
        out = OnnxNet(kept)(torch.from_numpy(x)).numpy()
    assert np.abs(out - ref).max() < 0.08


def test_a_recorded_sensitivity_scan_gives_the_same_graph_without_measuring(monkeypatch,
                                                                           capsys):
    """The scan's result travels in the graph's metadata; a card that carries it (``int8_scan``,
    as ``scripts/stamp_cards.py --int8-scan`` records it for shipped models) gets the very same
    graph from make_int8: the one the scan chose, made first (one quantisation), or, with
    other int8 kernels, every try but the scan's measurements; and only for the weights and
    setting it was measured with and the graph the scan starts from: anything else is
    measured again, and malformed fields are ignored."""
    import onnx

    from upres import quantize
    from upres.models.weights import load_model, state_sha256

    model, card = load_model(zoo.ZOO_DIR / "fast-x2.safetensors")
    model.eval()
    card = card.with_(default_precision="")
    with torch.no_grad():  # as in the test above: body.4 cannot be int8
        model.body[2].bias[5] = -100.0
        model.body[4].weight[:, 5] = 1000.0
    crops = load_calibration()[:12]
    calls = []
    real = quantize.quantize_int8
    monkeypatch.setattr(quantize, "quantize_int8", lambda *a, **k: calls.append(1) or real(*a,
                                                                                        **k))
    graph, loss = quantize.make_int8(model, card, crops=crops)
    measured = len(calls)
    assert "measuring each of" in capsys.readouterr().err
    meta = {e.key: e.value for e in onnx.load_from_string(graph).metadata_props}
    scan = quantize.int8_entry(graph)["scan"]
    assert scan["weights"] == state_sha256(model)
    assert scan["setting"] == quantize._setting(card, crops, quantize.PERCENTILE)
    assert {f"/body/body.{i}/Conv" for i in (2, 4, 6, 8)} <= set(scan["order"])
    assert scan["order"][0] == "/body/body.4/Conv"  # the one int8 ruins ranks first
    keep = scan["choice"]["keep"]
    assert scan["choice"]["kernels"] == quantize._kernels() and keep >= 1
    assert scan["order"][:keep] == sorted(_float_convs(onnx.load_from_string(graph))
                                          & set(scan["order"]), key=scan["order"].index)
    assert "int8_scan" not in json.loads(meta["upres"]) or \
        not json.loads(meta["upres"])["int8_scan"]  # once, in upres_int8

    def nodes(g: bytes) -> str:  # the graph without its metadata
        return quantize._graph_hash(onnx.load_from_string(g))

    def make(rec: object, c: np.ndarray = crops) -> tuple[bytes, float, int, str]:
        calls.clear()
        g, lo = quantize.make_int8(model, card.with_(int8_scan=rec), crops=c)
        return g, lo, len(calls), capsys.readouterr().err

    g, lo, n, err = make(scan)  # the graph the scan chose, made first and kept
    assert nodes(g) == nodes(graph) and lo == loss and n == 1 and "measuring" not in err
    every_try = measured - len(scan["order"])
    for other in ({**scan, "choice": {**scan["choice"], "kernels": "other"}},  # other kernels
                  {**scan, "choice": {**scan["choice"], "keep": 99}}):  # over the cap
        g, lo, n, err = make(other)  # every try again, but the order not measured
        assert nodes(g) == nodes(graph) and lo == loss, other
        assert n == every_try and "measuring" not in err, other
    convs = [*scan["order"], "a", "b"]
    for bad in ({**scan["choice"], "keep": True}, {**scan["choice"], "keep": 0},
                {**scan["choice"], "keep": "1"}, {"keep": 1}, "x", None):  # malformed choices
        rec = quantize._record(card.with_(int8_scan={**scan, "choice": bad}), scan["weights"],
                               scan["setting"], convs)
        assert rec is not None and quantize._choice(rec, quantize._kernels()) is None, bad
    for other in ({**scan, "weights": "0" * 64},  # other weights
                  {**scan, "setting": "0" * 64},  # another setting
                  {**scan, "equalise": not scan["equalise"]},  # not the scan's start
                  {**scan, "order": scan["order"][:-1]},  # not what the scan measures
                  {**scan, "order": [*scan["order"][:-1], "/nowhere/Conv"]},
                  {**scan, "order": "nonsense"}, {**scan, "order": [1] * len(scan["order"])},
                  {**scan, "skip": "no"}, [], None):
        assert quantize._order(quantize._record(card.with_(int8_scan=other), scan["weights"],
                                                scan["setting"], convs),
                               scan["order"], (scan["equalise"], scan["skip"])) is None, other
    g, lo, n, err = make({k: v for k, v in scan.items() if k != "choice"}  # an order measured
                         | {"equalise": not scan["equalise"]})  # from the other start graph
    assert nodes(g) == nodes(graph) and n == measured and "measuring each of" in err
    _, _, n, err = make(scan, crops[:11])  # other crops: another setting, measured
    assert "measuring each of" in err
    rec = quantize._record(card.with_(int8_scan={**scan, "extra": "x" * 100}), scan["weights"],
                           scan["setting"], convs)
    assert rec is not None and set(rec) == {"weights", "setting", "equalise", "skip", "order",
                                            "choice"}  # only checked fields go on


def test_make_int8_keeps_the_first_graph_within_the_rule_tail_int8_included(monkeypatch):
    """Weights trained for an int8 last convolution whose first graph (tail int8) keeps the
    rule get that graph, and nothing after it is tried (tiny-x4, trained with ``qat.tail``, with
    the rule loosened so that the first graph keeps it on any CPU)."""
    from upres import quantize
    from upres.models.weights import load_model

    model, card = load_model(zoo.ZOO_DIR / "tiny-x4.safetensors")
    model.eval()
    assert quantize.int8_tail(card)
    monkeypatch.setattr(quantize, "INT8_RULE_DB", 10.0)
    graph, loss = quantize.make_int8(model, card, crops=load_calibration()[:8])
    assert loss <= 10.0
    assert "the last int8" in quantize.graph_note(graph)


def test_make_int8_tries_the_last_convolution_int8_first_for_every_model():
    """The fastest graph, the last convolution int8 too, is tried first for weights not
    trained for it as well, and kept where it keeps the rule (fast-x3: 0.044 dB on the
    calibration crops, against 0.012 with that convolution float32); tiny-x2's does not
    (0.12), so its graph keeps the last convolution float32. A tail graph the quantiser refuses
    does not stop the float-tail ones."""
    import onnx

    from upres.models.weights import load_model
    from upres.quantize import int8_tail, make_int8

    for name, tail in (("fast-x3", True), ("tiny-x2", False)):
        model, card = load_model(zoo.ZOO_DIR / f"{name}.safetensors")
        model.eval()
        card = card.with_(default_precision="")
        assert not int8_tail(card)
        graph, loss = make_int8(model, card)
        assert loss <= INT8_RULE_DB
        q = onnx.load_from_string(graph)
        convs = [n.name for n in q.graph.node if n.op_type == "Conv"]
        assert _float_convs(q) == ({convs[0]} if tail else {convs[0], convs[-1]}), name
        note = json.loads({e.key: e.value for e in q.metadata_props}["upres"])["quantized"]
        assert ("(the last int8)" in note) == tail and "trained for it" not in note

    from upres import quantize

    real = quantize.quantize_int8

    def refuse_tail(*a, tail=None, **kw):
        if tail:
            raise UpresError("refused")
        return real(*a, tail=tail, **kw)

    model, card = load_model(zoo.ZOO_DIR / "fast-x3.safetensors")
    model.eval()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(quantize, "quantize_int8", refuse_tail)
        graph, loss = make_int8(model, card.with_(default_precision=""),
                                crops=load_calibration()[:8])
    assert "first and last convolutions float32" in quantize.graph_note(graph)


def test_calibration_comes_from_the_training_images_only():
    crops = load_calibration()
    assert crops.shape == (48, 96, 96, 3) and crops.dtype == np.uint8
    with np.load(CALIB_FILE) as f:
        assert "training HR images" in str(f["source"])
    bench = [read_image(p) for p in sorted((BENCH / "Set5").glob("*.png"))]
    for c in crops[:8]:  # not a crop of a benchmark image
        for im in bench:
            assert not any(np.array_equal(c, im[y:y + 96, x:x + 96, :3])
                           for y in range(0, im.shape[0] - 95, 96)
                           for x in range(0, im.shape[1] - 95, 96))
    card = upres.load("x3", device="cpu").card
    xs = calibration_inputs(crops[:2], card)
    assert xs[0].shape == (1, 3, 32, 32) and xs[0].dtype == np.float32
    assert xs[0].min() >= 0.0 and xs[0].max() <= 1.0
    # a folder of the user's own images instead
    own = load_calibration(DATA / "train" / "T91")
    assert own.shape[1:] == (96, 96, 3)


def _kind_image(kind: str) -> np.ndarray:
    """A 90x110 crop of baboon as ``kind``: rgb, gray, rgba (a horizontal alpha ramp),
    gray16 or rgb16 (8-bit values times 257)."""
    img = read_image(BENCH / "Set14" / "baboon.png")[:90, :110]
    if kind in ("gray", "gray16"):
        img = img.mean(axis=2).round().astype(np.uint8)
    if kind == "rgba":
        alpha = np.linspace(0, 255, img.shape[1], dtype=np.float64).round().astype(np.uint8)
        img = np.dstack([img, np.broadcast_to(alpha, img.shape[:2])])
    if kind.endswith("16"):
        img = img.astype(np.uint16) * 257
    return img


@pytest.fixture(scope="module")
def pair():
    return (upres.load("fast-x2", device="cpu"),
            upres.load("fast-x2", precision="int8", int8_runtime="onnxruntime"))


@pytest.mark.parametrize("kind", ["rgb", "gray", "rgba", "gray16", "rgb16"])
def test_int8_path_handles_images_like_fp32(pair, kind):
    """Gray, alpha and 16-bit go the same way on the int8 path as on fp32 (same shape, dtype,
    and nearly the same pixels), and tiled equals whole."""
    fp32, int8 = pair
    img = _kind_image(kind)
    a, b = fp32.upscale(img, tile=0), int8.upscale(img, tile=0)
    assert a.shape == b.shape and a.dtype == b.dtype == img.dtype
    top = 65535 if img.dtype == np.uint16 else 255
    diff = np.abs(a.astype(np.float64) - b.astype(np.float64)) / top * 255
    assert diff.mean() < 0.5 and diff.max() <= 12, (diff.mean(), diff.max())
    if kind == "rgba":  # alpha goes through the same network in both paths
        assert np.abs(a[..., 3].astype(int) - b[..., 3].astype(int)).max() <= 12
    tiled = int8.upscale(img, tile=32)
    assert np.abs(tiled.astype(np.int64) - b.astype(np.int64)).max() <= (257 if top > 255 else 1)


def test_int8_needs_fixed_weights(capsys):
    auto = upres.load("photo-x4", precision="int8")  # strength per image: no fixed int8 graph
    assert auto.precision == "fp32" and auto.denoise == "auto"
    assert "int8 needs a fixed clean-up strength" in capsys.readouterr().err
    photo = upres.load("photo-x4", precision="int8", denoise=0.5)
    assert photo.precision == "int8"
    with pytest.raises(UpresError, match="automatic clean-up strength"):
        upres.load("photo-x4", backend="onnxruntime")


def test_auto_measures_caches_and_says_what_it_chose(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("UPRES_CACHE_DIR", str(tmp_path))
    img = read_image(BENCH / "Set5" / "bird.png")[:64, :64]
    first = upres.load("fast-x4", device="cpu", precision="auto")
    assert first.precision in ("fp32", "bf16", "int8")
    note = first.precision_note
    assert note.startswith(f"auto precision: {first.precision} (a 128x128 tile took ")
    floats = ("fp32", "bf16") if paths.has_native_bf16() else ("fp32",)  # see the next test
    assert " ms in fp32, " in note and " ms in int8" in note
    assert (" ms in bf16" in note) == ("bf16" in floats)
    assert "PSNR-Y on the calibration crops" in note
    data = json.loads((tmp_path / "precision.json").read_text())
    (key, entry), = [(k, v) for k, v in data.items()
                     if f" {'/'.join((*floats, 'int8', 'formats'))} " in k]
    assert key.startswith("fast-x4 ") and paths.machine_signature() in key
    runtimes = {k: v for k, v in data.items() if " int8-onnxruntime/int8-openvino " in k}
    if ovnet.available():  # the int8 graph's runtime was chosen by timing both, once
        (rt,) = runtimes.values()
        assert set(rt["times_ms"]) == {"int8-onnxruntime", "int8-openvino"}
        assert rt["precision"] == _runtime_rule(rt["times_ms"])
        if first.precision == "int8":
            assert note.endswith(f"; int8 runs on {rt['precision'][5:]}")
    else:
        assert not runtimes
    assert entry["precision"] == first.precision
    # UpNet's recorded format is channels_last; auto times the float paths contiguous too
    assert set(entry["times_ms"]) == {"int8", *floats, *(f"{p} contiguous" for p in floats)}
    # the choice is the measured one: each float path at its faster format (by the margin)
    ms = entry["times_ms"]
    fmt = {p: ms[f"{p} contiguous"] * FORMAT_MARGIN > ms[p] for p in floats}
    by_path = {p: ms[p] if fmt.get(p, True) else ms[f"{p} contiguous"]
               for p in (*floats, "int8")}
    assert entry["precision"] == choose_precision({k: v / 1e3 for k, v in by_path.items()})
    if first.precision != "int8":
        assert entry["channels_last"] == fmt[first.precision] == first.channels_last
    assert any(p.suffix == ".onnx" for p in (tmp_path / "int8").iterdir())
    # The next load takes the cached choice without measuring.
    second = upres.load("fast-x4", device="cpu", precision="auto")
    assert second.precision == first.precision
    assert "cached from " in second.precision_note
    ref = upres.load("fast-x4", device="cpu").upscale(img)
    assert np.abs(second.upscale(img).astype(int) - ref.astype(int)).mean() < 0.5
    # A cached choice of another path is followed (the cache decides, not a new timing).
    entry["precision"] = "int8"
    (tmp_path / "precision.json").write_text(json.dumps({**data, key: entry}))
    assert upres.load("fast-x4", device="cpu", precision="auto").backend == "onnxruntime"
    # A cached memory format is followed too, with the same pixels.
    entry.update(precision="fp32", channels_last=False)  # not UpNet's recorded format
    (tmp_path / "precision.json").write_text(json.dumps({**data, key: entry}))
    flipped = upres.load("fast-x4", device="cpu", precision="auto")
    assert flipped.channels_last == entry["channels_last"] and flipped.precision == "fp32"
    conv = next(m for m in flipped.model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) == \
        entry["channels_last"]
    assert np.abs(flipped.upscale(img).astype(int) - ref.astype(int)).max() <= 1
    assert "; contiguous format" in flipped.precision_note or \
        "; channels_last format" in flipped.precision_note
    # A format the caller fixed is not measured (nor is it the same cache entry).
    fixed = upres.load("fast-x4", device="cpu", precision="auto", channels_last=False)
    assert fixed.channels_last is False and " contiguous" not in fixed.precision_note
    data = json.loads((tmp_path / "precision.json").read_text())
    assert any(f" {'/'.join((*floats, 'int8'))} | " in k for k in data)
    # A damaged cache means measuring again, not an error.
    (tmp_path / "precision.json").write_text("{not json")
    again = upres.load("fast-x4", device="cpu", precision="auto")
    assert "cached" not in again.precision_note
    assert capsys.readouterr().err == ""


def test_auto_leaves_bf16_untimed_without_bf16_instructions(tmp_path, monkeypatch):
    """On an x86 CPU without bf16 instructions PyTorch emulates bf16 (a 128x128 tile of
    photo-x4 took 2.1 s in bf16 and 66 s in bf16 contiguous against 0.2 s in fp32 on an
    AVX2-only EPYC): auto does not time it there, says so, and caches the choice apart."""
    monkeypatch.setenv("UPRES_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(paths, "has_native_bf16", lambda: False)
    up = upres.load("tiny-x2", device="cpu", precision="auto")
    assert " ms in bf16" not in up.precision_note and up.precision in ("fp32", "int8")
    assert up.precision_note.count("bf16 not timed: this CPU has no bf16 instructions") == 1
    keys = json.loads((tmp_path / "precision.json").read_text())
    (key,) = [k for k in keys if "/formats " in k]  # (the other: the int8 runtime's choice)
    assert " fp32/int8/formats " in key and key.startswith("tiny-x2 ")
    again = upres.load("tiny-x2", device="cpu", precision="auto")
    assert "cached from " in again.precision_note and "bf16 not timed" in again.precision_note


def test_a_path_far_slower_than_fp32_is_timed_once():
    """_best_time stops at a first timed call over ``give_up`` seconds and answers with it;
    the warm-ups (kernel builds, OpenVINO's compile) never decide."""
    import time

    from upres.inference.upscaler import _best_time

    calls = []

    def slow():
        calls.append(1)
        time.sleep(0.05)

    assert _best_time(slow, warm=1, repeat=2, give_up=0.01) >= 0.05 and len(calls) == 2
    calls.clear()
    assert 0.05 <= _best_time(slow, warm=2, repeat=2, give_up=1.0) < 1.0 and len(calls) == 4


def test_auto_keeps_int8_out_when_the_strength_changes_per_image(tmp_path, monkeypatch):
    monkeypatch.setenv("UPRES_CACHE_DIR", str(tmp_path))
    up = upres.load("photo-x4", device="cpu", precision="auto")
    assert up.precision in ("fp32", "bf16")
    assert "int8" not in up.precision_note


def test_export_int8_cli_and_eval_precision(tmp_path, capsys):
    out = tmp_path / "t.onnx"
    assert main(["export", "-m", "tiny-x2", "--int8", "-o", str(out)]) == 0
    said = capsys.readouterr().out
    assert "int8 ONNX" in said and "PSNR-Y against fp32" in said
    via_file = upres.load(str(out))
    assert via_file.precision == "int8" and via_file.card.quantized
    # the same quantiser, the same graph, the same runtime
    same = upres.load("tiny-x2", precision="int8", int8_runtime="onnxruntime")
    img = read_image(BENCH / "Set5" / "head.png")
    np.testing.assert_array_equal(via_file.upscale(img), same.upscale(img))
    assert main(["export", "-m", "tiny-x2", "--int8", "--calibration", str(tmp_path / "no"),
                 "-o", str(tmp_path / "u.onnx")]) == 2
    assert "calibration needs a folder" in capsys.readouterr().err
    js = tmp_path / "e.json"
    assert main(["eval", "-m", "tiny-x2", "-s", "2", "-d", str(BENCH / "Set5"),
                 "--precision", "int8", "--json", str(js)]) == 0
    assert "int8 loses" in capsys.readouterr().err  # what ran is said
    (row,) = json.loads(js.read_text())
    fp32 = upres.load("tiny-x2").card.psnr["Set5"]
    assert 0 <= fp32 - row["psnr_y"] <= INT8_RULE_DB


def test_a_model_made_to_run_int8_runs_int8_by_default(tmp_path, capsys):
    from upres.models.weights import load_model, save_model

    net, card = load_model(zoo.resolve("tiny-x2"))
    path = tmp_path / "q.safetensors"
    save_model(path, net, card.with_(name="q-x2", default_precision="int8"))
    assert upres.load(str(path)).precision == "int8"  # the card's own path on a CPU
    assert upres.load(str(path), precision="default").precision == "int8"
    assert upres.load(str(path), precision="fp32").precision == "fp32"  # asked: the floats
    assert upres.load("tiny-x2").precision == "fp32"  # cards without one: fp32
    out = tmp_path / "o.png"
    assert main(["upscale", str(BENCH / "Set5" / "bird.png"), "-m", str(path), "-o",
                 str(out)]) == 0
    assert "int8 loses" in capsys.readouterr().err  # says what it runs
    assert main(["eval", "-m", str(path), "-s", "2", "-d", str(BENCH / "Set5"),
                 "--json", str(tmp_path / "e.json")]) == 0
    (row,) = json.loads((tmp_path / "e.json").read_text())
    assert row["model"].endswith("(int8)")  # eval labels the path it measured


def test_damaged_caches_are_rebuilt_not_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("UPRES_CACHE_DIR", str(tmp_path))
    first = upres.load("fast-x3", precision="int8", int8_runtime="onnxruntime")
    (cached,) = (tmp_path / "int8").iterdir()
    data = bytearray(cached.read_bytes())
    data[len(data) // 2] ^= 0xFF  # a flipped byte inside the graph's tensors
    cached.write_bytes(bytes(data))
    img = read_image(BENCH / "Set5" / "bird.png")
    # the hash no longer matches: made again
    again = upres.load("fast-x3", precision="int8", int8_runtime="onnxruntime")
    np.testing.assert_array_equal(again.upscale(img), first.upscale(img))
    # a precision cache that is JSON but not what upres wrote
    up = upres.load("fast-x3", device="cpu", precision="auto")
    data = json.loads((tmp_path / "precision.json").read_text())
    for entry in data.values():
        entry["times_ms"] = {"fp32": "fast"}
    (tmp_path / "precision.json").write_text(json.dumps(data))
    again = upres.load("fast-x3", device="cpu", precision="auto")
    assert again.precision in ("fp32", "bf16", "int8") and up.precision_note
    assert "cached" not in again.precision_note


def test_onnxruntime_backend_and_export_follow_the_models_own_path(tmp_path, capsys):
    assert upres.load("tiny-x3", backend="onnxruntime").precision == "int8"
    assert upres.load("tiny-x3", backend="onnxruntime", precision="fp32").precision == "fp32"
    out = tmp_path / "f.onnx"
    assert main(["export", "-m", "tiny-x3", "-o", str(out)]) == 0  # the float graph
    assert upres.load(str(out)).precision == "fp32"
    assert main(["export", "-m", "tiny-x3", "--calibration", str(BENCH / "Set5"), "-o",
                 str(tmp_path / "g.onnx")]) == 2
    assert "--calibration is for --int8" in capsys.readouterr().err


@pytest.mark.parametrize("tile", [0, 32])
def test_uint8_pixels_from_onnxruntime_equal_float_path(pair, tile):
    """8-bit RGB on the onnxruntime path comes out of the graph as pixels (no torch kernel):
    exactly the pixels the float output rounds to, whole and tiled; ensembles keep the float
    path."""
    _, int8 = pair
    assert int8._uint8_path(np.uint8) and not int8._uint8_path(np.uint16)
    img = read_image(BENCH / "Set14" / "baboon.png")[:75, :97]
    fast = int8.upscale(img, tile=tile)
    f = int8.upscale(img.astype(np.float32) / np.float32(255), tile=tile)  # float path
    np.testing.assert_array_equal(fast, np.floor(np.clip(f, 0, 1) * 255 + 0.5).astype(np.uint8))
    ens = upres.load("fast-x2", precision="int8", ensemble=2)
    assert not ens._uint8_path(np.uint8)


def _runtime_rule(times_ms: dict) -> str:
    """The int8 runtime the rule picks from measured times: OpenVINO only when clearly
    faster."""
    from upres.inference.upscaler import INT8_RUNTIME_MARGIN

    ov, ort = times_ms["int8-openvino"], times_ms["int8-onnxruntime"]
    return "int8-openvino" if ov * INT8_RUNTIME_MARGIN <= ort else "int8-onnxruntime"


@pytest.fixture(scope="module")
def runtimes():
    """fast-x2's int8 graph on each runtime."""
    pytest.importorskip("openvino")
    nets = {r: upres.load("fast-x2", precision="int8", int8_runtime=r)
            for r in ("onnxruntime", "openvino")}
    nets["openvino"].model.compile_at = 1  # every shape on OpenVINO itself
    return nets


@pytest.mark.parametrize("kind", ["rgb", "gray", "rgba", "gray16", "rgb16"])
def test_openvino_runs_the_int8_graph_as_onnxruntime_does(runtimes, kind):
    """The same int8 graph on OpenVINO: same shapes and dtypes as onnxruntime for gray, alpha
    and 16-bit, pixels within rounding of onnxruntime's, tiled equal to whole, and 8-bit
    pixels from inside OpenVINO equal to its float output rounded."""
    ort, ov = runtimes["onnxruntime"], runtimes["openvino"]
    assert (ort.int8_runtime, ov.int8_runtime) == ("onnxruntime", "openvino")
    assert type(ov.model).__name__ == "OvNet" and type(ort.model).__name__ == "OnnxNet"
    img = _kind_image(kind)
    a, b = ort.upscale(img, tile=0), ov.upscale(img, tile=0)
    which = "u8" if kind == "rgb" else "float"  # 8-bit RGB leaves the graph as pixels
    assert (which, (1, 3, *img.shape[:2])) in ov.model._static  # OpenVINO ran it
    assert a.shape == b.shape and a.dtype == b.dtype == img.dtype
    top = 65535 if img.dtype == np.uint16 else 255
    diff = np.abs(a.astype(np.float64) - b.astype(np.float64)) / top * 255
    # as int8 against fp32 above: both runtimes' integer kernels, on any CPU
    assert diff.mean() < 0.5 and diff.max() <= 12, (diff.mean(), diff.max())
    tiled = ov.upscale(img, tile=32)
    assert np.abs(tiled.astype(np.int64) - b.astype(np.int64)).max() <= (257 if top > 255 else 1)
    if kind == "rgb":
        assert ov._uint8_path(np.uint8)
        f = ov.upscale(img.astype(np.float32) / np.float32(255), tile=0)  # float path
        px = np.floor(np.clip(f, 0, 1) * 255 + 0.5).astype(np.uint8)
        assert np.abs(b.astype(int) - px).max() <= 1 and (b != px).mean() < 0.001


def test_openvino_shapes_threads_and_eviction(runtimes):
    """A shape seen once runs on onnxruntime, a shape seen twice gets its own compiled
    OpenVINO model, the oldest beyond ``SHAPES`` are dropped, and server threads sharing one
    network each get their own call's result."""
    from concurrent.futures import ThreadPoolExecutor

    from upres.ovnet import SHAPES

    net = upres.load("fast-x2", precision="int8", int8_runtime="openvino")
    ov = net.model
    img = read_image(BENCH / "Set14" / "baboon.png")
    crops = [img[: 20 + 7 * i, : 30 + 5 * i] for i in range(SHAPES + 3)]
    once = [net.upscale(c, tile=0) for c in crops]  # every shape new: onnxruntime runs it
    assert ov.compiles == 0 and not ov._static
    twice = [net.upscale(c, tile=0) for c in crops]  # seen again: compiled for the shape
    assert ov.compiles == len(crops)  # the oldest dropped, the newest kept:
    assert list(ov._static) == [("u8", (1, 3, *c.shape[:2])) for c in crops[-SHAPES:]]
    net.upscale(crops[0], tile=0)  # dropped: seen once more, it runs on onnxruntime
    assert ov.compiles == len(crops)
    for a, b in zip(once, twice, strict=True):  # the two runtimes agree to rounding (with
        # the last convolution int8, as fast-x2's is since session 28, that includes its
        # 8-bit output step: about one level of 255 on a tenth of the pixels)
        d = np.abs(a.astype(int) - b)
        assert d.max() <= 2 and d.mean() < 0.25
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(lambda c: net.upscale(c, tile=0), crops * 2))
    for i, out in enumerate(together):
        ref = twice[i % len(crops)]
        assert out.shape == ref.shape
        d = np.abs(out.astype(int) - ref)
        assert d.max() <= 2 and d.mean() < 0.25


def test_int8_runtime_names_and_onnxruntime_errors():
    """Needs no OpenVINO: runtime names are checked, onnxruntime backends and files stay on
    onnxruntime, and a runtime's own failure is one UpresError line, not a traceback."""
    import torch

    with pytest.raises(UpresError, match="unknown int8 runtime 'tensorrt'"):
        upres.load("tiny-x2", precision="int8", int8_runtime="tensorrt")
    with pytest.raises(UpresError, match="needs the torch backend"):
        upres.load("tiny-x2", precision="int8", backend="onnxruntime", int8_runtime="openvino")
    on_ort = upres.load("tiny-x3", backend="onnxruntime")
    assert on_ort.int8_runtime == "onnxruntime" and on_ort.precision == "int8"
    bad = torch.rand(1, 5, 16, 16)  # five channels into a three-channel graph
    with pytest.raises(UpresError, match=r"onnxruntime failed at input \(1, 5, 16, 16\)"):
        on_ort.model(bad)


def test_openvino_int8_set5_within_005_db_of_fp32():
    """tiny-x2 with every Set5 image on OpenVINO itself (each size is new, so by default
    onnxruntime would run them): within the int8 rule of fp32."""
    pytest.importorskip("openvino")
    fp32 = upres.load("tiny-x2", device="cpu", precision="fp32")
    ov = upres.load("tiny-x2", precision="int8", int8_runtime="openvino")
    ov.model.compile_at = 1
    a, b = _set5(fp32, 2), _set5(ov, 2)
    assert ov.model.compiles >= 5 and not ov.model.failed
    assert a - b <= INT8_RULE_DB, f"fp32 {a:.3f} dB, int8 on OpenVINO {b:.3f} dB"


def test_int8_runtime_choice_and_errors(tmp_path, monkeypatch, capsys):
    pytest.importorskip("openvino")
    from upres.inference.upscaler import Upscaler
    from upres.ovnet import OvNet

    monkeypatch.setenv("UPRES_CACHE_DIR", str(tmp_path))
    # Unasked, with both installed: each timed once, the choice cached and then followed.
    timed = []
    real = Upscaler._time_graph
    monkeypatch.setattr(Upscaler, "_time_graph", lambda self, run, x, **kw: timed.append(
        (run.runtime, kw.get("repeat", 2))) or real(self, run, x, **kw))
    first = upres.load("tiny-x2", precision="int8")
    assert sorted(timed) == [("onnxruntime", 2), ("openvino", 2)]
    data = json.loads((tmp_path / "precision.json").read_text())
    ((key, entry),) = data.items()
    assert entry["precision"] == f"int8-{first.int8_runtime}" == _runtime_rule(entry["times_ms"])
    assert first.precision_note.endswith(f"; int8 runs on {first.int8_runtime}")
    timed.clear()
    again = upres.load("tiny-x2", precision="int8")
    assert again.int8_runtime == first.int8_runtime
    assert all(rep == 0 for _, rep in timed)  # at most a check that OpenVINO runs, no timing
    for cached in ("onnxruntime", "openvino"):  # a cached choice is followed, either way
        (tmp_path / "precision.json").write_text(json.dumps(
            {key: {**entry, "precision": f"int8-{cached}"}}))
        follows = upres.load("tiny-x2", precision="int8")
        assert follows.int8_runtime == cached
        if cached == "openvino":  # checked on OpenVINO itself at the load
            assert follows.model.compiles == 1
    # OpenVINO failing falls back to onnxruntime with one line.
    (tmp_path / "precision.json").unlink()
    capsys.readouterr()

    def broken(self, which, x):
        raise UpresError("OpenVINO failed at input (1, 3, 256, 256) (no such kernel)")

    monkeypatch.setattr(OvNet, "_run", broken)
    fallback = upres.load("tiny-x2", precision="int8")
    assert fallback.int8_runtime == "onnxruntime"
    err = capsys.readouterr().err
    assert "tiny-x2: OpenVINO failed, int8 runs on onnxruntime" in err
    assert err.count("\n") == 1
    assert not (tmp_path / "precision.json").exists()  # a failure is not a measurement
    # A compile that fails while upscaling is said once; onnxruntime runs the network on.
    import torch

    monkeypatch.undo()
    monkeypatch.setenv("UPRES_CACHE_DIR", str(tmp_path))
    ovn = upres.load("tiny-x2", precision="int8", int8_runtime="openvino").model
    ovn.compile_at = 1
    capsys.readouterr()
    with pytest.raises(UpresError, match=r"onnxruntime failed at input \(1, 5, 16, 16\)"):
        ovn(torch.rand(1, 5, 16, 16))  # five channels: OpenVINO cannot compile it
    assert ovn.failed.startswith("OpenVINO cannot compile this graph at input (1, 5, 16, 16)")
    assert capsys.readouterr().err.count("onnxruntime runs it instead") == 1
    good = torch.rand(1, 3, 16, 16)
    assert ovn(good).shape == (1, 3, 32, 32) and not ovn._static  # on onnxruntime now
    # Without OpenVINO: onnxruntime, nothing timed; asking for OpenVINO says how to get it.
    monkeypatch.setattr(Upscaler, "_time_graph", lambda self, run, x, **kw: timed.append(
        (run.runtime, kw.get("repeat", 2))) or real(self, run, x, **kw))
    monkeypatch.setitem(__import__("sys").modules, "openvino", None)
    assert not ovnet.available()
    timed.clear()
    plain = upres.load("tiny-x2", precision="int8")
    assert plain.int8_runtime == "onnxruntime" and not timed
    with pytest.raises(UpresError, match=r"OpenVINO cannot be imported.*upres\[openvino\]"):
        upres.load("tiny-x2", precision="int8", int8_runtime="openvino")


def test_int8_runtime_on_the_command_line(tmp_path, capsys):
    """``--int8-runtime`` names the runtime for upscale, eval and bench (the runtime that ran
    is said), is one of the API's names, and enters a folder job's parameters."""
    from upres import cli
    from upres.inference.upscaler import INT8_RUNTIMES

    assert cli._INT8_RUNTIMES == INT8_RUNTIMES
    names = ["onnxruntime"] + (["openvino"] if ovnet.available() else [])
    src = tmp_path / "in"
    src.mkdir()
    (src / "bird.png").write_bytes((BENCH / "Set5" / "bird.png").read_bytes())
    for rt in names:
        out = tmp_path / f"out-{rt}"
        assert main(["upscale", str(src), "-m", "tiny-x2", "--precision", "int8",
                     "--int8-runtime", rt, "-o", str(out), "--shard", "0/1"]) == 0
        assert f"; int8 runs on {rt}" in capsys.readouterr().err
        (manifest,) = out.glob("**/manifest.json")
        assert json.loads(manifest.read_text())["params"]["int8_runtime"] == rt
        assert main(["eval", "-m", "tiny-x2", "-s", "2", "-d", str(BENCH / "Set5"),
                     "--precision", "int8", "--int8-runtime", rt]) == 0
        assert f"; int8 runs on {rt}" in capsys.readouterr().err
        js = tmp_path / f"b-{rt}.json"
        assert main(["bench", "-m", "tiny-x2", "-s", "2", "--precision", "int8",
                     "--int8-runtime", rt, "--repeat", "1", "--json", str(js)]) == 0
        assert json.loads(js.read_text())[0]["backend"] == rt
    with pytest.raises(SystemExit):
        main(["upscale", str(src), "-m", "tiny-x2", "--int8-runtime", "tensorrt"])
    assert "invalid choice: 'tensorrt'" in capsys.readouterr().err


def test_auto_takes_the_other_memory_format_when_it_is_faster(tmp_path, monkeypatch):
    """With timings where contiguous is clearly faster for fp32 (and bf16 slow), auto keeps
    fp32 in contiguous format, says so and caches it; with contiguous only slightly faster
    (under FORMAT_MARGIN) it keeps the recorded channels_last."""
    from upres.inference.upscaler import Upscaler

    monkeypatch.setenv("UPRES_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(paths, "has_native_bf16", lambda: True)  # timed (here: faked)
    for gain, want in ((2.0, False), (1.05, True)):
        (tmp_path / "precision.json").unlink(missing_ok=True)

        def fake(self, x, give_up=None, gain=gain):  # seconds: what each path "took"
            if self.precision == "bf16":
                return 1.0
            if self.precision == "int8" or self.backend != "torch":
                return 1.0
            return 0.1 / gain if not self.channels_last else 0.1

        monkeypatch.setattr(Upscaler, "_time", fake)
        up = upres.load("fast-x4", device="cpu", precision="auto")
        assert up.precision == "fp32" and up.channels_last is want
        conv = next(m for m in up.model.modules() if isinstance(m, torch.nn.Conv2d))
        assert conv.weight.is_contiguous(memory_format=torch.channels_last) is want
        assert up.precision_note.endswith("; channels_last format)" if want else
                                          "; contiguous format)")
        (entry,) = [v for k, v in json.loads((tmp_path / "precision.json").read_text()).items()
                    if " fp32/bf16/int8/formats " in k]
        assert entry["channels_last"] is want and entry["precision"] == "fp32"


def test_int8_cache_stays_in_its_folder_and_files_say_their_loss(tmp_path, monkeypatch):
    """A card name from a weights file's own metadata never leads the cached graph out of the
    cache folder; an int8 graph (as `upres export --int8` writes it) carries its measured
    loss and its input convention in the file."""
    import onnxruntime as ort

    from upres.export import onnx_bytes
    from upres.models.weights import load_model
    from upres.quantize import int8_entry, int8_graph, make_int8

    cache = tmp_path / "a" / "cache"
    monkeypatch.setenv("UPRES_CACHE_DIR", str(cache))
    net, card = load_model(zoo.resolve("tiny-x2"))
    graph, loss = int8_graph(net, card.with_(name="../../escaped"))
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert written and all((cache / "int8") in p.parents for p in written), written
    assert written[0].name.startswith("_.._escaped-")
    again, same = int8_graph(net, card.with_(name="../../escaped"))  # from the cache
    assert again == graph and same == pytest.approx(loss, abs=1e-4)
    graph, loss = make_int8(net, card)
    entry = int8_entry(graph)
    assert entry["loss_db"] == round(loss, 4) and entry["rule_db"] == INT8_RULE_DB
    assert entry["crops"] == len(load_calibration())
    assert int8_entry(onnx_bytes(net, card)) == {}  # a float graph has none
    desc = ort.InferenceSession(graph, providers=["CPUExecutionProvider"]).get_modelmeta()
    assert "int8" in desc.description and "[0, 1]" in desc.description


def _record_many(i: int, start: object) -> None:
    start.wait()  # type: ignore[attr-defined]
    for k in range(25):
        paths.record(f"m{i}-{k}", "fp32", {"fp32": 0.01}, None)


def test_precision_cache_keeps_every_writers_entry(tmp_path, monkeypatch):
    """Processes recording different models at once (server workers on one cache) each keep
    their entry: the read, add, write of precision.json is one step under a file lock (a
    thread lock alone would not reach another process)."""
    import multiprocessing

    monkeypatch.setenv("UPRES_CACHE_DIR", str(tmp_path))
    ctx = multiprocessing.get_context("fork")
    start = ctx.Barrier(4)
    workers = [ctx.Process(target=_record_many, args=(i, start)) for i in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(120)
    assert all(w.exitcode == 0 for w in workers)
    assert all(paths.lookup(f"m{i}-{k}") for i in range(4) for k in range(25))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["precision.json", "precision.json.lock"]


def test_precision_cache_is_written_where_files_cannot_be_locked(tmp_path, monkeypatch):
    # NFS without lockd: flock fails (ENOLCK); the choice is still recorded, not a crash
    import errno
    import fcntl

    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setenv("UPRES_CACHE_DIR", str(tmp_path / "new"))  # not made yet
    monkeypatch.setattr(fcntl, "flock", no_locks)
    paths.record("m", "fp32", {"fp32": 0.01}, None)
    assert paths.lookup("m")


def test_on_8bit_grid():
    from upres.inference.upscaler import on_8bit_grid

    rng = np.random.default_rng(1)
    levels = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    assert on_8bit_grid(levels)
    assert on_8bit_grid(levels.astype(np.uint16) * 257)  # 8-bit data widened
    assert not on_8bit_grid(levels.astype(np.uint16) * 257 + 1)
    assert on_8bit_grid(levels.astype(np.float32) / 255)
    assert on_8bit_grid((levels.astype(np.float64) / 255)[:, :, 0], chunk=7)
    off = levels.astype(np.float32) / 255
    off[29, 39, 2] += 0.3 / 255  # one value between levels, in the last chunk read
    assert not on_8bit_grid(off, chunk=100)
    assert not on_8bit_grid(np.array([0.0, np.nan], dtype=np.float32))


def test_default_int8_runs_wider_inputs_on_the_float_network():
    """An int8 path the card chose runs 8-bit images only: a real 16-bit DICOM frame that uses
    0..920 of its values goes through the float network (int8 asked by name still runs int8,
    and on that frame it is far off); 8-bit images and 16-bit ones holding 8-bit levels run
    int8."""
    from upres.convert import upscale_values
    from upres.formats.dicom import read_dicom

    frames, meta = read_dicom(DATA / "apps" / "dicom" / "dicom_file02.dcm")
    frame = np.ascontiguousarray(frames[0][96:160, 96:160])
    own = upres.load("tiny-x4", device="cpu", int8_runtime="onnxruntime")
    assert own.precision == "int8"  # tiny-x4's card
    fp32 = upres.load("tiny-x4", device="cpu", precision="fp32")
    named = upres.load("tiny-x4", device="cpu", precision="int8", int8_runtime="onnxruntime")
    out = upscale_values(own, frame, meta.lo, meta.hi, tile=0)
    ref = upscale_values(fp32, frame, meta.lo, meta.hi, tile=0)
    np.testing.assert_array_equal(out, ref)
    forced = upscale_values(named, frame, meta.lo, meta.hi, tile=0).astype(np.float64)
    assert np.abs(forced - ref).mean() > 5 * max(1.0, np.abs(out - ref).mean())
    img = read_image(BENCH / "Set5" / "baby.png")[:48, :48]
    np.testing.assert_array_equal(own.upscale(img), named.upscale(img))
    wide = img.astype(np.uint16) * 257
    np.testing.assert_array_equal(own.upscale(wide), named.upscale(wide))
    assert not np.array_equal(own.upscale(img), fp32.upscale(img))


def test_8bit_only_rule_through_the_onnxruntime_backend_and_last_precision():
    """--backend onnxruntime takes tiny-x4's int8 graph by default, under the same rule; each
    call's precision is reported (the server's X-Upres-Precision); an Upscaler pickles."""
    import pickle

    rng = np.random.default_rng(5)
    wide = rng.integers(0, 65536, (24, 24, 3), dtype=np.uint16)
    img = read_image(BENCH / "Set5" / "baby.png")[:24, :24]
    ort = upres.load("tiny-x4", backend="onnxruntime", int8_runtime="onnxruntime")
    fp32 = upres.load("tiny-x4", device="cpu", precision="fp32")
    assert ort.precision == "int8" and ort.last_precision == "int8"
    np.testing.assert_array_equal(ort.upscale(wide), fp32.upscale(wide))
    assert ort.last_precision == "fp32"
    ort.upscale(img)
    assert ort.last_precision == "int8"
    again = pickle.loads(pickle.dumps(fp32))
    np.testing.assert_array_equal(again.upscale(img), fp32.upscale(img))
