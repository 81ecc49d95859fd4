"""Training on real images: config validation, a short run end to end, resume == uninterrupted."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import yaml

import upres
from upres.cli import main
from upres.data.datasets import PairedPatchSampler, to_float
from upres.errors import UpresError
from upres.io import read_rgb8
from upres.models import REGISTRY
from upres.train.config import load_config
from upres.train.trainer import Trainer, lr_at

from conftest import BENCH, DATA, SCALES, SMALL


def test_unknown_and_mistyped_keys_are_named(tiny, tmp_path):
    with pytest.raises(UpresError, match=r"optim\.stpes"):
        load_config(tiny, ["optim.stpes=5"])
    with pytest.raises(UpresError, match=r"data\.batch"):
        load_config(tiny, ["data.batch=many"])
    with pytest.raises(UpresError, match=r"optim\.loss"):
        load_config(tiny, ["optim.loss=l7"])
    cfg = load_config(tiny, ["optim.lr=0.5"])
    assert cfg.optim.lr == 0.5
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.scale = 3  # type: ignore[misc]


def test_cosine_schedule_ends_at_min_lr(tiny):
    cfg = load_config(tiny, ["optim.steps=100", "optim.min_lr=1e-5"])
    assert lr_at(cfg, 0) == pytest.approx(1e-3)
    assert lr_at(cfg, 100) == pytest.approx(1e-5)
    assert lr_at(cfg, 50) == pytest.approx((1e-3 + 1e-5) / 2)


def test_cosine_warm_restart(tiny):
    cfg = load_config(tiny, ["optim.steps=300", "optim.min_lr=1e-5", "optim.restart=100",
                             "optim.lr=2e-4"])
    plain = load_config(tiny, ["optim.steps=300", "optim.min_lr=1e-5", "optim.lr=2e-4"])
    assert lr_at(cfg, 99) == lr_at(plain, 99) < lr_at(cfg, 100) == pytest.approx(2e-4)
    assert lr_at(cfg, 200) == pytest.approx((2e-4 + 1e-5) / 2)
    assert lr_at(cfg, 300) == pytest.approx(1e-5)
    for bad in ("optim.restart=300", "optim.restart=-5", "optim.warmup=50 optim.restart=20"):
        with pytest.raises(UpresError, match=r"optim\.restart"):
            load_config(tiny, ["optim.steps=300", *bad.split()])


def test_sampler_pairs_are_aligned_and_seeded():
    s = PairedPatchSampler([DATA / "train" / "T91" / "t1.bmp"], scale=3, patch=12)
    lr1, hr1 = s.sample(5, np.random.default_rng(7))
    lr2, hr2 = s.sample(5, np.random.default_rng(7))
    assert lr1.shape == (5, 3, 12, 12) and hr1.shape == (5, 3, 36, 36)
    torch.testing.assert_close(lr1, lr2, rtol=0, atol=0)
    torch.testing.assert_close(hr1, hr2, rtol=0, atol=0)
    # the bytes the trainer converts on its device are the same batch
    lr3, hr3 = s.sample_u8(5, np.random.default_rng(7))
    assert lr3.dtype == np.uint8 and lr3.shape == (5, 12, 12, 3) and hr3.shape == (5, 36, 36, 3)
    torch.testing.assert_close(to_float(lr3), lr1, rtol=0, atol=0)
    torch.testing.assert_close(to_float(hr3).contiguous(), hr1, rtol=0, atol=0)
    # The LR patch is the bicubic shrink of its HR patch, up to border effects: compare centres.
    down = upres.imresize((hr1[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8), 1 / 3)
    lr0 = (lr1[0].permute(1, 2, 0).numpy() * 255).round()
    assert np.abs(down[3:-3, 3:-3].astype(float) - lr0[3:-3, 3:-3]).max() <= 2


def test_train_run_writes_loadable_weights(tiny, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", str(tiny), "--run-dir", str(run)]) == 0
    for f in ("config.yaml", "train.log", "last.pt", "best.safetensors", "final.safetensors"):
        assert (run / f).is_file(), f
    log = (run / "train.log").read_text()
    assert "val step 6: PSNR-Y Set5" in log
    up = upres.load(run / "final.safetensors")
    assert up.card.steps == 6 and up.card.config["name"] == "tiny"
    assert up.card.train_seconds > 0 and "cores" in up.card.machine
    assert set(up.card.psnr) == {"Set5"}  # the last validation travels with the weights
    import json

    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert {"loss", "lr", "steps_per_s", "data_wait"} <= set(rows[0])
    assert any("val_psnr_y/Set5" in r for r in rows)
    assert up.upscale(np.zeros((8, 8, 3), np.uint8)).shape == (16, 16, 3)
    # A second fresh run into the same folder is refused before it touches anything.
    before = {f: (run / f).read_bytes() for f in ("train.log", "last.pt", "final.safetensors")}
    capsys.readouterr()
    assert main(["train", str(tiny), "--run-dir", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert "already holds a run" in err and "--resume" in err and len(err.splitlines()) == 1
    assert {f: (run / f).read_bytes() for f in before} == before
    # A run that cannot read its data stops with one line and leaves its folder free.
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "cut.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    fresh = tmp_path / "fresh"
    assert main(["train", str(tiny), "--run-dir", str(fresh), "--set", f"data.train=[{bad}]"]) == 1
    assert "cut.png" in capsys.readouterr().err
    assert not [f for f in ("train.log", "last.pt", "config.yaml") if (fresh / f).exists()]


def test_resume_equals_uninterrupted(tiny, tmp_path):
    cfg = load_config(tiny, ["val_every=1000"])
    full = Trainer(cfg, tmp_path / "full", log=lambda _: None)
    full.run()
    Trainer(cfg, tmp_path / "half", log=lambda _: None).run(until=3)  # interrupted
    resumed = Trainer(cfg, tmp_path / "half", log=lambda _: None)
    resumed.run(resume=True)
    for (k, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values(),
                         strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=k)


@pytest.mark.parametrize("arch", REGISTRY.names())
def test_every_architecture_trains(tiny, tmp_path, arch):
    """``upres train`` drives every registered architecture (its input convention included)
    and the validation PSNR is finite."""
    scale = 4 if 4 in SCALES.get(arch, (2, 3, 4)) else 2
    params = yaml.safe_dump(SMALL[arch], default_flow_style=True).strip()
    cfg = load_config(tiny, [f"model.arch={arch}", f"model.params={params}", f"scale={scale}",
                             "optim.steps=2", "val_every=2", "data.patch=16"])
    lines: list[str] = []
    trainer = Trainer(cfg, tmp_path / arch, log=lines.append)
    final = trainer.run()
    up = upres.load(final, device="cpu")
    # re-parameterisable training forms are shipped folded into their inference form
    assert up.card.arch == getattr(trainer.model, "deploy_arch", arch) and up.card.steps == 2
    val = [ln for ln in lines if "val step 2" in ln]
    assert val and "nan" not in val[0]


def test_losses_and_multistep(tiny):
    from upres.train.losses import fft_loss, make_loss

    a, b = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8)
    assert float(fft_loss(a, a)) == 0.0 and float(fft_loss(a, b)) > 0
    mixed = make_loss({"l1": 1.0, "fft": 0.5})
    assert float(mixed(a, b)) == pytest.approx(float(make_loss("l1")(a, b)
                                                     + 0.5 * fft_loss(a, b)))
    with pytest.raises(UpresError, match=r"optim\.loss"):
        load_config(tiny, ["optim.loss={l1: 1, ssim: 2}"])
    cfg = load_config(tiny, ["optim.schedule=multistep", "optim.milestones=[2, 4]",
                             "optim.gamma=0.1"])
    assert [lr_at(cfg, s) for s in (0, 2, 4)] == pytest.approx([1e-3, 1e-4, 1e-5])


def test_log_mse_weighs_each_patch_as_mean_psnr_does():
    """log_mse is minus the mean per-sample PSNR (peak 1), floored at half an 8-bit level of
    RMS error: the same error costs a flat patch as much as a textured one."""
    from upres.train.losses import log_mse, make_loss

    target = torch.rand(3, 3, 8, 8)
    pred = target.clone()
    pred[0] += 0.01  # MSE 1e-4: 40 dB
    pred[1] += 0.1  # MSE 1e-2: 20 dB
    floor = (0.5 / 255) ** 2
    want = np.mean([10 * np.log10(1e-4 + floor), 10 * np.log10(1e-2 + floor),
                    10 * np.log10(floor)])
    assert float(make_loss("log_mse")(pred, target)) == pytest.approx(want, rel=1e-4)
    # a tenfold error costs 20 dB on any patch, flat or textured
    assert float(log_mse(target + 0.2, target)) - float(log_mse(target + 0.02, target)) == \
        pytest.approx(20.0, abs=0.1)


def test_log_mse_y_scores_luma_as_the_protocol_does():
    """log_mse_y is minus the mean per-sample PSNR of BT.601 luma (upres.metrics.rgb_to_y's
    weights), so an error that leaves luma alone costs nothing; a one-channel batch (a luma-only
    model's) is luma already."""
    from upres.metrics import rgb_to_y
    from upres.train.losses import log_mse_y, make_loss

    g = torch.Generator().manual_seed(0)
    target = torch.rand(2, 3, 8, 8, generator=g)
    pred = (target + 0.05 * torch.randn(2, 3, 8, 8, generator=g)).clamp(0, 1)
    floor = (0.5 / 255) ** 2
    want = []
    for p, t in zip(pred, target, strict=True):
        dy = (rgb_to_y(p.permute(1, 2, 0).double().numpy() * 255)
              - rgb_to_y(t.permute(1, 2, 0).double().numpy() * 255)) / 255
        want.append(10 * np.log10(np.mean(dy ** 2) + floor))
    assert float(make_loss("log_mse_y")(pred, target)) == pytest.approx(np.mean(want), abs=1e-3)
    # a colour shift with no luma change (R up, G down in the luma ratio) costs nothing ...
    shift = torch.zeros(1, 3, 1, 1)
    shift[0, 0], shift[0, 1] = 0.1, -0.1 * 65.481 / 128.553
    assert float(log_mse_y(target + shift, target)) == pytest.approx(10 * np.log10(floor),
                                                                      abs=1e-3)
    # ... while on luma itself an error of 0.1 costs what log_mse says
    luma = torch.rand(2, 1, 8, 8, generator=g)
    assert float(log_mse_y(luma + 0.1, luma)) == pytest.approx(10 * np.log10(0.01 + floor),
                                                                abs=1e-3)
    with pytest.raises(ValueError, match="1 or 3 channels"):
        log_mse_y(torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 4, 4))


