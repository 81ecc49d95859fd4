"""Every registered architecture: forward shape, backward, save/load round trip, detection from a
third-party-style .pth, and tiled == untiled inference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from upres.errors import UpresError
from upres.inference.upscaler import Upscaler
from upres.models import REGISTRY, ArchSpec, ModelCard, Registry, load_model, save_model
from upres.models.weights import canonicalize

from conftest import PEERS, SCALES, SMALL


def _in_ch(arch: str) -> int:
    return int(SMALL[arch].get("in_ch", 1 if REGISTRY.get(arch).defaults.get("color") == "y"
                               else 3))


def _factor(arch: str, scale: int) -> int:
    """How much the network itself enlarges (pre-upsampling networks keep the size)."""
    return 1 if REGISTRY.get(arch).defaults.get("pre_upsample") else scale


def _build(arch: str, scale: int) -> torch.nn.Module:
    torch.manual_seed(0)
    m = REGISTRY.build(arch, {**SMALL.get(arch, {}), "scale": scale})
    # Non-zero weights everywhere, so that round trips and tiling are tested on real signal.
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return m.eval()


ARCHS = REGISTRY.names()


def test_every_arch_has_small_test_params():
    assert set(ARCHS) <= set(SMALL), "add small hyper-parameters for the new architecture"


@pytest.mark.parametrize("arch", ARCHS)
def test_forward_backward_every_scale_odd_sizes(arch):
    for scale in SCALES.get(arch, (2, 3, 4)):
        m = _build(arch, scale).train()
        c, f = _in_ch(arch), _factor(arch, scale)
        h, w = (16, 18) if arch == "rrdbnet" and scale == 2 else (15, 17)  # even sizes at x2
        x = torch.rand(2, c, h, w, requires_grad=True)
        y = m(x)
        assert y.shape == (2, c, h * f, w * f) and y.dtype == torch.float32
        y.mean().backward()
        trainable = [p for p in m.parameters() if p.requires_grad]
        assert trainable and all(p.grad is not None and torch.isfinite(p.grad).all()
                                 for p in trainable)


@pytest.mark.parametrize("arch", ARCHS)
def test_bf16_runs(arch):
    m = _build(arch, 4)
    x = torch.rand(1, _in_ch(arch), 16, 16)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        y = m(x)
    assert torch.isfinite(y.float()).all()


@pytest.mark.parametrize("arch", ARCHS)
def test_safetensors_round_trip(arch, tmp_path):
    m = _build(arch, 4)
    hp = {**SMALL[arch], "scale": 4}
    card = ModelCard(name="t", arch=arch, scale=4, hparams=hp,
                     params=sum(p.numel() for p in m.parameters()), psnr={"Set5": 1.0})
    path = save_model(tmp_path / "t.safetensors", m, card)
    m2, card2 = load_model(path)
    assert card2 == card
    x = torch.rand(1, _in_ch(arch), 16, 17)
    torch.testing.assert_close(m(x), m2(x), rtol=0, atol=0)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("wrap", ["plain", "params_ema", "module"])
def test_detect_third_party_pth(arch, wrap, tmp_path):
    m = _build(arch, 4)
    sd = m.state_dict()
    if wrap == "params_ema":
        obj = {"params_ema": sd, "iter": 5}
    elif wrap == "module":
        obj = {"state_dict": {f"module.{k}": v for k, v in sd.items()}}
    else:
        obj = sd
    if arch == "swinir":  # the authors' files also hold the shifted windows' attention masks
        obj = {**obj, "layers.0.residual_group.blocks.1.attn_mask": torch.zeros(4, 16, 16)}
    torch.save(obj, tmp_path / "w.pth")
    m2, card = load_model(tmp_path / "w.pth")
    assert card.arch == arch and card.scale == 4
    x = torch.rand(1, _in_ch(arch), 16, 16)
    torch.testing.assert_close(m(x), m2(x), rtol=0, atol=0)


def test_tile_exactness_is_declared():
    """Only networks with image-size-dependent pooling may say tiles differ from the whole."""
    assert {a for a in ARCHS if not REGISTRY.get(a).tile_exact} == {"rfdn", "safmn"}


@pytest.mark.parametrize("arch", [a for a in ARCHS if REGISTRY.get(a).tile_exact])
@pytest.mark.parametrize("tile", [24, 40])
def test_tiled_equals_untiled(arch, tile):
    card = ModelCard("t", arch, 2, {}, 0, **REGISTRY.get(arch).defaults)
    up = Upscaler(_build(arch, 2), card, device="cpu")
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (67, 75, 3), dtype=np.uint8)
    whole = up.upscale(img, tile=0)
    tiled = up.upscale(img, tile=tile, tile_overlap=16)
    assert np.abs(whole.astype(int) - tiled.astype(int)).max() <= 1


def test_pickled_whole_model_is_refused(tmp_path):
    """A .pth that needs arbitrary unpickling is refused, never executed."""
    path = tmp_path / "evil.pth"
    torch.save(torch.nn.Conv2d(1, 1, 3), path)  # a whole pickled module
    with pytest.raises(UpresError, match="refused"):
        load_model(path)


def test_official_vdsr_pickle_is_refused():
    vdsr = next(iter(sorted((PEERS / "pytorch" / "VDSR").glob("*.pth"))), None)
    if vdsr is None:
        pytest.skip("VDSR peer file absent")
    with pytest.raises(UpresError, match="refused"):
        load_model(vdsr)


def test_unknown_state_dict_names_keys(tmp_path):
    torch.save({"foo.weight": torch.zeros(3), "bar.bias": torch.zeros(1)}, tmp_path / "x.pth")
    with pytest.raises(UpresError, match=r"keys seen: foo\.weight, bar\.bias"):
        load_model(tmp_path / "x.pth")


def test_registry_rejects_duplicates_and_unknown():
    reg = Registry()
    spec = ArchSpec("a", torch.nn.Identity, lambda s: None, "")
    reg.register(spec)
    with pytest.raises(ValueError):
        reg.register(spec)
    with pytest.raises(UpresError, match="unknown architecture"):
        REGISTRY.get("nope")


def test_canonicalize_rejects_non_dicts():
    with pytest.raises(UpresError):
        canonicalize([1, 2])
    with pytest.raises(UpresError, match="no tensors"):
        canonicalize({"iter": 3})


def test_non_weights_file_is_named_as_such(tmp_path):
    f = tmp_path / "recipe.yaml"
    f.write_text("name: x\n")
    with pytest.raises(UpresError, match="not a weights file"):
        load_model(f)


def test_upnet_unshuffle_variant(tmp_path):
    """UpNet with ``unshuffle=2``: nearest-neighbour at init, detected back from a bare .pth with
    its size multiple, and odd-sized images (padded to the multiple) tile exactly."""
    m = REGISTRY.build("upnet", {"scale": 3, "channels": 8, "depth": 2, "unshuffle": 2})
    x = torch.rand(1, 3, 10, 14)
    torch.testing.assert_close(m(x), torch.nn.functional.interpolate(x, scale_factor=3),
                               rtol=0, atol=0)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    torch.save(m.state_dict(), tmp_path / "u.pth")
    m2, card = load_model(tmp_path / "u.pth")
    assert card.hparams["unshuffle"] == 2 and card.scale == 3 and card.size_multiple == 2
    torch.testing.assert_close(m(x), m2(x), rtol=0, atol=0)
    up = Upscaler(m2, card, device="cpu")
    img = np.random.default_rng(1).integers(0, 256, (33, 47, 3), dtype=np.uint8)
    whole = up.upscale(img, tile=0)
    assert whole.shape == (99, 141, 3)
    np.testing.assert_array_equal(up.upscale(img, tile=16, tile_overlap=12), whole)
    with pytest.raises(ValueError, match="unshuffle"):
        REGISTRY.build("upnet", {"scale": 2, "unshuffle": 3})
