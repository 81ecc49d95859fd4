"""ONNX export (``upres export``) and the onnxruntime backend: the ONNX graph computes what the
PyTorch network computes, at any size and batch, and runs through the ordinary Upscaler."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import upres
from upres.cli import main
from upres.errors import UpresError
from upres.export import OnnxNet, load_onnx, onnx_bytes
from upres.io import read_image
from upres.models import REGISTRY, ModelCard

from conftest import BENCH, SMALL

EXPORTABLE = [a for a in REGISTRY.names() if REGISTRY.get(a).onnx]


def _model(arch: str, scale: int, extra: dict | None = None) -> tuple[torch.nn.Module, ModelCard]:
    torch.manual_seed(0)
    spec = REGISTRY.get(arch)
    hp = {**SMALL[arch], **(extra or {}), "scale": scale}
    m = REGISTRY.build(arch, hp)
    with torch.no_grad():  # non-zero weights everywhere: compare real signal
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    card = ModelCard(name=f"test-{arch}", arch=arch, scale=scale, hparams=hp,
                     params=sum(p.numel() for p in m.parameters()), **spec.defaults)
    return m.eval(), card


@pytest.mark.parametrize(("arch", "extra"), [(a, None) for a in EXPORTABLE]
                         + [("upnet", {"unshuffle": 2})])
def test_onnx_equals_pytorch(arch, extra):
    scale = 2
    m, card = _model(arch, scale, extra)
    net = OnnxNet(onnx_bytes(m, card), threads=1)
    ch = 1 if card.color == "y" else 3
    odd = 1 if getattr(m, "size_multiple", 1) == 1 else 0  # RRDBNet x2 needs even sides
    for shape in [(1, ch, 24, 32), (2, ch, 18 + odd, 26 + odd)]:  # batch, height, width dynamic
        x = torch.rand(shape) * card.value_range
        with torch.inference_mode():
            ref = m(x)
        got = net(x)
        assert got.shape == ref.shape
        err = float((got - ref).abs().max()) / card.value_range
        assert err < 1e-4, (arch, shape, err)


@pytest.mark.parametrize("arch", sorted(set(REGISTRY.names()) - set(EXPORTABLE)))
def test_size_dependent_archs_are_refused_with_a_reason(arch):
    assert arch in ("safmn", "swinir")
    m, card = _model(arch, 2)
    with pytest.raises(UpresError, match="cannot be exported to ONNX"):
        onnx_bytes(m, card)


def test_export_cli_and_onnx_file_upscale_like_pytorch(tmp_path, capsys):
    out = tmp_path / "x2.onnx"
    assert main(["export", "-m", "x2", "--format", "onnx", "-o", str(out)]) == 0
    assert "dynamic" in capsys.readouterr().out
    assert main(["export", "-m", "x2", "-o", str(out)]) == 2  # never overwritten silently
    assert "exists" in capsys.readouterr().err
    _, card = load_onnx(out)
    assert card.name == "x2" and card.scale == 2
    img = read_image(BENCH / "Set5" / "butterfly.png")
    ref = upres.load("x2", device="cpu").upscale(img, tile=0)
    via_file = upres.load(str(out))
    assert via_file.backend == "onnxruntime"
    got = via_file.upscale(img, tile=0)
    assert np.abs(got.astype(int) - ref.astype(int)).max() <= 1
    # Tiled through onnxruntime equals whole (the Upscaler's tiling is backend-independent).
    np.testing.assert_array_equal(via_file.upscale(img, tile=64), got)
    # The CLI backend switch: the same pixels as loading the exported file.
    dst = tmp_path / "b.png"
    assert main(["upscale", str(BENCH / "Set5" / "butterfly.png"), "-m", "x2", "--backend",
                 "onnxruntime", "-o", str(dst), "-q"]) == 0
    np.testing.assert_array_equal(read_image(dst), got)


def test_load_onnx_refuses_foreign_or_damaged_files(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a protobuf at all" * 3)
    with pytest.raises(UpresError, match=r"bad\.onnx"):
        upres.load(str(bad))
    import onnx

    m, _ = _model("upnet", 2)
    plain = tmp_path / "plain.onnx"
    with pytest.warns(DeprecationWarning):  # torch's TorchScript exporter, as upres uses it
        torch.onnx.export(m, (torch.rand(1, 3, 16, 16),), str(plain), dynamo=False)
    assert onnx.load(str(plain)).graph.node
    with pytest.raises(UpresError, match="without an upres model card"):
        upres.load(str(plain))


def test_uint8_pixels_path_fallbacks_and_padding(tmp_path, monkeypatch):
    """8-bit RGB from an onnxruntime graph: pixels straight out of the graph where it can
    (one session, made once even when threads ask together), the float path where it cannot
    (an opset-10 graph has no Clip with bound inputs); both give the same pixels, also when
    the input is padded to the network's size multiple."""
    from concurrent.futures import ThreadPoolExecutor

    import upres.export as export
    from upres.export import export_onnx
    from upres.models import zoo
    from upres.models.weights import load_model

    img = read_image(BENCH / "Set14" / "baboon.png")[:37, :45]
    ref = upres.load("tiny-x2", device="cpu").upscale(img)  # torch fp32
    net, card = load_model(zoo.resolve("tiny-x2"))
    made = []
    build = export._with_uint8_output
    monkeypatch.setattr(export, "_with_uint8_output", lambda src: made.append(1) or build(src))
    outs = {}
    for opset in (10, 17):
        path = export_onnx(net, card, tmp_path / f"o{opset}.onnx", opset=opset)
        up = upres.load(str(path))
        with ThreadPoolExecutor(4) as pool:  # first calls at once: one session
            results = list(pool.map(lambda _, up=up: up.upscale(img), range(4)))
        assert up.model.uint8_ready() is (opset >= 11), opset
        assert len(made) == 1, made
        made.clear()
        for r in results:
            np.testing.assert_array_equal(r, results[0])
        outs[opset] = results[0]
        up.size_multiple = 8  # padded input, cropped output: the same on both paths
        padded = up.upscale(img)
        f = up.upscale(img.astype(np.float32) / np.float32(255))  # the float path
        assert padded.shape == results[0].shape
        np.testing.assert_array_equal(
            padded, np.floor(np.clip(f, 0, 1) * 255 + 0.5).astype(np.uint8))
    np.testing.assert_array_equal(outs[10], outs[17])
    assert np.abs(outs[17].astype(int) - ref).max() <= 1
