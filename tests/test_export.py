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
