"""``auto`` alone on the degradation ladder (issue 22): PSNR-Y of the photo model at its
automatic strength per rung, with the mean strength chosen and the share left at 0, for the
shipped level estimator or one given with ``--level``, and the shipped clean-up endpoint or one
given with ``--photo`` (a training run's weights: A/Bs in a few minutes, where
``benchmarks/photo_ladder.py`` runs every model), blended with the shipped photo model's clean
endpoint or with the shipped model named by ``--base`` (a candidate on another network, whose
strength 0 is that model); ``--niqe`` adds NIQE on L3. ``--full-size``
reads BSD100's HR images at their own size instead (clean photos at camera resolution) and
prints the share that reads under the estimator's threshold. Prints; writes nothing but ladder
images that are missing (``scripts/make_ladder.py``'s, under ``runs/ladder-x{s}``).

    .venv/bin/python benchmarks/ladder_auto.py -s 2 [--level FILE.safetensors]
        [--photo FILE.safetensors [--base MODEL]] [--niqe] [--full-size]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import upres
from upres.data.ladder import make_ladder_set
from upres.evaluate import evaluate, load_benchmark
from upres.inference import level
from upres.models import zoo

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT.parent / "shared" / "data" / "benchmark"


def use_estimator(path: Path, scale: int) -> None:
    """Make ``path`` the estimator ``auto`` reads with at ``scale`` (this process only)."""
    level.level_net.cache_clear()
    level.level_off.cache_clear()
    level.level_map.cache_clear()
    shipped = level.level_path
    level.level_path = lambda s: path if s == scale else shipped(s)  # type: ignore[assignment]


def use_photo(pu, path: Path) -> None:
    """Make the weights in ``path`` the clean-up endpoint (strength 1) of ``pu``."""
    import torch
    from safetensors.torch import load_file

    state = load_file(str(path))
    if set(state) != set(pu.photo) or any(state[k].shape != v.shape for k, v in pu.photo.items()):
        raise SystemExit(f"{path}: not the architecture of {pu.card.name}")
    pu.photo = {k: v.to(torch.float32) for k, v in state.items()}
    pu.strength = None  # reload the blend at the next call


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-s", "--scale", type=int, required=True)
    ap.add_argument("--level", type=Path, default=None, help="estimator file (default: shipped)")
    ap.add_argument("--photo", type=Path, default=None,
                    help="clean-up endpoint weights (default: the shipped photo model's)")
    ap.add_argument("--base", default=None,
                    help="with --photo: the shipped model that is strength 0 (default: the "
                         "photo model's own clean endpoint)")
    ap.add_argument("--niqe", action="store_true", help="NIQE of the outputs on L3")
    ap.add_argument("--ladder", default=str(ROOT / "runs" / "ladder"))
    ap.add_argument("--full-size", action="store_true",
                    help="read BSD100's HR images as they are instead of the ladder")
    args = ap.parse_args()
    s = args.scale
    if args.level is not None:
        use_estimator(args.level.resolve(), s)
    if args.full_size:
        from upres.formats.image import read_rgb8

        net, off = level.level_net(s), level.level_off(s)
        reads = np.array([level.estimate_level(read_rgb8(p), net)
                          for p in sorted((BENCH / "BSD100").glob("*.png"))])
        print(f"x{s} estimator {level.level_path(s)}: {100 * np.mean(reads < off):.0f} % of "
              f"{len(reads)} full-size BSD100 images under off {off:.3f} (mean level "
              f"{reads.mean():.3f})")
        return
    photo = zoo.photo_for(s)
    if photo is None:
        raise SystemExit(f"x{s}: no photo model shipped")
    if args.base is not None:
        if args.photo is None:
            raise SystemExit("--base needs --photo (the clean-up endpoint on its network)")
        from safetensors.torch import load_file

        from upres.inference.denoise import PhotoUpscaler

        try:
            up = upres.load(args.base, device="cpu", precision="fp32", scale=s)  # float weights
        except upres.UpresError as exc:
            raise SystemExit(f"--base {args.base}: {exc}") from None
        if up.card.denoise_base:
            raise SystemExit(f"--base {args.base}: a photo model; name a network such as "
                             f"{up.card.denoise_base}")
        # strengths read as the shipped photo model reads them
        up.card = up.card.with_(denoise_level=photo.denoise_level, denoise_fit=photo.denoise_fit)
        try:
            pu = PhotoUpscaler(up, up.model.state_dict(), load_file(str(args.photo)))
        except ValueError:
            raise SystemExit(f"{args.photo}: not the architecture of {args.base}") from None
    else:
        pu = upres.load(photo.name, device="cpu")
        if args.photo is not None:
            use_photo(pu, args.photo)
    print(f"estimator {level.level_path(s)}, off {level.level_off(s):.3f}, endpoint "
          f"{args.photo or photo.name}" + (f" on {args.base}" if args.base else ""))
    for rung in ("L0", "L1", "L2", "L3"):
        for name in ("Set14", "BSD100"):
            lr_dir = Path(f"{args.ladder}-x{s}") / rung / name
            make_ladder_set(BENCH / name, lr_dir, scale=s, rung=rung)
            images = load_benchmark(str(BENCH / name), s, str(lr_dir))
            used: list[float] = []

            def run(lr: np.ndarray, used: list[float] = used) -> np.ndarray:
                out = pu.upscale(lr, denoise="auto")
                used.append(pu.last[0])
                return out

            niqe = args.niqe and rung == "L3"
            r = evaluate(run, model_name="auto", dataset=str(BENCH / name), scale=s,
                         images=images, with_ssim=False, niqe=niqe)
            print(f"x{s} {rung} {name}: {r.psnr_y:.3f} dB, strength {np.mean(used):.2f} "
                  f"({100 * np.mean(np.array(used) == 0):.0f} % at 0)"
                  + (f", NIQE {r.niqe:.2f}" if niqe else ""), flush=True)


if __name__ == "__main__":
    main()