def test_ema_is_validated_exported_and_resumed(tiny, tmp_path):
    cfg = load_config(tiny, ["optim.ema=0.9", "val_every=1000"])
    full = Trainer(cfg, tmp_path / "full", log=lambda _: None)
    final = full.run()
    exported = upres.load(final, device="cpu").model.state_dict()
    for k, v in full.ema.state_dict().items():
        torch.testing.assert_close(exported[k], v, rtol=0, atol=0)
    assert any(not torch.equal(full.ema.state_dict()[k], v)
               for k, v in full.model.state_dict().items())  # EMA lags the raw weights
    Trainer(cfg, tmp_path / "half", log=lambda _: None).run(until=3)
    resumed = Trainer(cfg, tmp_path / "half", log=lambda _: None)
    resumed.run(resume=True)
    for k, v in full.ema.state_dict().items():
        torch.testing.assert_close(resumed.ema.state_dict()[k], v, rtol=0, atol=0)


def test_validation_equals_upres_eval(tiny, tmp_path, capsys):
    """The PSNR the trainer prints at step N is what ``upres eval`` gives the step-N weights."""
    run = tmp_path / "run"
    assert main(["train", str(tiny), "--run-dir", str(run)]) == 0
    logged = float((run / "train.log").read_text().split("val step 6: PSNR-Y Set5 ")[1].split()[0])
    out = tmp_path / "e.json"
    capsys.readouterr()
    assert main(["eval", "-m", str(run / "final.safetensors"), "-d", str(BENCH / "Set5"),
                 "-s", "2", "--json", str(out)]) == 0
    import json

    assert abs(json.loads(out.read_text())[0]["psnr_y"] - logged) < 0.01


def test_paired_lr_folders(tmp_path):
    """Real LR/HR pairs: the sampler reads the user's LR (here MATLAB's own Set5 LR)."""
    s = PairedPatchSampler([BENCH / "Set5"], scale=2, patch=16,
                           lr_folders=[BENCH / "Set5_LR_bicubic"])
    assert len(s) == 5
    lr, hr = s.sample(2, np.random.default_rng(0))
    assert lr.shape == (2, 3, 16, 16) and hr.shape == (2, 3, 32, 32)
    with pytest.raises(UpresError, match="no LR image"):
        PairedPatchSampler([BENCH / "Set5"], scale=2, patch=16, lr_folders=[tmp_path])


