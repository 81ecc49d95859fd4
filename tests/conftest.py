"""Shared fixtures: the project's data lives in ../shared beside the checkout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
DATA = SHARED / "data"
BENCH = DATA / "benchmark"
PEERS = SHARED / "peers"


def pytest_configure(config: pytest.Config) -> None:
    if not BENCH.is_dir():
        raise pytest.UsageError(f"test data not found at {BENCH} (../shared beside the checkout)")


@pytest.fixture(scope="session")
def set5_hr() -> dict[str, np.ndarray]:
    from upres.io import read_rgb8

    return {p.stem: read_rgb8(p) for p in sorted((BENCH / "Set5").glob("*.png"))}
