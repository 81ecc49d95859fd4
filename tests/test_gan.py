"""GAN training: discriminators, adversarial and perceptual losses, and a few real GAN steps on
CPU (losses finite, both networks update, the discriminator resumes with the run)."""

from __future__ import annotations

import json

import pytest
import torch

from upres.errors import UpresError
from upres.models.discriminators import DISCRIMINATORS, build_discriminator
from upres.train.config import load_config
from upres.train.gan import ADV_LOSSES, PerceptualLoss, VGG19Features, d_loss, g_loss
from upres.train.trainer import Trainer


@pytest.mark.parametrize("name", sorted(DISCRIMINATORS))
def test_discriminators_shapes_spectral_norm_and_gradients(name):
    torch.manual_seed(0)
    d = build_discriminator(name, {"num_feat": 8})
    x = torch.rand(2, 3, 64, 48, requires_grad=True)
    out = d(x)
    expect = (2, 1, 64, 48) if name == "unet_sn" else (2, 1, 4, 3)
    assert out.shape == expect
    out.mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert any("weight_orig" in k for k, _ in d.named_parameters())  # spectral norm
    with pytest.raises(ValueError, match="unknown discriminator"):
        build_discriminator("patchgan9000")


@pytest.mark.parametrize("kind", ADV_LOSSES)
def test_adversarial_losses_reward_the_right_side(kind):
    real_good, fake_good = torch.full((4, 1, 8, 8), 3.0), torch.full((4, 1, 8, 8), -3.0)
    # A discriminator that separates well has a lower loss than one that is fooled.
    assert d_loss(kind, real_good, fake_good) < d_loss(kind, fake_good, real_good)
    # A generator whose fakes look real has a lower loss.
    assert g_loss(kind, real_good, fake_good) < g_loss(kind, fake_good, real_good)
    for v in (d_loss(kind, torch.randn(3, 1), torch.randn(3, 1)),
              g_loss(kind, torch.randn(3, 1), torch.randn(3, 1))):
        assert torch.isfinite(v) and v.dim() == 0
    if kind == "hinge":
        assert float(d_loss(kind, torch.full((2,), 1.5), torch.full((2,), -1.5))) == 0.0


def _fake_vgg19(path):
    """VGG19 features with random weights in torchvision's key layout (no ImageNet weights can
    be downloaded here; the loader and the loss are what is tested)."""
    torch.manual_seed(1)
    net = VGG19Features({"conv5_4": 1.0})
    state = {f"features.{k}": v for k, v in net.features.state_dict().items()}
    torch.save(state, path)
    return path


def test_perceptual_loss_from_a_user_file(tmp_path):
    path = _fake_vgg19(tmp_path / "vgg19.pth")
    layers = {"conv3_4": 0.5, "conv5_4": 1.0}
    feats = VGG19Features.from_file(path, layers)
    loss = PerceptualLoss(feats, layers)
    a, b = torch.rand(1, 3, 48, 48), torch.rand(1, 3, 48, 48)
    assert float(loss(a, a)) == 0.0
    assert float(loss(a, b)) > 0
    with pytest.raises(UpresError, match="not found"):
        VGG19Features.from_file(tmp_path / "missing.pth", layers)
    (tmp_path / "junk.pth").write_bytes(b"junk")
    with pytest.raises(UpresError, match="cannot read"):
        VGG19Features.from_file(tmp_path / "junk.pth", layers)
    torch.save({"something.else": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(UpresError, match="not VGG19"):
        VGG19Features.from_file(tmp_path / "other.pth", layers)
    with pytest.raises(ValueError, match="unknown VGG19 layer"):
        VGG19Features({"conv9_9": 1.0})


def _gan_overrides(kind: str, disc: str) -> list[str]:
    return ["optim.steps=4", "val_every=4", "ckpt_every=2", "log_every=2", "gan.weight=0.1",
            f"gan.loss={kind}", f"gan.discriminator={disc}", "gan.d_params={num_feat: 8}",
            "data.patch=16", "scale=2"]


@pytest.mark.parametrize(("kind", "disc"), [("vanilla", "unet_sn"), ("lsgan", "vgg_patch"),
                                            ("hinge", "unet_sn"), ("ragan", "unet_sn")])
def test_a_few_gan_steps_update_both_networks(tiny, tmp_path, kind, disc):
    cfg = load_config(tiny, _gan_overrides(kind, disc))
    tr = Trainer(cfg, tmp_path / "run", log=lambda _: None)
    g0 = {k: v.clone() for k, v in tr.model.state_dict().items()}
    d0 = {k: v.clone() for k, v in tr.gan.d.state_dict().items()}
    tr.run()
    g_changed = any(not torch.equal(g0[k], v) for k, v in tr.model.state_dict().items())
    d_changed = any(not torch.equal(d0[k], v) for k, v in tr.gan.d.state_dict().items())
    assert g_changed and d_changed
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
            if "loss" in x]
    for r in rows:
        for key in ("loss", "adv", "d_loss", "d_real", "d_fake"):
            assert key in r and r[key] == r[key] and abs(r[key]) < 1e6, (key, r)  # finite
    assert "d_loss" in (tmp_path / "run" / "train.log").read_text()


def test_gan_steps_under_bf16_autocast_run_the_discriminator_in_bf16(tiny, tmp_path):
    cfg = load_config(tiny, [*_gan_overrides("vanilla", "unet_sn"), "optim.amp=bf16",
                                  "optim.channels_last=true"])
    tr = Trainer(cfg, tmp_path / "run", log=lambda _: None)
    seen = []
    first = next(m for m in tr.gan.d.modules() if isinstance(m, torch.nn.Conv2d))
    first.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    d0 = {k: v.clone() for k, v in tr.gan.d.state_dict().items()}
    tr.run()
    assert seen and set(seen) == {torch.bfloat16}
    assert all(v.dtype == torch.float32 for v in tr.gan.d.state_dict().values()
               if v.is_floating_point())  # master weights stay fp32
    assert any(not torch.equal(d0[k], v) for k, v in tr.gan.d.state_dict().items())
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
            if "d_loss" in x]
    assert rows and all(abs(r["d_loss"]) < 1e6 and r["adv"] == r["adv"] for r in rows)