def test_rescale_adds_shrunk_copies_with_their_own_lr(tiny, tmp_path):
    """data.rescale: each HR image also enters shrunk by each factor (MATLAB bicubic), with its LR
    made from the shrunk copy; copies too small for a patch are skipped by name; no factor leaves
    the sampler exactly as before (same pairs, same draws), so existing recipes reproduce."""
    t1 = DATA / "train" / "T91" / "t1.bmp"  # 197x176
    plain = PairedPatchSampler([t1], scale=2, patch=16)
    same = PairedPatchSampler([t1], scale=2, patch=16, rescale=())
    torch.testing.assert_close(plain.sample(4, np.random.default_rng(1)),
                               same.sample(4, np.random.default_rng(1)), rtol=0, atol=0)
    s = PairedPatchSampler([t1], scale=2, patch=16, rescale=[0.6, 0.9, 0.15], workers=2)
    assert [p.name for p in s.pairs] == ["t1.bmp", "t1.bmp@0.9", "t1.bmp@0.6"]
    assert s.skipped == ["t1.bmp@0.15"]  # 26 px tall, under one 32-px HR patch
    np.testing.assert_array_equal(s.pairs[0].hr, plain.pairs[0].hr)
    for p, r in zip(s.pairs[1:], (0.9, 0.6), strict=True):
        shrunk = upres.imresize(read_rgb8(t1), r)
        h, w = shrunk.shape[0] // 2 * 2, shrunk.shape[1] // 2 * 2
        np.testing.assert_array_equal(p.hr, shrunk[:h, :w])
        np.testing.assert_array_equal(p.lr, upres.imresize(p.hr, 0.5))
    lr, hr = s.sample(6, np.random.default_rng(2))
    assert lr.shape == (6, 3, 16, 16) and hr.shape == (6, 3, 32, 32)
    with pytest.raises(UpresError, match="between 0 and 1"):
        PairedPatchSampler([t1], scale=2, patch=16, rescale=[0.0])
    with pytest.raises(UpresError, match=r"data\.rescale"):
        load_config(tiny, ["data.rescale=[1.0]"])
    with pytest.raises(UpresError, match=r"data\.rescale"):
        load_config(tiny, ["data.rescale=[0.5]", f"data.train_lr=[{tmp_path}]"])
    run = tmp_path / "run"
    assert main(["train", str(tiny), "--run-dir", str(run), "--set", "data.rescale=[0.8]"]) == 0
    assert "3 training images in 6 versions (rescale 0.8)" in (run / "train.log").read_text()


def test_teardown_leaves_the_process_group(monkeypatch):
    """cmd_train leaves the process group that setup made when training ends, however it
    ends, and then left() is true (main ends the process: end_process); a group the caller
    made is the caller's."""
    import torch.distributed as dist

    from upres.train import distributed

    monkeypatch.setattr(distributed, "_LEFT", False)
    assert distributed.teardown() is False  # no group: nothing to do
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        assert distributed.teardown() is False and dist.is_initialized()  # the caller's
        assert not distributed.left()
        monkeypatch.setattr(distributed, "_OWNED", True)  # as setup() marks the one it makes
        assert distributed.teardown() is True
        assert not dist.is_initialized() and distributed.left()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def test_end_process_flushes_and_exits_with_the_code(tmp_path):
    """A torchrun process ends through end_process: its exit status is the one given, what it
    printed and logged is all there, and interpreter shutdown (where gloo's threads aborted a
    rank) never runs: an atexit handler does not fire."""
    import subprocess
    import sys

    code = ("import atexit, logging, logging.handlers, sys\n"
            "from upres.train.distributed import end_process\n"
            f"file = logging.FileHandler({str(tmp_path / 'x.log')!r})\n"
            "held = logging.handlers.MemoryHandler(1000, logging.CRITICAL + 1, file)\n"
            "logging.getLogger().addHandler(held)  # (writes only when flushed or closed)\n"
            "logging.warning('logged')\n"
            "atexit.register(lambda: print('shutdown ran'))\n"
            "print('printed', end='')\n"
            "sys.stderr.write('written')\n"
            "end_process(3)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert (proc.returncode, proc.stdout, proc.stderr) == (3, "printed", "written")
    assert "logged" in (tmp_path / "x.log").read_text()


def test_torchrun_two_processes(tiny, tmp_path):
    """Data-parallel training on CPU through the real torchrun launcher (gloo backend)."""
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    run = tmp_path / "ddp"
    env = {**__import__("os").environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
         "--master_addr=127.0.0.1", f"--master_port={port}", "-m", "upres", "train", str(tiny),
         "--run-dir", str(run), "--set", "optim.steps=4", "--set", "val_every=4"],
        capture_output=True, text=True, timeout=300, env=env)
    # (a failing rank's own message comes before torchrun's summary: show both)
    assert proc.returncode == 0, proc.stderr[-6000:]
    log = (run / "train.log").read_text()
    assert "processes 2" in log and "val step 4: PSNR-Y Set5" in log
    assert log.count("run tiny:") == 1  # only rank 0 logs
    up = upres.load(run / "final.safetensors", device="cpu")
    assert up.card.steps == 4
    # Two processes with 2 patches each follow the single process with the batch of 4.
    single = Trainer(load_config(tiny, ["optim.steps=4", "val_every=4"]), tmp_path / "one",
                     log=lambda _: None)
    single.run()
    for k, v in single.model.state_dict().items():
        torch.testing.assert_close(up.model.state_dict()[k], v, rtol=1e-5, atol=1e-6, msg=k)
    # The logged loss is the mean over both shards: the single process's loss on the batch.
    import json

    def losses(r):
        return [json.loads(x)["loss"] for x in (r / "metrics.jsonl").read_text().splitlines()
                if '"loss"' in x]

    assert losses(run) == pytest.approx(losses(tmp_path / "one"), rel=1e-5)


