"""The ladder verdicts written by benchmarks/compare_peers.py: budget from the peer measured in
the same run, bar from the papers or from a measured peer, both needed for "met"."""

from __future__ import annotations

import sys

from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
from compare_peers import ladder_rows


def _row(label, ms, s5, s14, b100):
    return {"label": label, "latency_ms": ms, "psnr": {"Set5": s5, "Set14": s14, "BSD100": b100}}


def test_ladder_verdicts_at_x4():
    rows = [_row("IMDN", 1072.0, 32.21, 28.58, 27.56), _row("CARN-M", 2152.7, 31.88, 28.42, 27.45),
            _row("upres fast-x4", 187.8, 31.20, 28.03, 27.21),   # 268 ms budget, FSRCNN bar
            _row("upres x4", 187.8, 31.20, 28.03, 27.21),        # under VDSR on Set5 and BSD100
            _row("upres best-x4", 1100.0, 31.90, 28.45, 27.414),  # 27.414 rounds to 27.41: ok
            _row("OpenCV ESPCN", 50.0, 29.0, 26.5, 26.2),
            _row("upres tiny-x4", 49.0, 30.80, 27.70, 27.00)]     # FSRCNN bar, ESPCN budget
    tiny, fast, mid, best = ladder_rows(rows, 4)
    # under 100 ms the ladder prints one decimal, so close calls show
    assert tiny.startswith("| `tiny-x4` | 30.80 / 27.70 / 27.00 | 49.0 | 50.0 (1 x OpenCV ESPCN)")
    assert tiny.endswith("| **met** |")
    assert fast.startswith("| `fast-x4` | 31.20 / 28.03 / 27.21 | 188 | 268 (0.25 x IMDN)")
    assert fast.endswith("| **met** |")
    assert "VDSR published: 31.35 / 28.01 / 27.29" in mid and "not met: below the bar" in mid
    assert "IDN published: 31.82 / 28.25 / 27.41" in best
    assert best.endswith("not met: too slow |")  # 1100 ms > IMDN's 1072


def test_ladder_missing_tier_and_missing_peer():
    rows = [_row("upres fast-x2", 700.0, 37.41, 32.95, 31.82)]  # IMDN not measured in this run
    tiny, fast, mid, best = ladder_rows(rows, 2)
    assert "not met: too slow" in fast  # no budget without the peer: never "met"
    assert "not shipped" in tiny and "not shipped" in mid and "not shipped" in best


def test_latency_rounds_time_every_model_in_each_round_order_alternating(monkeypatch):
    """compare_peers times all models in rounds (median of rounds), the order reversed every
    other round, so a machine slowing down over minutes hits every model alike. A fake clock:
    model i costs (i + 1) * the round's speed factor (1, 3, 1: the machine drifts)."""
    import _report

    now = [0.0]
    monkeypatch.setattr(_report.time, "perf_counter", lambda: now[0])
    calls: list[int] = []
    factor = {0: 1.0, 1: 3.0, 2: 1.0}

    def model(i):
        def run():
            calls.append(i)
            now[0] += (i + 1) * factor[(calls.count(i) - 1) // 3]
        return run

    got = _report.timeit_rounds([model(0), model(1)], repeat=2, rounds=3, warmup=1)
    assert calls == [0] * 3 + [1] * 3 + [1] * 3 + [0] * 3 + [0] * 3 + [1] * 3
    assert got == [1.0, 2.0]  # the slow round is outvoted for both
