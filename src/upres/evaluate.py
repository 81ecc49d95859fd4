"""Models x datasets -> PSNR/SSIM by the standard protocol (PROTOCOL.md).

For each HR image: read as 8-bit RGB (gray -> three channels), modcrop to the scale, make the LR
with MATLAB bicubic, upscale it, round to uint8, and score on Y with a ``scale``-pixel border
shave. Set PSNR/SSIM are means of the per-image values.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from upres.data.datasets import find_lr, read_paired_lr, scan_images
from upres.data.degrade import bicubic_down, modcrop
from upres.errors import UpresError
from upres.formats.image import read_rgb8
from upres.metrics import psnr, psnr_y, ssim, ssim_y

__all__ = ["EvalResult", "ImageScore", "evaluate", "find_lr", "load_benchmark", "to_markdown"]

#: ``(H, W, 3)`` uint8 LR -> ``(H*s, W*s, 3)`` uint8 SR
UpscaleFn = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class ImageScore:
    name: str
    psnr_y: float
    ssim_y: float
    psnr_rgb: float | None = None
    ssim_rgb: float | None = None
    niqe: float | None = None
    denoise: float | None = None  # a photo model's clean-up strength for this image


@dataclass(frozen=True)
class EvalResult:
    """One model on one dataset; the JSON schema of ``upres eval --json``."""

    model: str
    dataset: str
    scale: int
    psnr_y: float
    ssim_y: float
    n_images: int
    per_image: list[ImageScore] = field(default_factory=list)
    psnr_rgb: float | None = None  # only with rgb=True: on R, G, B (not the protocol's Y)
    ssim_rgb: float | None = None
    niqe: float | None = None  # only with niqe=True: mean NIQE of the outputs (no reference)

    def to_json(self) -> dict:
        """The DESIGN.md schema; RGB and NIQE figures appear only when they were asked for."""
        out = asdict(self)
        for keys in (("psnr_rgb", "ssim_rgb"), ("niqe",)):
            if out[keys[0]] is None:
                for k in keys:
                    out.pop(k)
                    for item in out["per_image"]:
                        item.pop(k)
        for item in out["per_image"]:
            if item["denoise"] is None:
                item.pop("denoise")
        return out


def min_side(scale: int) -> int:
    """The smallest HR side the protocol can measure at ``scale``: ``scale`` pixels shaved from
    each border must leave SSIM's 11-pixel window, rounded up to a multiple of ``scale``."""
    return -(-(2 * scale + 11) // scale) * scale


def load_benchmark(folder: str | os.PathLike[str], scale: int,
                   lr_dir: str | os.PathLike[str] | None = None
                   ) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """``(name, hr, lr)`` for each image of ``folder``: modcropped 8-bit RGB HR and its LR, both
    uint8 ``(H, W, 3)``. The LR is MATLAB bicubic of the HR, or read from ``lr_dir`` (see
    :func:`upres.data.datasets.find_lr`), which must then hold an LR of exactly ``HR / scale``
    for every image."""
    out = []
    for f in scan_images([folder]):
        hr = np.ascontiguousarray(modcrop(read_rgb8(f), scale))
        side = min_side(scale)
        if min(hr.shape[:2]) < side:
            raise UpresError(f"{f}: {hr.shape[1]}x{hr.shape[0]} (after cropping to a multiple "
                             f"of {scale}) is too small to measure at x{scale}: the protocol "
                             f"needs at least {side}x{side} pixels")
        if lr_dir is None:
            lr = bicubic_down(hr, scale)
        else:
            lr = read_paired_lr(Path(lr_dir), f, hr, scale)
        out.append((f.stem, hr, lr))
    return out


def input_hints(folder: str | os.PathLike[str]) -> dict[str, dict]:
    """Per image of ``folder`` (by stem), what a photo model reads from the file itself: a
    JPEG's quality (``{"quality": q}``)."""
    from upres.inference.denoise import jpeg_quality

    return {f.stem: {"quality": jpeg_quality(f)} for f in scan_images([folder])}


def load_inputs(folder: str | os.PathLike[str], scale: int
                ) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """``(name, shown, lr)`` for images without ground truth (real-world photos): ``lr`` the
    image as 8-bit RGB, ``shown`` the same enlarged ``scale`` times by nearest neighbour (what
    the report puts where the HR would be, and the output's expected shape)."""
    out = []
    for f in scan_images([folder]):
        lr = np.ascontiguousarray(read_rgb8(f))
        out.append((f.stem, np.repeat(np.repeat(lr, scale, 0), scale, 1), lr))
    return out


def to_markdown(results: Sequence[EvalResult]) -> str:
    """A Markdown table: one row per model, PSNR-Y / SSIM-Y per dataset and scale."""
    cols = list(dict.fromkeys((r.dataset, r.scale) for r in results))
    models = list(dict.fromkeys(r.model for r in results))
    cell = {(r.model, r.dataset, r.scale): r for r in results}
    head = "| model | " + " | ".join(f"{d} x{s}" for d, s in cols) + " |"
    rows = [head, "|---|" + "---|" * len(cols)]
    for m in models:
        vals = []
        for d, s in cols:
            r = cell.get((m, d, s))
            vals.append(f"{r.psnr_y:.2f} / {r.ssim_y:.4f}" if r else "-")
        rows.append(f"| {m} | " + " | ".join(vals) + " |")
    return ("\n".join(rows) + "\n\nPSNR-Y (dB) / SSIM-Y by the standard protocol: MATLAB-bicubic "
            "LR, luma (BT.601), border shaved by the scale.\n")


def evaluate(
    upscale: UpscaleFn,
    *,
    model_name: str,
    dataset: str | os.PathLike[str],
    scale: int,
    with_ssim: bool = True,
    images: Sequence[tuple[str, np.ndarray, np.ndarray]] | None = None,
    rgb: bool = False,
    on_output: Callable[[str, np.ndarray], None] | None = None,
    niqe: bool = False,
    progress: bool = False,
    reference: bool = True,
    hints: Mapping[str, dict] | None = None,
    strength: Callable[[], float | None] | None = None,
) -> EvalResult:
    """Score ``upscale`` on one dataset folder by the standard protocol.

    ``images`` may pass pre-loaded ``load_benchmark`` output (used by training validation).
    ``rgb`` adds PSNR/SSIM on the R, G, B channels (SSIM: mean over channels), same shave.
    ``on_output(name, sr)`` receives each uint8 output (for reports). ``niqe`` adds each
    output's NIQE (no-reference; upres's pristine model, see :mod:`upres.niqe`). ``progress``:
    a bar of images with ETA on stderr. ``reference=False`` (inputs without ground truth, from
    :func:`load_inputs`): no PSNR/SSIM (NaN), NIQE only. ``hints``: keyword arguments for
    ``upscale`` per image name (a JPEG's quality for photo models). ``strength()``: the
    clean-up strength the last ``upscale`` call used (photo models), kept per image.
    """
    import sys

    from tqdm import tqdm

    from upres.niqe import niqe as niqe_score

    data = images if images is not None else load_benchmark(dataset, scale)
    scores = []
    for name, hr, lr in tqdm(data, unit="img", desc=f"{model_name} {Path(dataset).name}",
                             disable=not progress, leave=False, file=sys.stderr,
                             dynamic_ncols=True):
        sr = upscale(lr, **(hints or {}).get(name, {}))
        if sr.shape != hr.shape or sr.dtype != np.uint8:
            raise ValueError(f"{name}: upscaler returned {sr.shape} {sr.dtype}, expected "
                             f"{hr.shape} uint8")
        if on_output is not None:
            on_output(name, sr)
        p_rgb = s_rgb = None
        niqe = niqe or not reference
        if rgb and reference:
            p_rgb = psnr(sr, hr, shave=scale)
            s_rgb = float(np.mean([ssim(sr[..., c], hr[..., c], shave=scale) for c in range(3)]))
        nq = None
        if niqe:
            try:
                nq = niqe_score(sr)
            except ValueError as exc:  # too small for NIQE's 96x96 patches
                raise UpresError(f"{name}: {exc}") from None
        nan = float("nan")
        scores.append(ImageScore(name, psnr_y(sr, hr, shave=scale) if reference else nan,
                                 ssim_y(sr, hr, shave=scale) if with_ssim and reference
                                 else nan, p_rgb, s_rgb, nq,
                                 strength() if strength is not None else None))
    return EvalResult(
        model=model_name, dataset=Path(dataset).name, scale=scale,
        psnr_y=float(np.mean([s.psnr_y for s in scores])),
        ssim_y=float(np.mean([s.ssim_y for s in scores])),
        n_images=len(scores), per_image=scores,
        psnr_rgb=float(np.mean([s.psnr_rgb for s in scores])) if rgb and reference else None,
        ssim_rgb=float(np.mean([s.ssim_rgb for s in scores])) if rgb and reference else None,
        niqe=float(np.mean([s.niqe for s in scores])) if niqe else None,
    )