def test_resume_after_sigkill_matches_uninterrupted(tiny, tmp_path):
    """Kill a training process with SIGKILL mid-run, resume it, and get exactly the weights of
    an uninterrupted run (same process settings, CPU)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    sets = ["--set", "optim.steps=14", "--set", "ckpt_every=1", "--set", "log_every=1",
            "--set", "val_every=1000"]
    cmd = [sys.executable, "-m", "upres", "train", str(tiny), *sets]
    subprocess.run([*cmd, "--run-dir", str(tmp_path / "full")], env=env, check=True,
                   capture_output=True, timeout=300)
    run = tmp_path / "killed"
    proc = subprocess.Popen([*cmd, "--run-dir", str(run)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    log = run / "train.log"
    deadline = time.time() + 120
    while time.time() < deadline and not (log.exists() and "step 5/14" in log.read_text()):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (run / "final.safetensors").exists(), "the run finished before it was killed"
    subprocess.run([sys.executable, "-m", "upres", "train", "--resume", str(run)], env=env,
                   check=True, capture_output=True, timeout=300)
    a = upres.load(tmp_path / "full" / "final.safetensors").model.state_dict()
    b = upres.load(run / "final.safetensors").model.state_dict()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)
    text = log.read_text()
    assert "resumed from" in text
    losses = [ln.split(" loss ")[1].split()[0] for ln in text.splitlines() if " loss " in ln]
    full = [ln.split(" loss ")[1].split()[0] for ln in
            (tmp_path / "full" / "train.log").read_text().splitlines() if " loss " in ln]
    assert losses[-1] == full[-1]


def test_blind_degradation_in_training(tiny, tmp_path):
    """data.degradation=second_order makes LR patches on the fly, deterministically."""
    from upres.data.degrade import second_order

    s = PairedPatchSampler([DATA / "train" / "T91" / "t1.bmp"], scale=4, patch=16,
                           degrade=second_order(4))
    a = s.sample(3, np.random.default_rng(5))
    b = s.sample(3, np.random.default_rng(5))
    torch.testing.assert_close(a[0], b[0], rtol=0, atol=0)
    assert a[0].shape == (3, 3, 16, 16) and a[1].shape == (3, 3, 64, 64)
    # threads degrade the patches in parallel and give the same batch
    threaded = PairedPatchSampler([DATA / "train" / "T91" / "t1.bmp"], scale=4, patch=16,
                                  degrade=second_order(4), workers=3)
    c = threaded.sample(3, np.random.default_rng(5))
    torch.testing.assert_close(a[0], c[0], rtol=0, atol=0)
    torch.testing.assert_close(a[1], c[1], rtol=0, atol=0)
    assert not torch.equal(a[0][0], a[0][1])  # each patch has its own draw
    cfg = load_config(tiny, ["data.degradation=second_order", "optim.steps=2", "val_every=2"])
    assert Trainer(cfg, tmp_path / "blind", log=lambda _: None).run().is_file()


def test_blind_variants_degrade_whole_images(tiny, tmp_path):
    """data.variants=N: patches are windows of whole-image degradations (seeded per image and
    version, the way blind test sets are made), the same for any thread count."""
    from upres.data.degrade import modcrop, second_order

    files = [DATA / "train" / "T91" / n for n in ("t1.bmp", "t2.bmp")]
    s = PairedPatchSampler(files, scale=4, patch=16, augment=False, degrade=second_order(4),
                           variants=3, seed=9)
    lr, hr = s.sample(6, np.random.default_rng(2))
    assert lr.shape == (6, 3, 16, 16) and hr.shape == (6, 3, 64, 64)
    assert 1 <= len(s._versions) <= 6
    # every LR patch is a window of one of the made versions, at the place of its HR patch
    def located(h: np.ndarray, want: np.ndarray) -> bool:
        for (k, _), full in s._versions.items():
            big = s.pairs[k].hr
            for y in range(0, big.shape[0] - 63, 4):
                for x in range(0, big.shape[1] - 63, 4):
                    if (np.array_equal(big[y:y + 64, x:x + 64], h) and np.array_equal(
                            full[y // 4:y // 4 + 16, x // 4:x // 4 + 16], want)):
                        return True
        return False

    to8 = lambda t: (t.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)  # noqa: E731
    assert all(located(to8(hr[i]), to8(lr[i])) for i in range(6))
    # a version is the pipeline applied to the whole (modcropped) image with its own seed
    (k, v), full = next(iter(s._versions.items()))
    hr_full = modcrop(upres.io.read_rgb8(files[k]), 4).astype(np.float32) / 255.0
    again = second_order(4)(hr_full, np.random.default_rng([9, k, v]))
    assert np.array_equal(full, np.floor(again * 255.0 + 0.5).astype(np.uint8))
    threaded = PairedPatchSampler(files, scale=4, patch=16, augment=False,
                                  degrade=second_order(4), variants=3, seed=9, workers=2)
    lr2, hr2 = threaded.sample(6, np.random.default_rng(2))
    torch.testing.assert_close(lr, lr2, rtol=0, atol=0)
    torch.testing.assert_close(hr, hr2, rtol=0, atol=0)
    with pytest.raises(UpresError, match=r"data\.variants"):
        load_config(tiny, ["data.variants=4"])  # bicubic LR has nothing to vary
    cfg = load_config(tiny, ["data.degradation=second_order", "data.variants=2",
                             "optim.steps=2", "val_every=2"])
    assert Trainer(cfg, tmp_path / "blind", log=lambda _: None).run().is_file()


@pytest.mark.parametrize("act", ["relu", "lrelu", "prelu"])
def test_upnet_grows_into_a_wider_deeper_net_with_the_same_function(act):
    from upres.models.archs.upnet import UpNet

    torch.manual_seed(0)
    small = UpNet(scale=3, channels=8, depth=2, act=act).eval()
    with torch.no_grad():
        for p in small.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    depth = 4 if act == "relu" else 2  # identity layers keep the function after relu only
    big = UpNet(scale=3, channels=12, depth=depth, act=act).eval()
    assert f"8 channels x 2 layers -> 12 x {depth}" in big.grow_from(small.state_dict())
    x = torch.rand(2, 3, 11, 13)
    with torch.no_grad():
        torch.testing.assert_close(big(x), small(x), atol=1e-6, rtol=0)
    # The new channels are live: their incoming weights are not all zero.
    assert big.head.weight[8:].abs().sum() > 0
    with pytest.raises(ValueError, match="cannot grow"):
        UpNet(scale=2, channels=12, depth=4).grow_from(small.state_dict())  # other scale
    if act != "relu":
        with pytest.raises(ValueError, match="only with relu"):
            UpNet(scale=3, channels=12, depth=4, act=act).grow_from(small.state_dict())


def test_rfdn_grows_deeper_with_the_same_function():
    from upres.models.archs.rfdn import RFDN

    torch.manual_seed(0)
    small = RFDN(scale=2, channels=8, blocks=2).eval()
    with torch.no_grad():
        for p in small.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    big = RFDN(scale=2, channels=8, blocks=3).eval()
    assert "2 blocks -> 3 (width 8)" in big.grow_from(small.state_dict())
    x = torch.rand(1, 3, 17, 19)
    with torch.no_grad():
        torch.testing.assert_close(big(x), small(x), atol=1e-6, rtol=0)
    # The new block starts as the deepest trained one; only its fusion columns are zero.
    torch.testing.assert_close(big.B3.c1_d.weight, small.B2.c1_d.weight)
    assert big.c[0].weight[:, 16:].abs().sum() == 0
    with pytest.raises(ValueError, match="cannot grow"):
        RFDN(scale=3, channels=8, blocks=3).grow_from(small.state_dict())  # other scale
    with pytest.raises(ValueError, match="cannot grow"):
        RFDN(scale=2, channels=8, blocks=1).grow_from(small.state_dict())  # shallower


def test_init_mode_grow_in_a_recipe(tiny, tmp_path):
    src = tmp_path / "small"
    Trainer(load_config(tiny, ["optim.steps=2", "val_every=2"]), src, log=lambda _: None).run()
    cfg = load_config(tiny, ["optim.steps=2", "val_every=2", "model.params.channels=12",
                             "model.params.depth=3", f"model.init={src / 'final.safetensors'}",
                             "model.init_mode=grow"])
    Trainer(cfg, tmp_path / "big", log=lambda _: None).run()
    assert "grown from" in (tmp_path / "big" / "train.log").read_text()
    with pytest.raises(UpresError, match="init_mode"):
        load_config(tiny, ["model.init_mode=stretch"])
    with pytest.raises(UpresError, match="grow is not available"):
        Trainer(load_config(tiny, ["model.arch=espcn", "model.params={}",
                                   f"model.init={src / 'final.safetensors'}",
                                   "model.init_mode=grow"]), tmp_path / "e", log=lambda _: None)


def test_rep_upnet_folds_and_grows_with_the_same_function():
    from upres.models.archs.upnet import RepUpNet, UpNet

    torch.manual_seed(0)
    rep = RepUpNet(scale=2, channels=8, depth=3, act="prelu")
    with torch.no_grad():
        for p in rep.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    x = torch.rand(2, 3, 9, 14)
    before = {k: v.clone() for k, v in rep.state_dict().items()}
    plain = rep.fold()
    assert isinstance(plain, UpNet) and sum(p.numel() for p in plain.parameters()) < sum(
        p.numel() for p in rep.parameters())
    with torch.no_grad():
        torch.testing.assert_close(plain(x), rep(x), atol=2e-6, rtol=0)
    for k, v in rep.state_dict().items():  # folding leaves the training form as it was
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)
    # growing a plain UpNet into the training form keeps its function
    small = UpNet(scale=2, channels=6, depth=2).eval()
    with torch.no_grad():
        for p in small.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    big = RepUpNet(scale=2, channels=8, depth=3)
    assert "re-parameterisable branches at zero" in big.grow_from(small.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(big(x), small(x), atol=1e-6, rtol=0)
        torch.testing.assert_close(big.fold()(x), small(x), atol=1e-6, rtol=0)


def test_rep_upnet_recipe_exports_a_plain_upnet(tiny, tmp_path):
    """A recipe with ``upnet_rep`` validates, saves and ships the folded UpNet: the file holds
    plain UpNet weights whose output equals the (EMA) training form's."""
    from safetensors import safe_open

    from upres.models.weights import load_model

    cfg = load_config(tiny, ["model.arch=upnet_rep", "optim.steps=3", "val_every=3",
                             "optim.ema=0.5"])
    trainer = Trainer(cfg, tmp_path / "rep", log=lambda _: None)
    final = trainer.run()
    model, card = load_model(final)
    assert card.arch == "upnet" and type(model).__name__ == "UpNet"
    with safe_open(str(final), "pt") as f:
        assert not any("conv1" in k or "gamma" in k for k in f.keys())  # noqa: SIM118
        assert sum(f.get_tensor(k).numel() for k in f.keys()) == card.params  # noqa: SIM118
    x = torch.rand(1, 3, 12, 10)
    with torch.no_grad():
        torch.testing.assert_close(model(x), trainer.ema(x), atol=2e-6, rtol=0)
    assert (tmp_path / "rep" / "best.safetensors").is_file()


