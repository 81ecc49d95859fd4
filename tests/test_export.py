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


def test_photo_model_exports_the_strength_it_is_given(tmp_path, capsys):
    # the photo model's file alone is strength 1: a graph must be told which network it holds
    # a folder as -o is refused before an int8 export calibrates
    assert main(["export", "-m", "tiny-x2", "--int8", "-o", str(tmp_path), "--overwrite"]) == 2
    assert "is a folder" in capsys.readouterr().err
    out = tmp_path / "p.onnx"
    assert main(["export", "-m", "photo-x2", "-o", str(out)]) == 2
    assert "--denoise 0..1" in capsys.readouterr().err and not out.exists()
    assert main(["export", "-m", "x2", "-o", str(out), "--denoise", "0.5"]) == 2
    assert "not a photo model" in capsys.readouterr().err and not out.exists()
    img = read_image(BENCH / "Set5" / "bird.png")[:48, :40]
    for t in ("0", "0.5"):
        dst = tmp_path / f"p{t}.onnx"
        assert main(["export", "-m", "photo-x2", "-o", str(dst), "--denoise", t]) == 0
        assert f"clean-up strength {float(t):g}" in capsys.readouterr().out
        _, card = load_onnx(dst)
        assert not card.denoise_base and not card.psnr and f"strength {float(t):g}" in card.notes
        assert not card.int8_scan  # (photo-x2's own is for its strength-1 weights)
        assert "automatic" not in card.summary and "auto by default" not in card.notes
        ref = upres.load("photo-x2", device="cpu", precision="fp32", denoise=float(t))
        got = upres.load(str(dst)).upscale(img, tile=0)
        assert np.abs(got.astype(int) - ref.upscale(img, tile=0).astype(int)).max() <= 1
        if t == "0":  # strength 0 is x2's own network
            x2 = upres.load("x2", device="cpu", precision="fp32").upscale(img, tile=0)
            assert np.abs(got.astype(int) - x2.astype(int)).max() <= 1
    strong = upres.load("photo-x2", device="cpu", precision="fp32", denoise=1.0)
    assert np.abs(upres.load(str(tmp_path / "p0.5.onnx")).upscale(img, tile=0).astype(int)
                  - strong.upscale(img, tile=0).astype(int)).max() > 1  # not strength 1


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


def test_graph_says_its_input_convention_to_plain_onnxruntime(tmp_path):
    """Someone running the file in onnxruntime alone learns the value range, channels and
    scale from the file (RFDN-like [0, 255] input here), not only from upres's JSON card."""
    import onnxruntime as ort

    from upres.export import export_onnx

    m, card = _model("upnet", 2)
    card = card.with_(value_range=255.0, min_size=15)
    path = export_onnx(m, card, tmp_path / "m.onnx")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    meta = sess.get_modelmeta()
    assert meta.custom_metadata_map["upres_value_range"] == "255"
    assert meta.custom_metadata_map["upres_scale"] == "2"
    assert "[0, 255]" in meta.description and "RGB" in meta.description
    assert "at least 15" in meta.custom_metadata_map["upres_input"]
    assert "2*height" in meta.custom_metadata_map["upres_output"]
    (inp,), (out,) = sess.get_inputs(), sess.get_outputs()
    assert (inp.name, inp.type, out.name) == ("input", "tensor(float)", "output")
    assert inp.shape == ["batch", 3, "height", "width"]
    _, again = load_onnx(path)  # upres still reads its card
    assert again == card


def test_write_onnx_names_the_file_it_cannot_write_and_parallel_writers(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    from upres.export import write_onnx

    folder = tmp_path / "m.onnx"
    folder.mkdir()
    with pytest.raises(UpresError, match=r"m\.onnx: is a folder"):
        write_onnx(b"x", folder)
    with pytest.raises(UpresError, match=r"a\.onnx: cannot write"):  # no such folder
        write_onnx(b"x", tmp_path / "missing" / "a.onnx")
    # several jobs exporting to one path: each write whole, none failing on another's
    # temporary file (one shared temporary name made them fail or rename a partial file)
    out = tmp_path / "same.onnx"
    datas = [bytes([i]) * (4 << 20) for i in range(8)]
    for _ in range(3):
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda d: write_onnx(d, out), datas))
        assert out.read_bytes() in datas
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "same.onnx"]


def test_opsets_outside_the_exporters_range_are_one_line(tmp_path, capfd):
    """--opset 999 and 3 printed the exporter's 70-line dump; 0 exported opset 20 silently;
    an op missing at an accepted opset is the exporter's first line, not its dump."""
    for bad in ("999", "3", "0", "-1"):
        assert main(["export", "-m", "tiny-x2", "--opset", bad,
                     "-o", str(tmp_path / "o.onnx")]) == 2
        err = capfd.readouterr().err.strip().splitlines()
        assert err == [f"upres: --opset must be 9 to 20, got {bad}"], err
    assert main(["export", "-m", "tiny-x2", "-o", str(tmp_path / "o.png")]) == 2
    assert capfd.readouterr().err.strip().endswith("name the ONNX file with the suffix .onnx")
    assert not list(tmp_path.iterdir())
    assert main(["export", "-m", "tiny-x2", "--opset", "9", "-o", str(tmp_path / "9.onnx")]) == 0
    img = read_image(BENCH / "Set5" / "baby.png")[:32, :32]
    got = upres.load(str(tmp_path / "9.onnx")).upscale(img)
    want = upres.load("tiny-x2", device="cpu", precision="fp32").upscale(img)
    assert np.abs(got.astype(int) - want.astype(int)).max() <= 1
    net = REGISTRY.build("upnet", {"channels": 8, "depth": 1, "scale": 2})
    card = ModelCard(name="t", arch="upnet", scale=2, hparams={"channels": 8, "depth": 1},
                     params=0)
    with pytest.raises(UpresError, match=r"^opset must be 9 to 20, got 7$"):
        onnx_bytes(net, card, opset=7)

    class Bicubic(torch.nn.Module):  # an op the exporter has only from opset 11
        def forward(self, x):
            return torch.nn.functional.interpolate(x, scale_factor=2, mode="bicubic")

    capfd.readouterr()
    with pytest.raises(UpresError, match=r"^t: ONNX export at opset 9 failed \(.*bicubic"):
        onnx_bytes(Bicubic(), card.with_(arch="custom"), opset=9)
    assert capfd.readouterr().out == ""  # the exporter's graph dump is not printed
