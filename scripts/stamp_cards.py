"""Stamp shipped model cards with their size, speed and training cost (weights unchanged).

    .venv/bin/python scripts/stamp_cards.py [NAME ...]      # default: every shipped model
    .venv/bin/python scripts/stamp_cards.py --photo-note    # only the trained-on note

For each model: GMACs for a 1280x720 output (:func:`upres.models.macs.count_macs`), the median
CPU latency for that output (``upres.bench.bench``: a child process, 2 warm-up and 5 timed runs,
fp32, the machine's threads), and, where the card lacks them (models shipped before the trainer
recorded them), the training wall time and machine read from the model's log beside it (first
to last timestamp). Run it on a quiet machine: latency is measured, not estimated.
"""

from __future__ import annotations

import argparse
import re
from datetime import datetime
from pathlib import Path

from safetensors.torch import load_file

from upres.bench import bench, machine
from upres.models import zoo
from upres.models.macs import OUT_720P, count_macs
from upres.models.weights import load_model, save_model

_STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) ")


def log_wall(log: Path) -> tuple[float, str]:
    """``(seconds from the first to the last timestamped line, "N threads" or "")``."""
    stamps, threads = [], ""
    for line in log.read_text().splitlines():
        m = _STAMP.match(line)
        if m:
            stamps.append(datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S"))
        t = re.search(r"threads (\d+)", line)
        if t and not threads:
            threads = f"{t.group(1)} threads"
    return ((stamps[-1] - stamps[0]).total_seconds() if len(stamps) > 1 else 0.0), threads


def stamp(path: Path, *, repeat: int = 5) -> str:
    """Re-write ``path`` with gmacs/cpu_ms/bench_machine (and missing training wall time) in its
    card; the tensors are written back unchanged. Returns a one-line summary."""
    before = load_file(path)
    model, card = load_model(path)
    s = card.scale
    hp = {k: v for k, v in card.hparams.items() if k != "scale"}
    _, gmacs = count_macs(card.arch, hp, s)
    r = bench(str(path), scale=s, width=OUT_720P[0] // s, height=OUT_720P[1] // s,
              repeat=repeat)
    changes = {"gmacs": round(gmacs, 2), "cpu_ms": r.latency_ms,
               "bench_machine": machine().rsplit(",", 1)[0] + ", default threads"}
    log = path.with_suffix(".log")
    if not card.train_seconds and log.is_file():
        secs, threads = log_wall(log)
        changes["train_seconds"] = secs
        if not card.machine:
            changes["machine"] = (f"{machine().split(', torch')[0]} ({threads}, from the "
                                  "training log)")
    save_model(path, model, card.with_(**changes))
    after = load_file(path)
    assert before.keys() == after.keys() and all((before[k] == after[k]).all() for k in before)
    return (f"{card.name}: {gmacs:.2f} GMACs, {r.latency_ms:.1f} ms for "
            f"{OUT_720P[0] // s * s}x{OUT_720P[1] // s * s}, trained "
            f"{changes.get('train_seconds', card.train_seconds) / 60:.0f} min")


#: Said in every shipped card (issue 20): what the models know, and what they do to scans.
PHOTO_NOTE = ("photographs only (natural scenes, objects, people), no medical or scientific "
              "images: on scans and micrographs the models invent plausible detail; not for "
              "diagnosis")


def with_photo_note(trained_on: str) -> str:
    """``trained_on`` ending in :data:`PHOTO_NOTE` (unchanged where it has it already)."""
    if PHOTO_NOTE in trained_on:
        return trained_on
    return f"{trained_on}; {PHOTO_NOTE}" if trained_on else PHOTO_NOTE


def note_photos(path: Path) -> str:
    """Add :data:`PHOTO_NOTE` to the card's ``trained_on`` (tensors unchanged); no re-timing."""
    before = load_file(path)
    model, card = load_model(path)
    if PHOTO_NOTE not in card.trained_on:
        save_model(path, model, card.with_(trained_on=with_photo_note(card.trained_on)))
    after = load_file(path)
    assert before.keys() == after.keys() and all((before[k] == after[k]).all() for k in before)
    return f"{card.name}: trained_on notes photographs only"


#: What each shipped model is for, in a user's words (``--summaries``): listings and the page.
SUMMARIES = {
    "tiny-x2": "The quickest x2: as fast as OpenCV's ESPCN on a CPU and clearly sharper. For "
               "clean images when speed matters most.",
    "tiny-x3": "The quickest x3: runs int8 on a CPU, as fast as OpenCV's ESPCN and clearly "
               "sharper. For clean images when speed matters most.",
    "tiny-x4": "The quickest x4: runs int8 on a CPU, as fast as OpenCV's ESPCN and clearly "
               "sharper. For clean images when speed matters most.",
    "fast-x2": "Quick x2 for clean images (not blurred, noisy or JPEG-damaged): about a "
               "quarter of x2's time for most of its quality.",
    "x2": "The standard x2 for clean images: most of best-x2's quality in about 70 % of its "
          "time.",
    "best-x2": "The most accurate x2 upres ships (level with IDN, the best published network "
               "trained on the same 291 images), for clean images when quality matters more "
               "than time: about 1.5 times x2's.",
    "fast-x3": "Quick x3 for clean images: about a third of x3's time for most of its quality.",
    "x3": "The standard x3 for clean images: most of best-x3's quality in about half its "
          "time.",
    "best-x3": "The most accurate x3 upres ships (above IDN, the best published network "
               "trained on the same 291 images), for clean images when quality matters more "
               "than time: about twice x3's.",
    "fast-x4": "Quick x4 for clean images: about a third of x4's time for most of its quality.",
    "x4": "The standard x4 for clean images: most of best-x4's quality in about 70 % of "
          "its time.",
    "best-x4": "The most accurate x4 upres ships (above IDN, the best published network "
               "trained on the same 291 images), for clean images when quality matters more "
               "than time: about 1.4 times x4's.",
}


def summarise(path: Path) -> str:
    """Write :data:`SUMMARIES`' sentence into the card (tensors unchanged); no re-timing."""
    before = load_file(path)
    model, card = load_model(path)
    text = SUMMARIES.get(card.name)
    if text and card.summary != text:
        save_model(path, model, card.with_(summary=text))
    after = load_file(path)
    assert before.keys() == after.keys() and all((before[k] == after[k]).all() for k in before)
    return f"{card.name}: summary {'set' if text else 'kept'}"


def record_int8_scan(path: Path) -> str:
    """Write what ``upres.quantize.make_int8``'s sensitivity scan measured for the shipped
    weights into the card's ``int8_scan`` (tensors unchanged), so that a user's first int8 use
    makes the same graph without the scan. The graph is the one ``precision="int8"`` makes
    (photo models at clean-up strength 1, their own weights), from the int8 cache where it
    holds one stamped with the scan, else made here (minutes where the scan runs). Models
    whose int8 graph needs no scan get an empty field. ``path``: a file of the zoo."""
    import upres
    from upres.quantize import graph_note, int8_entry, int8_graph

    before = load_file(path)
    model, card = load_model(path)
    kw = {"denoise": 1.0} if card.denoise_base else {}
    up = upres.load(card.name, device="cpu", precision="fp32", **kw)
    net = up.int8_source()
    scan = None
    for cache in (True, False):  # a cached graph made before graphs carried the scan: again
        graph, _ = int8_graph(net, up.card, cache=cache)
        scan = int8_entry(graph).get("scan")
        if scan or "the most sensitive" not in graph_note(graph):  # no scan was needed
            break
    if (scan or {}) != card.int8_scan:
        save_model(path, model, card.with_(int8_scan=scan or {}))
    after = load_file(path)
    assert before.keys() == after.keys() and all((before[k] == after[k]).all() for k in before)
    return (f"{card.name}: int8 sensitivity order of {len(scan['order'])} convolutions recorded"
            if scan else f"{card.name}: its int8 graph needs no sensitivity scan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*", help="shipped model names (default: all)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--photo-note", action="store_true",
                    help="only add the photographs-only note to trained_on (no timing)")
    ap.add_argument("--summaries", action="store_true",
                    help="only write each model's user-facing summary (no timing)")
    ap.add_argument("--int8-scan", action="store_true",
                    help="only record what the int8 sensitivity scan measured (its order and the "
                         "graph it chose) in the card (no timing)")
    args = ap.parse_args()
    names = args.names or [c.name for c in zoo.shipped()]
    for n in names:
        if args.summaries:
            print(summarise(zoo.ZOO_DIR / f"{n}.safetensors"), flush=True)
            continue
        if args.int8_scan:
            print(record_int8_scan(zoo.ZOO_DIR / f"{n}.safetensors"), flush=True)
            continue
        if args.photo_note:
            print(note_photos(zoo.ZOO_DIR / f"{n}.safetensors"), flush=True)
            continue
        print(stamp(zoo.ZOO_DIR / f"{n}.safetensors", repeat=args.repeat), flush=True)


if __name__ == "__main__":
    main()