def test_eval_checkpoint_script_scores_a_run_as_its_validation_did(tiny, tmp_path):
    """scripts/eval_checkpoint.py reads last.pt and gives the PSNR the run logged at that step."""
    import re
    import subprocess
    import sys
    from pathlib import Path

    run = tmp_path / "run"
    Trainer(load_config(tiny), run, log=lambda _: None).run()
    logged = re.search(r"val step 6: PSNR-Y Set5 (\d+\.\d+)", (run / "train.log").read_text())
    script = Path(__file__).resolve().parents[1] / "scripts" / "eval_checkpoint.py"
    out = subprocess.run([sys.executable, str(script), str(run), "Set5"], capture_output=True,
                         text=True, check=True).stdout
    assert logged and f"step 6 Set5 {logged.group(1)}" in out, (out, logged)
    # A reader only: the run's log gains no "resumed from" line (a sitting it did not train).
    assert "resumed from" not in (run / "train.log").read_text()


def test_ship_model_with_prior_stages_keeps_every_log_and_time(tiny, tmp_path):
    """scripts/ship_model.py --prior (repeated, oldest first): the shipped log is stage 1's,
    2's then 3's, train_seconds adds the three stages, steps and recipe are stage 3's, and the
    card holds the measured PSNR, the photographs-only note and the name's summary."""
    import subprocess
    import sys
    from pathlib import Path

    from upres.models.weights import load_model

    one, two, three, zoo = (tmp_path / n for n in ("one", "two", "three", "zoo"))
    zoo.mkdir()
    Trainer(load_config(tiny), one, log=lambda _: None).run()
    for src, dst in ((one, two), (two, three)):
        cfg = load_config(tiny, [f"model.init={src / 'final.safetensors'}", "optim.steps=4",
                                 "val_every=4"])
        Trainer(cfg, dst, log=lambda _: None).run()
    script = Path(__file__).resolve().parents[1] / "scripts" / "ship_model.py"
    subprocess.run([sys.executable, str(script), str(three), "tiny-x2", "--prior", str(one),
                    "--prior", str(two), "--zoo-dir", str(zoo)], capture_output=True, text=True,
                   check=True)
    _, card = load_model(zoo / "tiny-x2.safetensors")
    cards = [load_model(d / "final.safetensors")[1] for d in (one, two, three)]
    assert card.steps == 4
    assert card.train_seconds == round(sum(c.train_seconds for c in cards), 1)
    assert card.train_seconds > cards[2].train_seconds > 0
    logs = [(d / "train.log").read_text() for d in (one, two, three)]
    assert (zoo / "tiny-x2.log").read_text() == "".join(logs)
    assert (zoo / "tiny-x2.yaml").read_text() == (three / "config.yaml").read_text()
    assert set(card.psnr) == {"Set5", "Set14", "BSD100"} and card.gmacs > 0
    # the photographs-only note and the name's user-facing summary come by default
    sys.path.insert(0, str(script.parent))
    from stamp_cards import PHOTO_NOTE, SUMMARIES

    assert card.trained_on.endswith(f"; {PHOTO_NOTE}") and card.summary == SUMMARIES["tiny-x2"]


def test_leveled_damage_grows_with_the_level_and_zero_is_bicubic():
    from upres.data.degrade import Leveled

    hr = upres.io.read_rgb8(BENCH / "Set14" / "baboon.png")[:192, :192].astype(np.float32) / 255
    pipe = Leveled(4)
    np.testing.assert_array_equal(pipe.at(0.0)(hr, np.random.default_rng(0)),
                                  np.clip(upres.imresize(hr, 1 / 4), 0, 1).astype(np.float32))
    clean = pipe.at(0.0)(hr, np.random.default_rng(0))
    dist = [np.mean([np.abs(pipe.at(t)(hr, np.random.default_rng(i)) - clean).mean()
                     for i in range(12)]) for t in (0.1, 0.4, 0.8)]
    assert dist[0] < dist[1] < dist[2], dist
    a = pipe.at(0.5)(hr, np.random.default_rng(3))
    assert a.shape == (48, 48, 3) and a.dtype == np.float32
    np.testing.assert_array_equal(a, pipe.at(0.5)(hr, np.random.default_rng(3)))


def test_leveled_single_takes_one_kind_alone_in_half_the_everyday_passes(monkeypatch):
    import upres.data.degrade as dg

    kinds: list[str] = []
    for name, kind in (("blur", "blur"), ("add_gaussian_noise", "noise"),
                       ("add_poisson_noise", "noise"), ("jpeg", "jpeg")):
        real = getattr(dg, name)
        monkeypatch.setattr(dg, name, lambda *a, _r=real, _k=kind, **k: (kinds.append(_k),
                                                                         _r(*a, **k))[1])
    hr = np.random.default_rng(0).random((64, 64, 3)).astype(np.float32)

    def alone(pipe: dg.Leveled) -> float:
        n = 0
        for i in range(300):
            kinds.clear()
            pipe.draw(hr, np.random.default_rng(i), 0.5, blind=False)
            n += len(kinds) == 1
        return n / 300

    before, single = alone(dg.Leveled(4)), alone(dg.leveled_single(4))
    assert 0.25 < before < 0.5 and single > before + 0.15, (before, single)  # ~0.4, ~0.7
    assert dg.DEGRADATIONS["leveled_single"](4).single == 0.5


