"""Ship a trained run as a named zoo model: evaluate it, stamp its card, copy recipe and log.

    .venv/bin/python scripts/ship_model.py runs/fast-x2 x2

Evaluates ``RUN/final.safetensors`` on Set5, Set14 and BSD100 (standard protocol, the same
``evaluate`` that ``upres eval`` runs), writes ``src/upres/zoo/NAME.safetensors`` with the measured
PSNR/SSIM in its model card, and copies ``config.yaml`` -> ``NAME.yaml`` and
``train.log`` -> ``NAME.log`` beside it, then stamps GMACs and CPU latency
(``scripts/stamp_cards.py``; run it on a quiet machine).

``--default-precision int8`` ships a model made to run quantised: its card says so, and its
PSNR and latency are measured on the int8 path (``upres.quantize``), as users will run it.

A model trained in stages names the earlier stage's run folder with ``--prior RUN`` (its
``train.log`` and ``final.safetensors``), once per earlier stage, oldest first: the shipped log
holds those stages' logs first, and the card's ``train_seconds`` counts every stage (``steps``
and the recipe stay the last stage's).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from stamp_cards import SUMMARIES, stamp, with_photo_note

from upres.data.degrade import DEGRADATIONS, Leveled
from upres.evaluate import evaluate
from upres.inference.upscaler import Upscaler
from upres.models.weights import load_model, save_model
from upres.models.zoo import ZOO_DIR

BENCH = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "benchmark"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("name")
    ap.add_argument("--notes", default=None,
                    help="the card's notes (default: those of the model shipped under NAME, "
                         "printed so that they can be checked)")
    ap.add_argument("--zoo-dir", type=Path, default=ZOO_DIR, help="where to ship (default: zoo)")
    ap.add_argument("--prior", type=Path, action="append", default=[],
                    help="run folder of an earlier stage (repeat for several, oldest first)")
    ap.add_argument("--trained-on", default="291 images (T91 + BSD200), LR by MATLAB bicubic")
    ap.add_argument("--denoise-base", default="",
                    help="photo models: the shipped model that is clean-up strength 0; the "
                         "PSNR is then measured as upres eval does, at the automatic strength")
    ap.add_argument("--summary", default="", help="what the model is for, in a user's words "
                    "(default: stamp_cards.SUMMARIES' sentence for the name)")
    ap.add_argument("--denoise-fit", default="",
                    help='photo models: the automatic strength map from scripts/fit_denoise.py, '
                         'as JSON ({"a": ..., "b": ..., "c": ..., "d": ...})')
    ap.add_argument("--default-precision", default="", choices=("", "int8"),
                    help="int8: the model runs quantised on a CPU by default (upres.quantize); "
                         "its PSNR and CPU latency are then measured on that path")
    args = ap.parse_args()
    model, card = load_model(args.run / "final.safetensors")
    card = card.with_(default_precision=args.default_precision)
    deg = DEGRADATIONS.get(card.config.get("data", {}).get("degradation", ""))
    if deg is not None and isinstance(deg(card.scale), Leveled) and \
            card.config.get("model", {}).get("denoise_base"):
        card = card.with_(denoise_level=True)  # auto strength: upres.inference.level
    if args.denoise_fit:
        import json

        card = card.with_(denoise_fit=json.loads(args.denoise_fit))
    up = Upscaler(model, card, device="cpu")
    if args.denoise_base:
        from upres.api import resolve_weights
        from upres.inference.denoise import PhotoUpscaler

        base, _ = load_model(resolve_weights(args.denoise_base))
        photo = {k: v.clone() for k, v in model.state_dict().items()}
        up = PhotoUpscaler(Upscaler(model, card, device="cpu"), base.state_dict(), photo)
    psnr, ssim = {}, {}
    for ds in ("Set5", "Set14", "BSD100"):
        res = evaluate(up.upscale, model_name=args.name, dataset=BENCH / ds, scale=card.scale)
        psnr[ds], ssim[ds] = round(res.psnr_y, 4), round(res.ssim_y, 5)
        print(f"{args.name} {ds} x{card.scale}: PSNR-Y {res.psnr_y:.3f} SSIM-Y {res.ssim_y:.4f}")
    trained_on = with_photo_note(args.trained_on)  # every shipped card carries it
    notes = args.notes
    if notes is None:
        shipped = args.zoo_dir / f"{args.name}.safetensors"
        notes = load_model(shipped)[1].notes if shipped.is_file() else ""
        print(f"notes kept from the shipped {args.name} (--notes to change): {notes!r}")
    log = (args.run / "train.log").read_text()
    seconds = card.train_seconds
    for prior in reversed(args.prior):
        _, prior_card = load_model(prior / "final.safetensors")
        seconds += prior_card.train_seconds
        log = (prior / "train.log").read_text() + log
    card = card.with_(name=args.name, psnr=psnr, ssim=ssim, trained_on=trained_on,
                      notes=notes, train_seconds=round(seconds, 1),
                      denoise_base=args.denoise_base,
                      summary=args.summary or SUMMARIES.get(args.name, ""))
    if args.denoise_base:
        up.set_strength(1.0)  # the file holds the strong endpoint
    out = save_model(args.zoo_dir / f"{args.name}.safetensors", model, card)
    shutil.copy(args.run / "config.yaml", args.zoo_dir / f"{args.name}.yaml")
    (args.zoo_dir / f"{args.name}.log").write_text(log)
    print(stamp(out))  # GMACs and CPU latency at 720p output
    print(f"shipped {out}")


if __name__ == "__main__":
    main()
