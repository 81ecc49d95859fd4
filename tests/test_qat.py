"""Quantisation-aware fine-tuning (upres.train.qat): the simulated rounding is the int8 graph's,
a recipe trains with it and resumes exactly, and weights trained with an int8 last convolution
get an int8 graph that quantises it."""

from __future__ import annotations

import platform

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

import upres
from upres.errors import UpresError
from upres.export import OnnxNet
from upres.inference.paths import cpu_info
from upres.models.archs.upnet import UpNet
from upres.models.descriptor import ModelCard
from upres.quantize import calibration_inputs, int8_tail, load_calibration, quantize_int8
from upres.train.config import load_config
from upres.train.qat import QatSim, activation_range, fake_weight
from upres.train.trainer import Trainer


def _net() -> tuple[UpNet, ModelCard]:
    torch.manual_seed(1)
    net = UpNet(scale=2, channels=8, depth=2).eval()
    with torch.no_grad():
        net.tail.weight.normal_(0, 0.05)  # (it starts at zero: nothing to round)
    card = ModelCard(name="t", arch="upnet", scale=2, hparams=net.hparams,
                     params=sum(p.numel() for p in net.parameters()))
    return net, card


# onnxruntime's u8s8 convolution kernels on x86 CPUs without VNNI (AVX2 only) add pairs of
# products in saturating 16-bit lanes (vpmaddubsw), which the simulation does not model: there
# the int8 graph sits further from exact int8 arithmetic, and the simulation is held to a
# looser (still far from the float network's) bound. VNNI and AMX add in 32 bits.
_EXACT_INT8 = platform.machine().lower() not in ("x86_64", "amd64") or bool(
    {"avx512_vnni", "avx_vnni", "amx_int8"} & set(cpu_info()[1]))


def _graph_ranges(graph: bytes) -> list[tuple[float, float]]:
    """The uint8 activation ranges of an int8 graph's QuantizeLinear nodes, in graph order."""
    g = onnx.load_from_string(graph).graph
    init = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    out = []
    for n in g.node:
        if n.op_type == "QuantizeLinear" and init[n.input[1]].size == 1:
            s, z = float(init[n.input[1]]), int(init[n.input[2]])
            out.append((-z * s, (255 - z) * s))
    return out


@pytest.mark.parametrize("tail", [False, True])
def test_simulated_rounding_is_the_int8_graphs(tail):
    """The ranges QatSim measures are the ones onnxruntime's quantiser writes, and the rounded
    forward pass lands far closer to the int8 graph's output than to the float network's."""
    net, card = _net()
    crops = load_calibration()[:8]
    inputs = calibration_inputs(crops, card)
    graph = quantize_int8(net, card, crops=crops, tail=tail)
    with torch.no_grad():
        ref = [net(torch.from_numpy(x)).numpy() for x in inputs]
    sim = QatSim(net, inputs, tail=tail)
    ranges = sim.calibrate()
    assert list(ranges) == ["head_out", "relu0", "relu1"] + (["tail_in", "tail_out"] if tail
                                                             else [])
    theirs = _graph_ranges(graph)
    assert len(theirs) == len(ranges)
    for (lo, hi), (a, b) in zip(ranges.values(), theirs, strict=True):
        step = (hi - lo) / 255  # the graph's ends sit on its integer zero point's grid
        assert abs(lo - a) <= step and abs(hi - b) <= step
    with torch.no_grad():
        simmed = [net(torch.from_numpy(x)).numpy() for x in inputs]
    q = OnnxNet(graph)
    ort = [q(torch.from_numpy(x)).numpy() for x in inputs]

    def mse(a, b):
        return float(np.mean([np.mean((x - y) ** 2) for x, y in zip(a, b, strict=True)]))

    assert mse(simmed, ref) > 0  # it does round
    assert mse(simmed, ort) < (0.1 if _EXACT_INT8 else 0.5) * mse(ort, ref), _EXACT_INT8
    sim.remove()
    with torch.no_grad():
        back = [net(torch.from_numpy(x)).numpy() for x in inputs]
    for a, b in zip(back, ref, strict=True):
        np.testing.assert_array_equal(a, b)


def test_fake_weight_rounds_per_output_channel_with_straight_gradients():
    w = torch.randn(4, 3, 3, 3) * torch.tensor([1.0, 10.0, 0.01, 0.5]).view(4, 1, 1, 1)
    w.requires_grad_(True)
    q = fake_weight(w)
    for c in range(4):
        step = w[c].abs().max().item() / 127
        levels = q[c].detach() / step
        assert torch.allclose(levels, levels.round(), atol=1e-3)
        assert (q[c] - w[c]).abs().max().item() <= step / 2 + 1e-7
    q.sum().backward()
    assert torch.equal(w.grad, torch.ones_like(w))