def test_denoise_base_trains_every_strength(tiny, tmp_path):
    """model.denoise_base: each batch is one damage level t of data.degradation leveled, the
    network at weights base + t * (own - base) is trained, and the base stays as it was."""
    from upres.data.degrade import Leveled
    from upres.models.weights import load_model

    s = PairedPatchSampler([DATA / "train" / "T91" / "t1.bmp"], scale=2, patch=16,
                           degrade=Leveled(2), variants=4, seed=1)
    assert s.leveled and s.level(0) == 0.25 and s.level(3) == 1.0
    lr, _, t = s.sample_level(3, np.random.default_rng(4))
    assert t in (0.25, 0.5, 0.75, 1.0) and lr.shape == (3, 3, 16, 16)
    assert len(s._versions) == 1  # every patch of the batch from one version
    g = np.random.default_rng(5)  # data.min_level: only the versions at that level or above
    assert {s.sample_level(1, g, 0.75)[2] for _ in range(40)} == {0.75, 1.0}
    assert {s.sample_level(1, g, 0.6)[2] for _ in range(40)} == {0.75, 1.0}
    assert {s.sample_level(1, g, 1.0)[2] for _ in range(5)} == {1.0}
    assert {s.sample_level(1, g, 0.3, 0.8)[2] for _ in range(40)} == {0.5, 0.75}
    with pytest.raises(UpresError, match="no damage level"):
        s.sample_level(1, g, 0.55, 0.7)
    assert {s.sample_level(1, g)[2] for _ in range(60)} == {0.25, 0.5, 0.75, 1.0}
    with pytest.raises(UpresError, match="leveled"):
        PairedPatchSampler([DATA / "train" / "T91" / "t1.bmp"], scale=2,
                           patch=16).sample_level(2, np.random.default_rng(0))
    base_run = tmp_path / "base"
    assert main(["train", str(tiny), "--run-dir", str(base_run), "--set", "data.val=[]"]) == 0
    base_file = base_run / "final.safetensors"
    base_before = load_model(base_file)[0].state_dict()
    sets = ["data.degradation=leveled", "data.variants=4", "data.val=[]", "optim.steps=4",
            f"model.denoise_base={base_file}", f"model.init={base_file}"]
    with pytest.raises(UpresError, match="denoise_base"):
        Trainer(load_config(tiny, sets[:1] + sets[2:]), tmp_path / "x").run()  # no variants
    tr = Trainer(load_config(tiny, sets), tmp_path / "path", log=lambda _: None)
    levels = []
    orig = PairedPatchSampler.sample_level

    def spy(self, *a, **k):
        out = orig(self, *a, **k)
        levels.append(out[2])
        return out

    PairedPatchSampler.sample_level = spy
    try:
        final = tr.run()
        high = Trainer(load_config(tiny, [*sets, "data.min_level=0.6"]), tmp_path / "high",
                       log=lambda _: None)
        high.run()  # data.min_level reaches the sampler: only levels 0.75 and 1 are trained
    finally:
        PairedPatchSampler.sample_level = orig
    levels, high_levels = levels[:4], levels[4:]
    assert len(high_levels) == 4 and set(high_levels) <= {0.75, 1.0}, high_levels
    assert len(levels) == 4 and all(0 < t <= 1 for t in levels)
    assert all(torch.equal(tr.base[k], base_before[k]) for k in tr.base)  # frozen in training
    trained = load_model(final)[0].state_dict()
    assert any(not torch.equal(trained[k], base_before[k]) for k in trained)  # endpoint moved
    # the blend the trainer runs is the network --denoise t runs (PhotoUpscaler)
    from upres.inference.denoise import PhotoUpscaler
    from upres.inference.upscaler import Upscaler

    net, card = load_model(base_file)
    own = {k: v.detach().clone() for k, v in tr.model.state_dict().items()}
    pu = PhotoUpscaler(Upscaler(net, card, device="cpu"), base_before, own, denoise=0.0)
    pu.set_strength(0.3)
    with torch.no_grad():
        blend = tr._blended(0.3)
        for k, p in pu.up.model.named_parameters():
            torch.testing.assert_close(blend[k].contiguous(), p.contiguous())