def test_gan_run_resumes_its_discriminator(tiny, tmp_path):
    ov = _gan_overrides("ragan", "unet_sn")
    whole = Trainer(load_config(tiny, ov), tmp_path / "a", log=lambda _: None)
    whole.run()
    part = Trainer(load_config(tiny, ov), tmp_path / "b", log=lambda _: None)
    part.run(until=2)
    again = Trainer(load_config(tiny, ov), tmp_path / "b", log=lambda _: None)
    again.run(resume=True)
    for k, v in whole.gan.d.state_dict().items():
        torch.testing.assert_close(again.gan.d.state_dict()[k], v, rtol=0, atol=0)
    for k, v in whole.model.state_dict().items():
        torch.testing.assert_close(again.model.state_dict()[k], v, rtol=0, atol=0)


def test_perceptual_and_d_start_in_a_recipe(tiny, tmp_path):
    path = _fake_vgg19(tmp_path / "vgg19.pth")
    ov = [*_gan_overrides("vanilla", "vgg_patch"), "gan.d_start=2",
          "gan.perceptual_weight=0.1", f"gan.perceptual_weights={path}",
          "gan.perceptual_layers={conv2_2: 1.0}", "data.patch=24"]
    tr = Trainer(load_config(tiny, ov), tmp_path / "run", log=lambda _: None)
    tr.run()
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
            if "loss" in x]
    assert "percep" in rows[0] and "d_loss" not in rows[0]  # steps 0-1: before d_start
    assert "d_loss" in rows[1]
    with pytest.raises(UpresError, match="perceptual_weights"):
        load_config(tiny, ["gan.perceptual_weight=1"])
    with pytest.raises(UpresError, match=r"gan\.loss"):
        load_config(tiny, ["gan.loss=wgan"])


def test_level_power_scales_the_adversarial_term_by_the_batch_level(tiny, tmp_path, monkeypatch):
    """gan.level_power p with model.denoise_base: a batch of damage level t adds t**p times the
    adversarial term (logged as ``adv``); without denoise_base the key is refused."""
    from upres.cli import main
    from upres.data.datasets import PairedPatchSampler
    from upres.train.gan import GanTrainer

    base_run = tmp_path / "base"
    assert main(["train", str(tiny), "--run-dir", str(base_run), "--set", "data.val=[]"]) == 0
    base = base_run / "final.safetensors"
    sets = ["optim.steps=4", "log_every=1", "data.val=[]", "gan.weight=0.1",
            "gan.d_params={num_feat: 8}", "gan.level_power=2", "data.degradation=leveled",
            "data.variants=4", f"model.denoise_base={base}", f"model.init={base}"]
    with pytest.raises(UpresError, match="level_power"):
        load_config(tiny, [s for s in sets if "denoise_base" not in s])
    levels: list[float] = []
    orig = PairedPatchSampler.sample_level

    def spy(self, *a, **k):
        out = orig(self, *a, **k)
        levels.append(out[2])
        return out

    def unit(self, pred, hr, step):  # an adversarial term of exactly 1 (with a gradient)
        return {"adv": pred.mean() * 0 + 1.0}

    monkeypatch.setattr(PairedPatchSampler, "sample_level", spy)
    monkeypatch.setattr(GanTrainer, "generator_terms", unit)
    Trainer(load_config(tiny, sets), tmp_path / "run", log=lambda _: None).run()
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
            if '"adv"' in x]
    assert len(rows) == len(levels) == 4 and len(set(levels)) > 1
    for r, t in zip(rows, levels, strict=True):
        assert r["adv"] == pytest.approx(t ** 2)