def test_activation_range_takes_the_percentile_and_holds_zero():
    x = np.concatenate([np.linspace(0.1, 1.0, 100_000), [50.0]]).astype(np.float32)
    lo, hi = activation_range(x, 99.9)
    assert lo == 0.0 and 0.998 < hi <= 1.0  # the outlier cut, 0 kept in the range
    lo, hi = activation_range(-x, 100.0)
    assert lo == pytest.approx(-50.0, rel=1e-3) and hi == 0.0
    # signed, the shorter side with an outlier: each side is its own percentile (onnxruntime's
    # rule, |x|'s percentile clipped to the extremes, would give [-0.9985, 0.9985])
    y = np.concatenate([np.linspace(-0.5, 1.0, 100_000), [-3.0]]).astype(np.float32)
    lo, hi = activation_range(y, 99.9)
    assert lo == pytest.approx(-0.4985, abs=2e-3) and hi == pytest.approx(0.9985, abs=2e-3)


def test_qat_recipe_trains_resumes_and_gets_an_int8_tail(tiny, tmp_path):
    sets = ["qat.enabled=true", "qat.tail=true", "qat.recalibrate=2", "optim.ema=0.9",
            "val_every=1000"]
    cfg = load_config(tiny, sets)
    lines: list[str] = []
    full = Trainer(cfg, tmp_path / "full", log=lines.append)
    final = full.run()
    assert any("qat: int8 rounding simulated (last convolution int8)" in x for x in lines)
    plain = UpNet(scale=2, **full.model.hparams)
    assert full.model.state_dict().keys() == plain.state_dict().keys()  # checkpoints as ever
    assert "forward" not in vars(full.ema.tail)  # the exported EMA copy is plain float
    Trainer(cfg, tmp_path / "half", log=lambda _: None).run(until=3)  # ranges of step 2
    resumed = Trainer(cfg, tmp_path / "half", log=lambda _: None)
    resumed.run(resume=True)
    for (k, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values(),
                         strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=k)
    up = upres.load(final, device="cpu")
    assert int8_tail(up.card) and not int8_tail(_net()[1])
    graph = quantize_int8(up.model, up.card, crops=load_calibration()[:4])
    g = onnx.load_from_string(graph).graph
    tail = [n for n in g.node if n.op_type == "Conv"][-1]
    assert tail.input[0].endswith("DequantizeLinear_Output")  # its input is int8
    meta = {e.key: e.value for e in onnx.load_from_string(graph).metadata_props}
    assert "the last int8" in meta["upres"]


@pytest.mark.parametrize("sets, words", [
    (["qat.enabled=true", "model.arch=rfdn", "model.params={}"], "upnet"),
    (["qat.enabled=true", "model.params.act=prelu"], "act relu"),
    (["qat.tail=true"], "needs qat.enabled"),
    (["qat.enabled=true", "qat.percentile=0"], "qat.percentile"),
    (["qat.enabled=true", "qat.recalibrate=0"], "qat.recalibrate"),
    (["qat.enabled=true", "model.denoise_base=x2.safetensors"], "denoise_base"),
])
def test_qat_recipes_that_cannot_run_are_refused(tiny, sets, words):
    with pytest.raises(UpresError, match=words):
        load_config(tiny, sets)


def test_a_last_convolution_that_starts_at_zero_still_learns():
    """UpNet's last convolution starts at zero: its output range measures as zero width, is
    left unrounded until measured again, and gradients reach every layer."""
    torch.manual_seed(0)
    net = UpNet(scale=2, channels=8, depth=2)
    card = ModelCard(name="t", arch="upnet", scale=2, hparams=net.hparams, params=0)
    sim = QatSim(net, calibration_inputs(load_calibration()[:4], card), tail=True)
    assert "tail_out" not in sim.calibrate() and "tail_in" in sim.ranges
    with torch.no_grad():
        net.tail.weight.normal_(0, 0.05)  # as after the first optimizer step
    x = torch.rand(2, 3, 16, 16)
    net(x).sub(torch.rand(2, 3, 32, 32)).square().mean().backward()
    assert net.head.weight.grad.abs().sum() > 0 and net.tail.weight.grad.abs().sum() > 0


def test_validation_without_ema_scores_the_float_network(tiny, tmp_path):
    """With qat on and EMA off the trained model itself is exported: its validation (and so
    best.safetensors and the card's PSNR) is the float network's, as upres eval scores it."""
    from upres.evaluate import evaluate

    from conftest import BENCH

    cfg = load_config(tiny, ["qat.enabled=true", "qat.tail=true", "optim.ema=0",
                             "val_every=1000"])
    t = Trainer(cfg, tmp_path / "run", log=lambda _: None)
    final = t.run()
    up = upres.load(final, device="cpu", precision="fp32")
    plain = evaluate(up.upscale, model_name="m", dataset=BENCH / "Set5", scale=2,
                     with_ssim=False).psnr_y
    assert t.validate()["Set5"] == pytest.approx(plain, abs=1e-9)
    assert t.qat.enabled  # and the rounding is back on for training