# -- resuming, stopping and refusing (one error line, nothing written) ------------------------
def _stopped_run(tiny, tmp_path, name: str = "run", sets: tuple[str, ...] = ()):
    """A tiny run checkpointed and stopped at step 3 of 6 (no validation on the way)."""
    run = tmp_path / name
    cfg = load_config(tiny, ["val_every=1000", "log_every=1", *sets])
    Trainer(cfg, run, log=lambda _: None).run(until=3)
    return run


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_damaged_or_crafted_checkpoint_is_refused_before_anything_is_read(tiny, tmp_path,
                                                                           capsys):
    import pathlib

    run = _stopped_run(tiny, tmp_path)
    config = (run / "config.yaml").read_bytes()
    good = (run / "last.pt").read_bytes()
    # a missing training folder shows the data were not read before the checkpoint was checked
    resume = ["train", "--resume", str(run), "--set", "optim.lr=5e-4",
              "--set", f"data.train=[{tmp_path / 'nowhere'}]"]
    for damage in (good[: len(good) // 2], b"", b"step: 3\n"):
        (run / "last.pt").write_bytes(damage)
        capsys.readouterr()
        assert main(resume) == 1
        assert _one_error_line(capsys).startswith(f"upres: {run / 'last.pt'}: damaged checkpoint (")
        assert (run / "config.yaml").read_bytes() == config

    class Planted:  # what a crafted last.pt could run on torch.load(weights_only=False)
        def __reduce__(self):
            return pathlib.Path.touch, (tmp_path / "ran",)

    torch.save({"model": Planted()}, run / "last.pt")
    assert main(resume) == 1
    assert "refused checkpoint" in _one_error_line(capsys)
    assert not (tmp_path / "ran").exists() and (run / "config.yaml").read_bytes() == config


def test_failed_resume_keeps_the_config_and_the_run_resumable(tiny, tmp_path, capsys):
    run = _stopped_run(tiny, tmp_path)
    config = (run / "config.yaml").read_bytes()
    for bad, says in (("model.params.channels=16", "model.params"),
                      ("optim.optimizer=sgd", "optim.optimizer adam"),
                      ("optim.steps=3", "optim.steps")):
        capsys.readouterr()
        assert main(["train", "--resume", str(run), "--set", bad]) == 1, bad
        assert says in _one_error_line(capsys)
        assert (run / "config.yaml").read_bytes() == config, bad
    assert main(["train", "--resume", str(run), "--stop-after", "4"]) == 0
    assert torch.load(run / "last.pt", weights_only=True)["step"] == 4


def test_resume_applies_changed_optimizer_settings_and_starts_ema_from_the_weights(tiny,
                                                                                   tmp_path):
    run = _stopped_run(tiny, tmp_path, "sgd", ("optim.optimizer=sgd", "optim.momentum=0.9"))
    cfg = load_config(run / "config.yaml", ["optim.weight_decay=0.5", "optim.momentum=0.5",
                                            "optim.ema=0.999"])
    tr = Trainer(cfg, run, log=lambda _: None, log_file=False)
    tr.resume()
    assert [(g["weight_decay"], g["momentum"]) for g in tr.opt.param_groups] == [(0.5, 0.5)]
    for k, v in tr.model.state_dict().items():  # not the random initialisation
        torch.testing.assert_close(tr.ema.state_dict()[k], v, rtol=0, atol=0, msg=k)
    tr.run(resume=True)
    assert tr.step == 6 and tr.opt.param_groups[0]["weight_decay"] == 0.5


def test_stop_after_must_pass_the_starting_step(tiny, tmp_path, capsys):
    fresh = tmp_path / "fresh"
    for bad in ("0", "-1"):
        capsys.readouterr()
        assert main(["train", str(tiny), "--run-dir", str(fresh), "--stop-after", bad]) == 1
        assert "--stop-after" in _one_error_line(capsys)
        assert not [p for p in fresh.glob("*")]
    run = _stopped_run(tiny, tmp_path)
    config = (run / "config.yaml").read_bytes()
    assert main(["train", "--resume", str(run), "--stop-after", "3"]) == 1
    assert "step the run starts from (3)" in _one_error_line(capsys)
    assert (run / "config.yaml").read_bytes() == config
    assert main(["train", "--resume", str(run), "--stop-after", "5"]) == 0
    assert torch.load(run / "last.pt", weights_only=True)["step"] == 5


_CTRL_C = """
import signal, sys
import torch
from upres.train.config import load_config
from upres.train.trainer import Trainer

signal.signal(signal.SIGINT, signal.default_int_handler)  # as at a terminal (the suite may
tiny, out = sys.argv[1], sys.argv[2]  # have left SIGINT ignored, which a child inherits)
cfg = load_config(tiny, ["val_every=1000", "log_every=1", "ckpt_every=100"])
full = Trainer(cfg, out + "/full", log=lambda _: None)
full.run()

def press_ctrl_c(line):
    if " step 2/6 " in line:
        signal.raise_signal(signal.SIGINT)

try:
    Trainer(cfg, out + "/run", log=press_ctrl_c).run()  # before the first periodic checkpoint
    sys.exit("no KeyboardInterrupt")
except KeyboardInterrupt:
    pass
assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
resumed = Trainer(cfg, out + "/run", log=lambda _: None)
resumed.run(resume=True)
for k, v in full.model.state_dict().items():
    torch.testing.assert_close(resumed.model.state_dict()[k], v, rtol=0, atol=0, msg=k)
"""


def test_ctrl_c_checkpoints_the_step_and_resumes_as_uninterrupted(tiny, tmp_path, capsys):
    """In a process of its own: a real SIGINT in the pytest process, whose threads and signal
    handlers earlier tests' libraries have touched, once ended the suite in a segfault."""
    import subprocess
    import sys

    env = {**__import__("os").environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", _CTRL_C, str(tiny), str(tmp_path)],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    run = tmp_path / "run"
    log = (run / "train.log").read_text()
    assert "interrupted at step 2, checkpointed" in log
    assert "resumed from" in log and "at step 2" in log
    # A folder whose run stopped before its first checkpoint says how to start it again.
    (run / "last.pt").unlink()
    capsys.readouterr()
    assert main(["train", "--resume", str(run)]) == 2
    assert f"start it afresh with: upres train {run / 'config.yaml'} --run-dir" in \
        _one_error_line(capsys)
    assert main(["train", str(tiny), "--run-dir", str(run)]) == 2
    assert "no checkpoint to resume from" in _one_error_line(capsys)


@pytest.mark.parametrize(("side", "scale"), [(3, 2), (10, 4)])
def test_too_small_validation_image_is_refused_at_start(tiny, tmp_path, capsys, side, scale):
    import shutil

    from PIL import Image

    val = tmp_path / "val"
    val.mkdir()
    shutil.copy(BENCH / "Set5" / "baby.png", val / "baby.png")
    Image.fromarray(np.full((side, side, 3), 128, np.uint8)).save(val / "dot.png")
    run = tmp_path / "run"
    assert main(["train", str(tiny), "--run-dir", str(run), "--set", f"scale={scale}",
                 "--set", f"data.val=[{val}]", "--set", "optim.steps=2"]) == 1
    assert "dot" in _one_error_line(capsys)
    assert not [f for f in ("config.yaml", "train.log", "last.pt") if (run / f).exists()]


@pytest.mark.parametrize(("sets", "key"), [
    ("optim.lr=0", "optim.lr"), ("optim.lr=-1e-3", "optim.lr"),
    ("optim.weight_decay=-0.1", "optim.weight_decay"), ("optim.momentum=-0.5", "optim.momentum"),
    ("optim.gamma=0", "optim.gamma"), ("optim.warmup=-1", "optim.warmup"),
    ("optim.grad_clip=-1", "optim.grad_clip"), ("optim.min_lr=0.1", "optim.min_lr"),
    ("optim.schedule=multistep|optim.milestones=[4, 2]", "optim.milestones"),
    ("optim.loss={l1: 1.0, fft: -0.5}", "optim.loss"),
    ("log_every=0", "log_every"), ("log_every=-1", "log_every"), ("val_every=0", "val_every"),
    ("ckpt_every=0", "ckpt_every"), ("threads=-1", "threads"), ("seed=-1", "seed"),
    ("model.params.channels=0", "model.params"), ("model.params.channels=-2", "model.params"),
    ("model.params.act=gelu", "model.params"), ("model.arch=upnet2", "model.arch"),
    ("gan.weight=-1", "gan.weight"),
    ("data.min_level=0.5", "data.min_level"),
    ("data.degradation=leveled|data.variants=4|data.min_level=0.5", "data.min_level"),
    ("data.degradation=leveled|data.variants=4|model.denoise_base=b.safetensors"
     "|data.min_level=1.5", "data.min_level"),
    ("data.degradation=leveled|data.variants=4|model.denoise_base=b.safetensors"
     "|data.max_level=-1", "data.max_level"),
    ("data.degradation=leveled|data.variants=4|model.denoise_base=b.safetensors"
     "|data.min_level=0.55|data.max_level=0.7", "data.max_level"),
    ("gan.weight=0.1|gan.d_params={nf: 8}", "gan.d_params"),
    ("gan.perceptual_layers={conv9_9: 1.0}", "gan.perceptual_layers"),
    ("model.arch=rfdn|model.params={channels: 8, blocks: 1}|data.patch=8", "data.patch"),
])
def test_config_values_that_would_crash_are_refused(tiny, sets, key):
    with pytest.raises(UpresError, match=f"config key '{key}'") as err:
        load_config(tiny, sets.split("|"))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(("sets", "key"), [
    ("gan.weight=0.1|gan.d_params={num_feat: 8}|data.patch=5", "data.patch"),  # U-Net: 8 | HR
    ("gan.weight=0.1|gan.discriminator=vgg_patch|gan.d_params={num_feat: 8}|data.patch=4",
     "data.patch"),
    ("device=cuda", "device"),
])
def test_trainer_refuses_what_cannot_run_before_writing(tiny, tmp_path, sets, key):
    if key == "device" and torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    run = tmp_path / "run"
    with pytest.raises(UpresError, match=f"config key '{key}'") as err:
        Trainer(load_config(tiny, sets.split("|")), run, log=lambda _: None).run()
    assert "\n" not in str(err.value)
    assert not [p for p in run.glob("*")]


def test_resume_refuses_a_config_or_run_dir(tiny, tmp_path, capsys):
    for extra in ([str(tiny)], ["--run-dir", str(tmp_path / "other")]):
        assert main(["train", *extra, "--resume", str(tmp_path / "run")]) == 2
        assert "--set" in _one_error_line(capsys)
    assert not (tmp_path / "other").exists()


@pytest.mark.parametrize("held", ["best.safetensors", "metrics.jsonl", "tb"])
def test_fresh_run_refuses_a_folder_with_any_run_file(tiny, tmp_path, capsys, held):
    run = tmp_path / "run"
    run.mkdir()
    (run / "tb").mkdir() if held == "tb" else (run / held).write_bytes(b"earlier run")
    assert main(["train", str(tiny), "--run-dir", str(run)]) == 2
    assert "already holds a run" in _one_error_line(capsys)
    assert sorted(p.name for p in run.iterdir()) == [held]


def test_resume_drops_metrics_of_steps_after_the_checkpoint(tiny, tmp_path):
    import json
    import shutil

    run = _stopped_run(tiny, tmp_path, sets=("ckpt_every=100",))
    shutil.copy(run / "last.pt", tmp_path / "step3.pt")
    cfg = load_config(run / "config.yaml")
    Trainer(cfg, run, log=lambda _: None).run(resume=True, until=5)
    shutil.copy(tmp_path / "step3.pt", run / "last.pt")  # as if killed after step 5
    Trainer(cfg, run, log=lambda _: None).run(resume=True)
    steps = [json.loads(r)["step"] for r in (run / "metrics.jsonl").read_text().splitlines()
             if "loss" in r]
    assert steps == [1, 2, 3, 4, 5, 6]
    assert (f"resumed from {run / 'last.pt'} at step 3; 2 metrics.jsonl rows of later steps "
            f"dropped") in (run / "train.log").read_text()


def test_init_that_copies_no_tensor_is_an_error(tiny, tmp_path):
    from pathlib import Path

    other = Path(upres.__file__).parent / "zoo" / "fast-x3.safetensors"  # x3, 48 channels
    with pytest.raises(UpresError, match=r"config key 'model\.init': no tensor of"):
        Trainer(load_config(tiny, [f"model.init={other}"]), tmp_path / "run", log=lambda _: None)


def test_a_run_folder_is_trained_by_one_process_at_a_time(tiny, tmp_path, capsys):
    """A second process on the same run gets one line naming the first's PID (both wrote the
    same log, metrics and checkpoint, and one died on the other's renamed checkpoint); a fresh
    run that fails before writing leaves no folder behind; an unusable folder is one line."""
    import os

    from upres.train.trainer import _hold_run

    run = _stopped_run(tiny, tmp_path)
    config, ckpt = (run / "config.yaml").read_bytes(), (run / "last.pt").read_bytes()
    held = _hold_run(run)  # as a training process holds it
    young = tmp_path / "young"  # a live run before its first checkpoint
    young.mkdir()
    held_young = _hold_run(young)
    try:
        capsys.readouterr()
        for args in (["--resume", str(run), "--stop-after", "4"], ["--resume", str(young)],
                     [str(tiny), "--run-dir", str(young)]):
            assert main(["train", *args]) == 1, args
            err = _one_error_line(capsys)
            held_dir = run if str(run) in args else young
            assert f"{held_dir}: another process (PID {os.getpid()}) is training this run" \
                in err, err
        assert (run / "config.yaml").read_bytes() == config
        assert (run / "last.pt").read_bytes() == ckpt
        assert [p.name for p in young.iterdir()] == [".lock"]
    finally:
        held.close()
        held_young.close()
    assert main(["train", "--resume", str(run), "--stop-after", "4"]) == 0
    assert torch.load(run / "last.pt", weights_only=True)["step"] == 4
    fresh = tmp_path / "fresh"
    for bad in (f"data.train=[{tmp_path / 'nowhere'}]",  # fails in the run
                f"model.init={tmp_path / 'none.safetensors'}"):  # fails in the Trainer's set-up
        assert main(["train", str(tiny), "--run-dir", str(fresh), "--set", bad]) == 1
        _one_error_line(capsys)
        assert not fresh.exists(), bad
    a_file = tmp_path / "a_file"
    a_file.write_text("kept")
    assert main(["train", str(tiny), "--run-dir", str(a_file)]) == 1
    assert _one_error_line(capsys) == f"upres: {a_file}: is a file, not a run folder"
    assert a_file.read_text() == "kept"


@pytest.mark.parametrize(("override", "says"), [
    ("optim.lr=[1", "override 'optim.lr=[1': not a YAML value ("),
    ("optim.lr=!!python/object:os.system", "not a YAML value (could not determine"),
    ("optim.lr=.inf", "config key 'optim.lr': must be a finite number > 0, got inf"),
    ("optim.grad_clip=1e400", "config key 'optim.grad_clip': must be a finite number >= 0"),
])
def test_overrides_that_are_not_yaml_or_not_finite_are_one_line(tiny, tmp_path, capsys,
                                                                override, says):
    run = tmp_path / "r"
    assert main(["train", str(tiny), "--run-dir", str(run), "--set", override]) == 1
    assert says in _one_error_line(capsys)
    assert not run.exists()


def test_messages_name_the_folder_key_or_file(tiny, tmp_path, capsys):
    """Refusals that named nothing, or the wrong cause: a missing run folder ("no checkpoint"),
    a patch larger than every image and an empty data.train (the same "no image is at least
    N pixels"), a card whose architecture this upres lacks (no file named)."""
    from upres.models import REGISTRY, ModelCard
    from upres.models.weights import load_model, save_model

    assert main(["train", "--resume", str(tmp_path / "nowhere")]) == 2
    assert _one_error_line(capsys).endswith("nowhere: no such folder (--resume takes a run folder)")
    for override, says in (("data.patch=500", "is at least 1000 pixels on each side (data.patch "
                                               "500 x scale 2); lower data.patch"),
                           ("data.train=[]", "no training folder given (config key "
                                             "'data.train')")):
        assert main(["train", str(tiny), "--run-dir", str(tmp_path / "r"), "--set",
                     override]) == 1
        assert says in _one_error_line(capsys)
    net = REGISTRY.build("upnet", {"channels": 8, "depth": 1, "scale": 2})
    card = ModelCard(name="t", arch="nope", scale=2, hparams={"channels": 8, "depth": 1},
                     params=0)
    path = save_model(tmp_path / "nope.safetensors", net, card)
    with pytest.raises(UpresError, match=rf"^{path}: unknown architecture 'nope'"):
        load_model(path)
