"""Shared fixtures: the project's data lives in ../shared beside the checkout."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
DATA = SHARED / "data"
BENCH = DATA / "benchmark"
PEERS = SHARED / "peers"

# Small hyper-parameters per architecture so that the tests stay fast.
SMALL = {
    "upnet": {"channels": 8, "depth": 2},
    "upnet_rep": {"channels": 8, "depth": 2},
    "imdn": {"channels": 16, "blocks": 2},
    "rfdn": {"channels": 16, "blocks": 2},
    "carn_m": {"channels": 16, "groups": 4, "multi_scale": False},
    "fsrcnn": {"d": 8, "s": 4, "m": 1},
    "srvgg": {"num_feat": 8, "num_conv": 2},
    "srresnet": {"channels": 8, "blocks": 2},
    "espcn": {"f1": 8, "f2": 4},
    "srcnn": {"f1": 8, "f2": 4},
    "vdsr": {"channels": 8, "depth": 4},
    "edsr": {"channels": 8, "blocks": 2},
    "rrdbnet": {"num_feat": 8, "num_block": 1, "num_grow_ch": 4},
    "span": {"channels": 8, "blocks": 2},
    "safmn": {"dim": 8, "n_blocks": 2, "variant": "paper"},
    "swinir": {"embed_dim": 8, "depths": [2], "num_heads": [2], "window_size": 4},
}
# Scales each architecture supports (default 2, 3, 4).
SCALES = {"srresnet": (2, 4), "rrdbnet": (2, 4)}


def pytest_configure(config: pytest.Config) -> None:
    if not BENCH.is_dir():
        raise pytest.UsageError(f"test data not found at {BENCH} (../shared beside the checkout)")
    # int8 graphs and precision choices go to a cache of the test run, not the user's
    # (subprocesses inherit it)
    os.environ["UPRES_CACHE_DIR"] = tempfile.mkdtemp(prefix="upres-test-cache-")


@pytest.fixture(scope="session")
def set5_hr() -> dict[str, np.ndarray]:
    from upres.io import read_rgb8

    return {p.stem: read_rgb8(p) for p in sorted((BENCH / "Set5").glob("*.png"))}


CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync"]
#: screenshots and other files tests leave for people to look at (ignored by git)
ARTIFACTS = ROOT / "test-artifacts"


@pytest.fixture(scope="module")
def browser():
    """Debian's chromium driven by Playwright (the README's test command installs both)."""
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} missing: the test command installs Debian's chromium")
        pytest.skip("Debian chromium not installed (the README's test command installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        yield b
        b.close()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):  # shared by the training and GAN tests
    """A recipe over three real training images, with a small UpNet."""
    root = tmp_path_factory.mktemp("tiny")
    (root / "hr").mkdir()
    for name in ("t1.bmp", "t2.bmp", "tt1.bmp"):
        shutil.copy(DATA / "train" / "T91" / name, root / "hr" / name)
    cfg = {
        "name": "tiny", "scale": 2, "seed": 3,
        "model": {"arch": "upnet", "params": {"channels": 8, "depth": 2}},
        "data": {"train": [str(root / "hr")], "val": [str(BENCH / "Set5")], "patch": 16,
                 "batch": 4},
        "optim": {"steps": 6, "lr": 1e-3},
        "log_every": 2, "val_every": 6, "ckpt_every": 3,
    }
    path = root / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path
