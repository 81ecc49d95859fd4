"""Compatibility proof: the authors' own weights, loaded into upres's implementations, reproduce
the Set5 PSNR-Y measured with the authors' code (standard protocol), within 0.05 dB."""

from __future__ import annotations

import pytest

import upres
from upres.evaluate import evaluate, load_benchmark

from conftest import BENCH, PEERS

PT = PEERS / "pytorch"
# (file, scale) -> (Set5 PSNR-Y measured with the authors' code, arch, colour, value range)
TABLE = {
    ("IMDN/IMDN_x2.pth", 2): (37.99, "imdn", "rgb", 1.0),
    ("IMDN/IMDN_x3.pth", 3): (34.36, "imdn", "rgb", 1.0),
    ("IMDN/IMDN_x4.pth", 4): (32.21, "imdn", "rgb", 1.0),
    ("CARN-M/carn_m.pth", 2): (37.68, "carn_m", "rgb", 1.0),
    ("CARN-M/carn_m.pth", 3): (34.06, "carn_m", "rgb", 1.0),
    ("CARN-M/carn_m.pth", 4): (31.88, "carn_m", "rgb", 1.0),
    ("RFDN/RFDN_AIM.pth", 4): (32.16, "rfdn", "rgb", 255.0),
    ("SAFMN/SAFMN_NTIRE2023_x4.pth", 4): (32.16, "safmn", "rgb", 1.0),
    ("FSRCNN_yjn870/fsrcnn_x2.pth", 2): (37.12, "fsrcnn", "y", 1.0),
    ("FSRCNN_yjn870/fsrcnn_x3.pth", 3): (32.60, "fsrcnn", "y", 1.0),
    ("FSRCNN_yjn870/fsrcnn_x4.pth", 4): (30.52, "fsrcnn", "y", 1.0),
}


@pytest.fixture(scope="module")
def set5():
    return {s: load_benchmark(BENCH / "Set5", s) for s in (2, 3, 4)}


@pytest.mark.parametrize(("path", "scale"), sorted(TABLE))
def test_official_weights_reproduce_set5(set5, path, scale):
    want, arch, color, value_range = TABLE[(path, scale)]
    f = PT / path
    if not f.is_file():
        pytest.skip(f"{f} absent")
    up = upres.load(f, device="cpu", scale=scale)
    assert (up.card.arch, up.card.color, up.card.value_range) == (arch, color, value_range)
    res = evaluate(lambda lr: up.upscale(lr, tile=0), model_name=path, dataset=BENCH / "Set5",
                   scale=scale, with_ssim=False, images=set5[scale])
    assert abs(res.psnr_y - want) <= 0.05, f"{path} x{scale}: {res.psnr_y:.3f} vs {want}"


def test_carn_m_is_one_net_for_three_scales():
    ups = [upres.load(PT / "CARN-M" / "carn_m.pth", scale=s) for s in (2, 3, 4)]
    assert [u.scale for u in ups] == [2, 3, 4]
    assert len({u.card.params for u in ups}) == 1  # the same weights file, all three upsamplers


@pytest.mark.parametrize(("path", "arch", "scale", "floor"), [
    ("RealESRGAN_animevideov3/realesr-animevideov3.pth", "srvgg", 4, 27.5),
    ("SRGAN_leftthomas/netG_epoch_2_100.pth", "srresnet", 2, 35.0),
    ("SRGAN_leftthomas/netG_epoch_4_100.pth", "srresnet", 4, 30.0),
    ("SRGAN_leftthomas/netG_epoch_8_100.pth", "srresnet", 8, 25.5),
])
def test_gan_generators_load_and_upscale(path, arch, scale, floor):
    """No published figure to match: the SRGAN generators must beat bicubic (33.67 / 28.43 /
    24.40 dB at x2 / x4 / x8) by over 1 dB, and the anime model stay within 1 dB of it on
    photos; wrong layouts or value ranges score far lower."""
    f = PT / path
    if not f.is_file():
        pytest.skip(f"{f} absent")
    up = upres.load(f, device="cpu")
    assert (up.card.arch, up.scale) == (arch, scale)
    res = evaluate(lambda lr: up.upscale(lr, tile=0), model_name=path,
                   dataset=BENCH / "Set5", scale=scale, with_ssim=False)
    assert res.psnr_y > floor, res.psnr_y
