"""The wall time of a training run that spans sittings, read from its ``train.log``.

A sitting starts at a ``run ...`` or ``resumed from ...`` line (both written once the data are
ready) and ends at the last log line before the next sitting starts; the sum over sittings is
the run's wall time, pauses inside a sitting included, start-up and the gaps between sittings
not. Per sitting it prints the steps and the device (``device cpu`` / ``device cuda:0``)::

    python scripts/run_wall_time.py runs/best-x2-rfdn/train.log
"""

from __future__ import annotations

import argparse
import re
from datetime import datetime
from pathlib import Path

LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) (.*)$")
STEP = re.compile(r"\bstep (\d+)")
DEVICE = re.compile(r"device (\S+?),")


def sittings(log: str) -> list[dict]:
    """One dict per sitting: ``start``/``end`` datetimes, ``device``, ``first``/``last`` step."""
    out: list[dict] = []
    for line in log.splitlines():
        m = LINE.match(line)
        if not m:
            continue
        t, text = datetime.strptime(m[1], "%Y-%m-%d %H:%M:%S"), m[2]
        if text.startswith("resumed from") or (text.startswith("run ") and
                                                (not out or "resumed" not in out[-1]["how"])):
            at = re.search(r"at step (\d+)", text)
            d = DEVICE.search(text)
            out.append({"start": t, "end": t, "how": text.split()[0], "device": d[1] if d else "?",
                        "first": int(at[1]) if at else 0, "last": int(at[1]) if at else 0})
            continue
        if not out:
            continue
        s = out[-1]
        s["end"] = t
        if d := DEVICE.search(text):
            s["device"] = d[1]
        if st := STEP.search(text):
            s["last"] = max(s["last"], int(st[1]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("log", type=Path)
    args = ap.parse_args()
    total = 0.0
    parts = sittings(args.log.read_text())
    for s in parts:
        sec = (s["end"] - s["start"]).total_seconds()
        total += sec
        print(f"{s['start']:%Y-%m-%d %H:%M} {sec / 3600:6.2f} h  steps {s['first']:>6} -> "
              f"{s['last']:>6}  {s['device']}")
    print(f"total {total / 3600:.2f} h over {len(parts)} sittings")


if __name__ == "__main__":
    main()
