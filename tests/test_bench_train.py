"""benchmarks/bench_train.py measures the recipe it names: its default must be a real recipe."""

from __future__ import annotations

import sys

from upres.train.config import load_config

from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import bench_train


def test_default_recipe_exists_and_loads():
    cfg = load_config(bench_train.RECIPE)
    assert cfg.name == "fast-x2" and cfg.scale == 2
