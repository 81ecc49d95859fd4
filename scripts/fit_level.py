"""Train the damage-level estimator behind ``--denoise auto`` (issue 22) on the training images.

    .venv/bin/python scripts/fit_level.py -s 4              # src/upres/assets/level_x4.safetensors
    .venv/bin/python scripts/fit_level.py -s 2 --native 0   # the shipped x2 estimator's recipe

Each of the 291 training images (never benchmark images) is degraded ``--versions`` times at
random levels of :class:`upres.data.degrade.Leveled` (the levels the photo models' strengths are
trained on; a fifth of them clean, level 0), whole, as users' files are. A version that takes
Leveled's second-order (blind) branch is labelled 1 whatever level drew it: that branch does not
depend on the level, and strength 1 is what it was trained for. ``--native`` of the versions
(default 30 %) are damaged at the image's own resolution (Leveled at scale 1, everyday branch),
so that a photo at camera resolution, softer than a downscaled one, reads as clean when it is
(the shipped x4 estimator; at x2 it did not help full-size photos and cost blur readings, so
the x2 one is trained with ``--native 0``: README, session 14).
The estimator (:class:`upres.inference.level.LevelNet`) sees two 64x64 windows of a version
(corners on the 8x8 JPEG grid; only :func:`upres.inference.level.usable` ones, as when it
reads an image) and the two measured features of the whole version, and learns its level (mean
squared error). A tenth of the images are held out: the script prints the held-out mean error,
and sets the threshold under which ``auto`` leaves the clean model alone (``off``, stored with
the weights) at the 90th percentile of the held-out clean images' readings (at least
``upres.inference.denoise.LEVEL_OFF``), so that nine clean images in ten get exactly ``x{s}``'s
output, as ``scripts/fit_denoise.py`` asked of the earlier formula. ``--calibrate`` only
re-measures the held-out figures and the threshold of the estimator already written.

``--objective psnr`` (session 27) fits the strength itself rather than the level: each version
is then a ``--crop``-pixel LR crop (its HR crop kept), the photo model ``photo-x{s}`` upscales
it at the strengths 0, 1/8, ..., 1 and the PSNR-Y of each is stored, and the estimator learns
to read the strength that maximises PSNR (loss: the dB it loses against the crop's best
strength, the curve interpolated linearly between the measured strengths), from ``--init``
(the level estimator) when given. The held-out figures then include that loss (``regret``) and
the gain over strength 0 for the estimator written and for ``--init``, read the same way.

``--single`` (session 35) draws the versions from ``Leveled(single=...)``: 0.5 is
``leveled_single``, the mixture the shipped photo endpoints were fine-tuned on (half of the
everyday passes one kind alone), where the default 0 is the earlier ``leveled`` (with
``--objective psnr`` too, since session 36: the crops' damage).

``--fit-map`` (session 37) keeps the written estimator and fits the map from its reading to
the strength ``auto`` gives (:func:`upres.inference.level.strength_of`: ``clip(a * (level +
blind ** power * (1 - level)) + b, 0, 1)``, ``power`` only for an estimator with the kind
output) by a grid search for the largest mean gain in PSNR-Y over strength 0 on
``--objective psnr``'s crops (``--versions``, ``--seed``, ``--crop``, ``--single``,
``--images``; kept in ``--curves``), a tenth of their images held out and reported; crops
read under ``off`` stay at 0, as ``auto`` leaves them. The map is stored beside the weights
(``map``, and its figures as ``map_fit``); the threshold ``off`` is still a test on the
reading itself.

``--kind`` (session 35) gives the estimator a second output, whether the damage is the blind
kind (binary cross-entropy on every version), and fits the level on the everyday versions
only; :func:`upres.inference.level.estimate_level` then reads a version as its everyday level
moved towards 1 by the blind kind's probability. The held-out figures add the blind kind's
accuracy (``kind_acc``) and the everyday versions' level error (``mae_everyday``).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import pickle
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from upres.data.datasets import scan_images
from upres.data.degrade import Leveled, modcrop
from upres.formats.image import read_rgb8
from upres.inference.denoise import LEVEL_OFF, blockiness, noise_sigma
from upres.inference.level import WINDOW, LevelNet, level_path, read_windows, usable

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT.parent / "shared" / "data" / "train"


def damage_scaled(pipe: Leveled, hr: np.ndarray, rng: np.random.Generator, t: float
                  ) -> tuple[np.ndarray, float]:
    """``hr`` uint8 (modcropped) damaged and downscaled by ``pipe`` at level ``t`` -> (LR
    uint8, its label): the blind (second-order) branch, drawn with its share at ``t``, is
    labelled 1 whatever level drew it."""
    blind = t > 0 and bool(rng.random() < pipe.blind_at(t))
    lr = pipe.draw(hr.astype(np.float32) / 255, rng, t, blind=blind)
    if lr.dtype != np.uint8:
        lr = np.floor(lr * 255 + 0.5).astype(np.uint8)
    return lr, 1.0 if blind else t


def make_versions(s: int, versions: int, seed: int, threads: int, native: float = 0.0,
                  single: float = 0.0
                  ) -> list[tuple[int, np.ndarray, float, float, float, bool]]:
    """``(image index, LR uint8, level, noise, blocking, native)`` for every version of every
    image that has a usable window (``single``: :class:`Leveled`'s share of one-kind passes)."""
    files = scan_images([TRAIN])
    pipe, own = Leveled(s, single=single), Leveled(1, single=single)

    def one(job: tuple[int, int]) -> tuple[int, np.ndarray, float, float, float, bool] | None:
        k, v = job
        rng = np.random.default_rng([seed, k, v])
        t = 0.0 if rng.random() < 0.2 else float(rng.uniform(0.02, 1.0))
        at_own = bool(rng.random() < native)
        hr = read_rgb8(files[k])
        if at_own and min(hr.shape[:2]) < WINDOW:
            return None
        if at_own:
            lr = hr if t == 0 else own.draw(hr.astype(np.float32) / 255, rng, t, blind=False)
        else:
            hr = modcrop(hr, s)
            if min(hr.shape[:2]) < WINDOW * s:
                return None
            lr, t = damage_scaled(pipe, hr, rng, t)
        if lr.dtype != np.uint8:
            lr = np.floor(lr * 255 + 0.5).astype(np.uint8)
        if not read_windows(lr):
            return None
        return k, lr, t, noise_sigma(lr), blockiness(lr), at_own

    jobs = [(k, v) for k in range(len(files)) for v in range(versions)]
    with ThreadPoolExecutor(threads) as pool:
        return [r for r in pool.map(one, jobs) if r is not None]


#: the strengths at which ``--objective psnr`` measures each version's PSNR-Y
STRENGTHS = np.linspace(0.0, 1.0, 9)


def make_curves(s: int, versions: int, seed: int, crop: int, single: float = 0.0,
                images: int | None = None
                ) -> list[tuple[int, np.ndarray, float, float, float, bool, np.ndarray]]:
    """``(image index, LR uint8, level, noise, blocking, False, PSNR-Y per strength)`` for
    ``versions`` LR crops (``crop`` pixels a side, or the whole image when smaller) of every
    training image, damaged as :func:`make_versions` damages whole images; the curve is the
    PSNR-Y (dB, standard protocol) of ``photo-x{s}`` at :data:`STRENGTHS` on the crop
    (``single``: :class:`Leveled`'s share of one-kind passes; ``images``: only the first
    that many training images, in :func:`scan_images`' order)."""
    import upres
    from upres.metrics import psnr_y

    files = scan_images([TRAIN])[:images]
    pipe = Leveled(s, single=single)
    photo = upres.load(f"photo-x{s}", device="cpu", precision="fp32")
    out = []
    for k in range(len(files)):
        full = modcrop(read_rgb8(files[k]), s)
        for v in range(versions):
            rng = np.random.default_rng([seed, k, v, 1])
            t = 0.0 if rng.random() < 0.2 else float(rng.uniform(0.02, 1.0))
            ch, cw = (min(crop * s, n // s * s) for n in full.shape[:2])
            if min(ch, cw) < WINDOW * s:
                continue
            y = int(rng.integers(0, (full.shape[0] - ch) // s + 1)) * s
            x = int(rng.integers(0, (full.shape[1] - cw) // s + 1)) * s
            hr = np.ascontiguousarray(full[y:y + ch, x:x + cw])
            lr, t = damage_scaled(pipe, hr, rng, t)
            if not read_windows(lr):
                continue
            curve = np.array([psnr_y(photo.upscale(lr, denoise=float(g)), hr, shave=s)
                              for g in STRENGTHS], dtype=np.float32)
            out.append((k, lr, t, noise_sigma(lr), blockiness(lr), False, curve))
        if (k + 1) % 50 == 0:
            print(f"  curves: {k + 1} of {len(files)} images", flush=True)
    return out


def curve_at(curves: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """PSNR-Y at strengths ``t`` ``(N,)`` in [0, 1] of ``curves`` ``(N, len(STRENGTHS))``,
    linear between the measured strengths (differentiable in ``t``)."""
    pos = t.clamp(0.0, 1.0) * (len(STRENGTHS) - 1)
    i = pos.detach().floor().clamp(max=len(STRENGTHS) - 2).long()
    lo = curves.gather(1, i[:, None])[:, 0]
    hi = curves.gather(1, i[:, None] + 1)[:, 0]
    return lo + (hi - lo) * (pos - i)


def regret(net_reads: np.ndarray, curves: np.ndarray) -> tuple[float, float]:
    """Mean dB lost against each curve's best strength, and mean gain over strength 0, at
    the strengths ``net_reads`` ``(N,)``."""
    got = curve_at(torch.from_numpy(curves), torch.from_numpy(net_reads.astype(np.float32)))
    got = got.numpy()
    return float((curves.max(1) - got).mean()), float((got - curves[:, 0]).mean())


def batch(data: list, idx: np.ndarray, rng: np.random.Generator, per: int = 2
          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    xs, ex, ys, cs = [], [], [], []
    for i in idx:
        _, lr, t, noise, block, _ = data[int(i)][:6]
        if len(data[int(i)]) > 6:
            cs.append(data[int(i)][6])
        h, w = lr.shape[:2]
        for _ in range(per):
            for _try in range(20):  # a usable window, as the estimator reads an image
                y = int(rng.integers(0, (h - WINDOW) // 8 + 1)) * 8
                x = int(rng.integers(0, (w - WINDOW) // 8 + 1)) * 8
                win = lr[y:y + WINDOW, x:x + WINDOW]
                if usable(win):
                    break
            else:  # mostly flat: one of the windows it is read in (there is one)
                ok = read_windows(lr)
                y, x, _, _ = ok[int(rng.integers(len(ok)))]
                win = lr[y:y + WINDOW, x:x + WINDOW]
            win = np.rot90(win, int(rng.integers(0, 4)))  # keeps the 8x8 grid on the corners
            if rng.random() < 0.5:
                win = win[:, ::-1]
            xs.append(win)
            ex.append([math.log1p(noise), block])
        ys.append(t)
    x = torch.from_numpy(np.stack(xs).astype(np.float32) / 255).permute(0, 3, 1, 2).contiguous()
    curves = torch.from_numpy(np.stack(cs)) if cs else None
    return x, torch.tensor(ex, dtype=torch.float32), torch.tensor(ys, dtype=torch.float32), curves


def curves_of(data: list, idx: np.ndarray) -> np.ndarray:
    """The PSNR curves ``(len(idx), len(STRENGTHS))`` of the versions ``idx``."""
    return np.stack([data[int(i)][6] for i in idx])


def held_out(net: LevelNet, data: list, idx: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The estimator's reading ``(len(idx),)`` of the versions ``idx`` (read as users' images
    are: :func:`upres.inference.level.estimate_level`), their true levels ``(len(idx),)``, and
    the two outputs it is made of ``(len(idx), 2)`` (everyday level, blind probability:
    :func:`upres.inference.level.read_damage`), each image read once."""
    from upres.inference.level import read_damage, strength_of

    both = np.array([read_damage(data[i][1], net, noise=data[i][3], blocking=data[i][4])
                     for i in idx]).reshape(len(idx), 2)
    return strength_of(both[:, 0], both[:, 1]), np.array([data[i][2] for i in idx]), both


def fit_map(net: LevelNet, off: float, data: list, fit: np.ndarray, val: np.ndarray) -> dict:
    """The map from a reading to a strength (:func:`upres.inference.level.strength_of`: ``a``,
    ``b`` and, for an estimator with the kind output, ``power``) that gains most over strength
    0 on the crops ``fit`` of ``data`` (made by :func:`make_curves`), crops read under ``off``
    left at 0 as ``auto`` leaves them; a grid search. Returns the map and the mean gains
    (dB over strength 0) of it and of the identity on ``fit`` and on the held-out ``val``."""
    from upres.inference.level import IDENTITY, strength_of

    reading, _, reads = held_out(net, data, np.arange(len(data)))
    level, blind = reads[:, 0], reads[:, 1]
    under = reading < off
    curves = np.stack([d[6] for d in data])

    def gain(m: dict, idx: np.ndarray) -> float:
        t = np.where(under, 0.0, strength_of(level, blind, m))
        return regret(t[idx], curves[idx])[1]

    powers = (1.0, 0.75, 0.5, 0.4, 1 / 3, 0.25) if net.kind else (1.0,)
    grid = [{"a": round(float(a), 3), "b": round(float(b), 3), "power": round(p, 3)}
            for a in np.arange(0.8, 1.301, 0.05) for b in np.arange(-0.1, 0.201, 0.025)
            for p in powers]
    best = max(grid, key=lambda m: gain(m, fit))
    return {"map": best,
            "fit": {"crops": len(fit), "gain": round(gain(best, fit), 4),
                    "identity_gain": round(gain(IDENTITY, fit), 4),
                    "oracle_gain": round(float((curves[fit].max(1) - curves[fit, 0]).mean()), 4)},
            "held_out": {"crops": len(val), "gain": round(gain(best, val), 4),
                         "identity_gain": round(gain(IDENTITY, val), 4),
                         "oracle_gain": round(float((curves[val].max(1) - curves[val, 0]).mean()),
                                              4)}}


def load_curves(args: argparse.Namespace) -> list:
    """:func:`make_curves` for the arguments' scale, versions, seed, crop and ``single``,
    read from (or kept in) ``--curves`` when given."""
    cache = Path(args.curves) if getattr(args, "curves", None) else None
    made = {"scale": args.scale, "versions": args.versions, "seed": args.seed,
            "crop": args.crop, "strengths": STRENGTHS.tolist()}
    if getattr(args, "single", 0.0):
        made["single"] = args.single
    if getattr(args, "images", None):
        made["images"] = args.images
    if cache is not None and cache.is_file():
        with cache.open("rb") as fh:
            kept = pickle.load(fh)
        if kept.get("made") != made:
            raise SystemExit(f"{cache}: made with {kept.get('made')}, not {made}; give "
                             "another --curves file")
        return kept["data"]
    data = make_curves(args.scale, args.versions, args.seed, args.crop,
                       getattr(args, "single", 0.0), getattr(args, "images", None))
    if cache is not None:
        with cache.open("wb") as fh:
            pickle.dump({"made": made, "data": data}, fh)
    return data


def write_map(args: argparse.Namespace, out: Path) -> None:
    """``--fit-map``: :func:`fit_map` for the estimator in ``out`` on the crops of
    :func:`load_curves` (a tenth of their images held out, seeded by ``--seed``), stored in
    its ``upres_level`` metadata as ``map`` (read by
    :func:`upres.inference.level.estimator_map`) with the figures as ``map_fit``."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from upres.inference.level import estimator_off, read_estimator

    if not out.is_file():
        raise SystemExit(f"{out}: no estimator to fit a map for")
    state = load_file(str(out))
    with safe_open(str(out), framework="pt") as fh:
        written = (fh.metadata() or {}).get("upres_level")
    if written is None:
        raise SystemExit(f"{out}: not an estimator written by scripts/fit_level.py")
    meta = json.loads(written)
    torch.set_num_threads(args.threads)
    t0 = time.time()
    data = load_curves(args)
    images = sorted({d[0] for d in data})
    rng = np.random.default_rng(args.seed)
    held = set(rng.choice(images, size=max(1, len(images) // 10), replace=False).tolist())
    fit = np.array([i for i, d in enumerate(data) if d[0] not in held])
    val = np.array([i for i, d in enumerate(data) if d[0] in held])
    found = fit_map(read_estimator(out), estimator_off(out), data, fit, val)
    found["curves"] = {"versions": args.versions, "seed": args.seed, "crop": args.crop,
                       "single": getattr(args, "single", 0.0),
                       "first_images": getattr(args, "images", None),
                       "images_with_crops": len(images)}
    found["seconds"] = round(time.time() - t0)
    print(json.dumps(found))
    meta["map"] = found.pop("map")
    meta["map_fit"] = found
    save_file(state, str(out), metadata={"upres_level": json.dumps(meta)})
    print(f"wrote {out}")


def init_state(path: str, net: LevelNet) -> dict[str, torch.Tensor]:
    """The weights in ``path`` as ``net`` takes them: an estimator without the kind output
    given to one with it keeps its level, and the kind output starts as ``net``'s own."""
    from safetensors.torch import load_file

    state = load_file(path)
    mine = net.state_dict()
    if net.kind and state["head.2.weight"].shape[0] == 1:
        for k in ("head.2.weight", "head.2.bias"):
            state[k] = torch.cat([state[k], mine[k][1:]])
    return state


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-s", "--scale", type=int, required=True)
    ap.add_argument("--versions", type=int, default=20)
    ap.add_argument("--steps", type=int, default=9000)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--native", type=float, default=0.3,
                    help="share of versions damaged at the image's own resolution")
    ap.add_argument("--margin", type=float, default=0.0,
                    help="stretch the estimator's sigmoid to [-margin, 1 + margin] (clipped "
                         "when read), so the levels 0 and 1 are reachable")
    ap.add_argument("--objective", choices=("level", "psnr"), default="level",
                    help="learn the damage level (default) or the PSNR-best strength")
    ap.add_argument("--crop", type=int, default=128,
                    help="--objective psnr: LR crop side of each version")
    ap.add_argument("--curves", default=None,
                    help="--objective psnr: keep the measured versions in this file (.pkl) "
                         "and reuse them when it exists")
    ap.add_argument("--single", type=float, default=0.0,
                    help="Leveled's share of one-kind everyday passes (0.5: leveled_single, "
                         "what the shipped photo endpoints are trained on)")
    ap.add_argument("--kind", action="store_true",
                    help="a second output for the blind kind (the level fitted on everyday "
                         "versions only)")
    ap.add_argument("--kind-weight", type=float, default=1.0,
                    help="--kind: the weight of the kind's cross-entropy beside the level's "
                         "squared error")
    ap.add_argument("--init", default=None, help="start from this estimator's weights")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("-o", "--out", default=None)
    ap.add_argument("--calibrate", action="store_true",
                    help="keep the written weights; re-measure the held-out figures and 'off'")
    ap.add_argument("--images", type=int, default=None,
                    help="--objective psnr, --fit-map: crops of the first N training images only")
    ap.add_argument("--fit-map", action="store_true",
                    help="keep the written weights; fit their map from a reading to a strength "
                         "on --objective psnr's crops (--versions, --seed, --crop, --single; "
                         "kept in --curves) and store it with them")
    args = ap.parse_args()
    out = Path(args.out) if args.out else level_path(args.scale)
    if args.fit_map:
        write_map(args, out)
        return
    trained: dict = {}
    state = None
    if args.calibrate:  # the written estimator; its arguments remade into data by this version
        from safetensors import safe_open
        from safetensors.torch import load_file

        state = load_file(str(out))
        with safe_open(str(out), framework="pt") as fh:
            trained = json.loads(fh.metadata()["upres_level"])
        args = argparse.Namespace(**{**trained["args"], "calibrate": True, "out": args.out})
    kind = getattr(args, "kind", False)
    if kind and getattr(args, "objective", "level") == "psnr":
        raise SystemExit("--kind fits the level objective only")
    net = LevelNet(margin=getattr(args, "margin", 0.0), kind=kind)
    init = getattr(args, "init", None)
    if state is None and init:
        state = init_state(init, net)
    if state is not None:
        net.load_state_dict(state)
    first = copy.deepcopy(net).eval()  # --init (or a fresh net) for the held-out comparison
    if args.calibrate and init:
        first.load_state_dict(init_state(init, first))
    psnr_objective = getattr(args, "objective", "level") == "psnr"
    if psnr_objective and not args.out:
        raise SystemExit("--objective psnr: give -o FILE (the shipped estimator stays)")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    t0 = time.time()
    if psnr_objective:
        data = load_curves(args)
    else:
        data = make_versions(args.scale, args.versions, args.seed, args.threads,
                             getattr(args, "native", 0.0), getattr(args, "single", 0.0))
    images = sorted({d[0] for d in data})
    rng = np.random.default_rng(args.seed)
    held = set(rng.choice(images, size=max(1, len(images) // 10), replace=False).tolist())
    train = np.array([i for i, d in enumerate(data) if d[0] not in held])
    val = np.array([i for i, d in enumerate(data) if d[0] in held])
    print(f"{len(data)} versions of {len(images)} images ({len(val)} held out) in "
          f"{time.time() - t0:.0f} s", flush=True)
    peak = getattr(args, "lr", 1e-3)
    opt = torch.optim.Adam(net.parameters(), lr=peak)
    for step in range(0 if args.calibrate else args.steps):
        for g in opt.param_groups:
            g["lr"] = 1e-5 + 0.5 * (peak - 1e-5) * (1 + math.cos(math.pi * step / args.steps))
        x, ex, y, curves = batch(data, rng.choice(train, size=args.batch), rng)
        read, logit = net.both(x, ex, group=2)
        if curves is not None:  # the dB lost against each crop's best strength
            loss = (curves.max(1).values - curve_at(curves, read)).mean()
        elif logit is not None:  # the kind on every version, the level on everyday ones
            blind = (y == 1.0).float()  # (everyday levels are drawn from [0.02, 1))
            loss = getattr(args, "kind_weight", 1.0) * \
                torch.nn.functional.binary_cross_entropy_with_logits(logit, blind)
            every = blind == 0
            if every.any():
                loss = loss + torch.nn.functional.mse_loss(read[every], y[every])
        else:
            loss = torch.nn.functional.mse_loss(read, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if (step + 1) % 1000 == 0:
            net.eval()
            pred, true, _ = held_out(net, data, val[::4])
            net.train()
            lost = (f", held-out regret {regret(pred, curves_of(data, val[::4]))[0]:.4f} dB"
                    if psnr_objective else "")
            print(f"step {step + 1} loss {loss.item():.4f}, held-out mean error "
                  f"{np.abs(pred - true).mean():.4f}, clean read {pred[true == 0].mean():.3f}"
                  f"{lost} ({time.time() - t0:.0f} s)", flush=True)
    net.eval()
    pred, true, both = held_out(net, data, val)
    clean = true == 0
    summary = {"scale": args.scale, "versions": len(data), "held_out": len(val),
               "mae": round(float(np.abs(pred - true).mean()), 4),
               "clean_mean": round(float(pred[clean].mean()), 4),
               "top_mean": round(float(pred[true == 1].mean()), 4),  # the blind kind's reading
               "seconds": trained.get("seconds", round(time.time() - t0))}
    if kind:  # the two outputs apart: the kind's accuracy, the everyday level's error
        blind = true == 1.0
        summary["kind_acc"] = round(float(((both[:, 1] >= 0.5) == blind).mean()), 4)
        summary["kind_acc_blind"] = round(float((both[blind, 1] >= 0.5).mean()), 4)
        summary["mae_everyday"] = round(float(np.abs(both[~blind, 0] - true[~blind]).mean()), 4)
    for lo, hi in ((0.0, 0.3), (0.3, 0.7), (0.7, 1.01)):
        m = (true > lo) & (true < hi)
        summary[f"mae_{lo:g}_{hi:g}"] = round(float(np.abs(pred[m] - true[m]).mean()), 4)
    own = np.array([data[i][5] for i in val], dtype=bool)
    if own.any():  # the downscaled and the own-resolution versions apart
        for name, m in (("scaled", ~own), ("native", own)):
            summary[f"mae_{name}"] = round(float(np.abs(pred[m] - true[m]).mean()), 4)
            if (m & clean).any():
                summary[f"clean_mean_{name}"] = round(float(pred[m & clean].mean()), 4)
    off = max(LEVEL_OFF, float(np.percentile(pred[clean], 90)))
    summary["off"] = round(off, 3)
    if psnr_objective:  # dB against the best strength per crop, and over strength 0
        curves = curves_of(data, val)
        before, _, _ = held_out(first, data, val)
        before_off = max(LEVEL_OFF, float(np.percentile(before[clean], 90)))
        for name, reads, cut in (("", pred, off), ("init_", before, before_off)):
            for tag, r in (("", reads), ("_off", np.where(reads < cut, 0.0, reads))):
                lost, gain = regret(r, curves)
                summary[f"{name}regret{tag}"] = round(lost, 4)
                summary[f"{name}gain{tag}"] = round(gain, 4)
        summary["oracle_gain"] = round(float((curves.max(1) - curves[:, 0]).mean()), 4)
    summary["damaged_under_off"] = round(float((pred[~clean] < off).mean()), 4)
    if (own & clean).any():
        summary["native_clean_under_off"] = round(float((pred[own & clean] < off).mean()), 4)
    print(json.dumps(summary))
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(out),
              metadata={"upres_level": json.dumps({
                  **summary, "args": vars(args),
                  **{k: trained[k] for k in ("map", "map_fit") if k in trained}})})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
