"""scripts/fit_level.py --objective psnr: the loss it trains the estimator with is the dB lost
against each crop's best strength, read off the measured PSNR curve; ``--kind --init`` from an
estimator without the kind output keeps its level; ``--fit-map`` finds the map from a reading
to the strength that the crops' curves are best at."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
from fit_level import STRENGTHS, curve_at, fit_map, init_state, regret


def test_curve_at_interpolates_between_the_measured_strengths():
    curves = torch.from_numpy(np.array([np.linspace(30.0, 32.0, len(STRENGTHS)),
                                        [30.0, 31.0, 30.0, 29.0, 28.0, 27.0, 26.0, 25.0, 24.0]],
                                       dtype=np.float32))
    t = torch.tensor([0.0625, 0.0625], requires_grad=True)  # halfway to the second strength
    got = curve_at(curves, t)
    assert got.tolist() == pytest.approx([30.125, 30.5])
    got.sum().backward()  # the slope between the two strengths around t, per dB of strength
    assert t.grad.tolist() == pytest.approx([2.0, 8.0])
    ends = curve_at(curves, torch.tensor([1.0, 1.3]))  # the last strength; beyond it, clipped
    assert ends.tolist() == pytest.approx([32.0, 24.0])
    assert curve_at(curves, torch.tensor([-0.2, 0.125])).tolist() == pytest.approx([30.0, 31.0])


def test_regret_is_the_loss_against_the_best_strength_and_gain_over_zero():
    curves = np.array([[30.0, 31.0, 30.0, 29.0, 28.0, 27.0, 26.0, 25.0, 24.0],
                       np.linspace(30.0, 32.0, len(STRENGTHS))], dtype=np.float32)
    lost, gain = regret(np.array([0.125, 1.0]), curves)  # both at their best
    assert (lost, gain) == pytest.approx((0.0, 1.5))
    lost, gain = regret(np.array([0.0, 0.5]), curves)
    assert (lost, gain) == pytest.approx(((1.0 + 1.0) / 2, (0.0 + 1.0) / 2))


def test_init_state_gives_a_kind_estimator_the_level_of_a_plain_one(tmp_path):
    from safetensors.torch import save_file

    from upres.inference.level import LevelNet

    torch.manual_seed(0)
    plain = LevelNet()
    path = tmp_path / "plain.safetensors"
    save_file({k: v.contiguous() for k, v in plain.state_dict().items()}, str(path))
    kind = LevelNet(kind=True)
    fresh = kind.state_dict()["head.2.weight"][1].clone()
    kind.load_state_dict(init_state(str(path), kind))
    x, extra = torch.rand(4, 3, 64, 64), torch.rand(4, 2)
    with torch.no_grad():
        level, logit = kind.both(x, extra, group=2)
        assert torch.equal(level, plain(x, extra, group=2)) and logit.shape == (2,)
    assert torch.equal(kind.state_dict()["head.2.weight"][1], fresh)
    again = LevelNet()  # a plain estimator takes a plain one's weights as they are
    again.load_state_dict(init_state(str(path), again))


def test_fit_map_moves_the_strength_to_where_the_curves_peak():
    """Every crop reads the same (a constant estimator: everyday level 0.4, blind probability
    0.25, so the identity gives 0.55) and every curve peaks at strength 0.75: the fitted map
    gives 0.75, gaining over the identity on the fitted and the held-out crops; a threshold
    over the reading leaves every crop at 0 whatever the map."""
    from upres.inference.level import IDENTITY, LevelNet, strength_of

    net = LevelNet(kind=True).eval()
    with torch.no_grad():
        net.head[-1].weight.zero_()
        net.head[-1].bias.copy_(torch.tensor([float(np.log(0.4 / 0.6)), float(np.log(1 / 3))]))
    rng = np.random.default_rng(0)
    curve = (30.0 - 4.0 * np.abs(STRENGTHS - 0.75)).astype(np.float32)
    data = [(k, rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), 0.75, 1.0, 0.0, False, curve)
            for k in range(12)]
    fit, val = np.arange(10), np.arange(10, 12)
    got = fit_map(net, 0.3, data, fit, val)
    assert strength_of(0.4, 0.25, IDENTITY) == pytest.approx(0.55)
    assert strength_of(0.4, 0.25, got["map"]) == pytest.approx(0.75, abs=0.01)
    for part in ("fit", "held_out"):
        assert got[part]["gain"] > got[part]["identity_gain"] + 0.05
        assert got[part]["gain"] == pytest.approx(got[part]["oracle_gain"], abs=0.01)
    assert got["held_out"]["crops"] == 2
    none = fit_map(net, 0.6, data, fit, val)  # every crop under off: strength 0, no gain
    assert none["fit"]["gain"] == none["fit"]["identity_gain"] == 0.0
