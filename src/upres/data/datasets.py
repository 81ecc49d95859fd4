"""HR image folders and the paired LR/HR patch sampler used for training."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from upres.data.degrade import bicubic_down, modcrop
from upres.errors import UpresError
from upres.formats.image import IMAGE_EXTS, read_rgb8
from upres.resize import imresize

__all__ = ["PairedPatchSampler", "check_rescale", "find_lr", "read_paired_lr", "scan_images",
           "to_float"]


def scan_images(folders: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """All image files under ``folders`` (recursive), sorted for a stable order."""
    files: list[Path] = []
    for folder in folders:
        root = Path(folder)
        if root.is_file():
            files.append(root)
            continue
        if not root.is_dir():
            raise UpresError(f"{root}: no such folder")
        files.extend(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTS)
    if not files:
        raise UpresError(f"no images found under {', '.join(map(str, folders))}")
    return sorted(files)


def check_rescale(rescale: Sequence[float], *, paired: bool) -> list[float]:
    """The distinct ``rescale`` factors, largest first; each must lie strictly between 0 and 1,
    and none are allowed with paired LR folders (``paired``), whose LR cannot be shrunk."""
    factors = sorted({float(f) for f in rescale}, reverse=True)
    if any(not 0.0 < f < 1.0 for f in factors):
        raise UpresError(f"rescale factors must lie strictly between 0 and 1, got {list(rescale)}")
    if factors and paired:
        raise UpresError("rescale makes its own LR; it cannot be used with paired LR folders")
    return factors


def find_lr(lr_dir: Path, stem: str, scale: int) -> Path | None:
    """The ready-made LR image for HR ``stem``: the first existing of ``X{s}/{stem}x{s}.*``,
    ``{stem}x{s}.*``, ``{stem}_x{s}.*``, ``{stem}.*`` under ``lr_dir`` (the layout of the
    common benchmark packages, e.g. ``Set5_LR_bicubic/X4/babyx4.png``)."""
    for sub, name in ((f"X{scale}", f"{stem}x{scale}"), ("", f"{stem}x{scale}"),
                      ("", f"{stem}_x{scale}"), ("", stem)):
        for ext in IMAGE_EXTS:
            p = lr_dir / sub / f"{name}{ext}"
            if p.is_file():
                return p
    return None


def read_paired_lr(lr_dir: Path, hr_file: Path, hr: np.ndarray, scale: int) -> np.ndarray:
    """The LR paired with ``hr_file`` (found by :func:`find_lr`) as uint8 RGB; it must measure
    exactly ``hr``'s size divided by ``scale``."""
    p = find_lr(lr_dir, hr_file.stem, scale)
    if p is None:
        raise UpresError(f"{lr_dir}: no LR image for {hr_file.name} at x{scale}")
    lr = read_rgb8(p)
    want = (hr.shape[0] // scale, hr.shape[1] // scale)
    if lr.shape[:2] != want:
        raise UpresError(f"{p}: LR is {lr.shape[1]}x{lr.shape[0]}, expected "
                         f"{want[1]}x{want[0]} for {hr_file.name} at x{scale}")
    return np.ascontiguousarray(lr)


@dataclass(frozen=True)
class _Pair:
    name: str
    hr: np.ndarray  # (H*s, W*s, 3) uint8
    lr: np.ndarray  # (H, W, 3) uint8
    factor: float = 1.0  # the ``rescale`` factor this copy was shrunk by (1: the original)


def to_float(batch: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 ``(B, H, W, C)`` -> float32 ``(B, C, H, W)`` in [0, 1] on ``device``, converted
    there (a quarter of the bytes cross to a GPU), in channels_last memory layout (the NHWC
    bytes as they are: call ``.contiguous()`` for the plain layout). On the CPU the values are
    :meth:`PairedPatchSampler.sample`'s exactly; a GPU may round x / 255 by one ulp."""
    t = torch.from_numpy(batch).to(device, non_blocking=True)
    return t.permute(0, 3, 1, 2).float().div_(255.0)


class PairedPatchSampler:
    """Random aligned LR/HR patches from HR images, LR made by MATLAB bicubic (or read from
    paired ``lr_folders``, matched by name, for users with real LR/HR pairs, or made from each
    HR patch by a ``degrade(hr_float, rng)`` pipeline such as ``second_order``, for blind SR).

    The whole image is downscaled once (as in the papers' pre-made LR sets) and kept in memory;
    a patch is a random LR window of ``patch x patch`` and the matching HR window, with one random
    flip / 90-degree rotation drawn per sample and applied to both. With a ``degrade`` pipeline,
    each patch gets its own generator seeded from the batch's ``rng``, and ``workers`` threads
    degrade the patches of a batch in parallel (the batch is the same for any ``workers``).

    ``variants > 0`` (with ``degrade``) degrades whole images instead of patches, as a blind test
    set is made: each image has ``variants`` degraded versions, version ``v`` of image ``k`` drawn
    from a generator seeded by ``(seed, k, v)``, made the first time a patch needs it (by the
    ``workers`` threads) and then kept in memory (``variants`` x the LR set's size, uint8). A patch
    is a window of one version; there is no patch border for blur kernels and resizes to mistreat,
    and after the first pass over the versions a step costs no degradation at all.

    ``rescale`` adds, for every HR image, copies shrunk by each factor (0 < f < 1, MATLAB bicubic
    with antialiasing, rounded to uint8, then modcropped; their LR made from them as above): the
    multi-scale augmentation of the papers trained on the 291 images (VDSR, DRRN, MemNet, IDN use
    0.9 / 0.8 / 0.7 / 0.6). A copy too small for one patch is skipped like a small image.

    ``sample`` returns ``lr`` ``(B, 3, patch, patch)`` and ``hr`` ``(B, 3, patch*s, patch*s)``,
    float32 in [0, 1].
    """

    def __init__(self, folders: Sequence[str | os.PathLike[str]], *, scale: int, patch: int,
                 augment: bool = True,
                 lr_folders: Sequence[str | os.PathLike[str]] | None = None,
                 degrade: Callable[[np.ndarray, np.random.Generator], np.ndarray] | None = None,
                 workers: int = 1, variants: int = 0, seed: int = 0,
                 rescale: Sequence[float] = ()) -> None:
        self.scale, self.patch, self.augment = scale, patch, augment
        self.degrade = degrade
        self.variants, self.seed = max(0, int(variants)), int(seed)
        self._versions: dict[tuple[int, int], np.ndarray] = {}
        self.workers = max(1, int(workers))
        self._pool: ThreadPoolExecutor | None = None
        if degrade is not None and lr_folders is not None:
            raise UpresError("paired LR folders and a degradation pipeline exclude each other")
        if lr_folders is not None and len(lr_folders) != len(folders):
            raise UpresError("give one LR folder per HR folder")
        self.factors = factors = check_rescale(rescale, paired=lr_folders is not None)
        # One job per (image, factor): its name, HR file, pixels, factor and paired LR folder.
        jobs: list[tuple[str, Path, np.ndarray, float, Path | None]] = []
        for i, folder in enumerate(folders):
            lr_dir = None if lr_folders is None else Path(lr_folders[i])
            for f in scan_images([folder]):
                hr = read_rgb8(f)
                jobs.append((f.name, f, hr, 1.0, lr_dir))
                jobs.extend((f"{f.name}@{r:g}", f, hr, r, lr_dir) for r in factors)
        made: list[_Pair | None] = [None] * len(jobs)

        def one(k: int) -> None:
            name, f, src, r, lr_dir = jobs[k]
            hr = modcrop(src if r == 1.0 else imresize(src, r), scale)
            if min(hr.shape[:2]) < patch * scale:
                return
            lr = (bicubic_down(hr, scale) if lr_dir is None
                  else read_paired_lr(lr_dir, f, hr, scale))
            made[k] = _Pair(name, np.ascontiguousarray(hr), lr, r)

        self._map(one, range(len(jobs)))
        pairs = [p for p in made if p is not None]
        self.skipped = [job[0] for job, p in zip(jobs, made, strict=True) if p is None]
        if not pairs:
            if not folders:
                raise UpresError("no training folder given (config key 'data.train')")
            raise UpresError(f"no training image in {', '.join(map(str, folders))} is at least "
                             f"{patch * scale} pixels on each side (data.patch {patch} x scale "
                             f"{scale}); lower data.patch")
        self.pairs = pairs
        # Draw images in proportion to the number of patch positions they hold.
        area = np.array([(p.lr.shape[0] - patch + 1) * (p.lr.shape[1] - patch + 1)
                         for p in pairs], dtype=np.float64)
        self.weights = area / area.sum()

    def describe(self) -> str:
        """One line for the training log: images, versions with ``rescale``, skipped ones."""
        originals = sum(p.factor == 1.0 for p in self.pairs)
        text = f"{originals} training images"
        if self.factors:
            text += (f" in {len(self.pairs)} versions (rescale "
                     f"{' '.join(f'{r:g}' for r in self.factors)})")
        return text + f" ({len(self.skipped)} too small, skipped)"

    def _map(self, fn: Callable[[Any], None], jobs: Sequence[Any]) -> None:
        if self.workers > 1 and len(jobs) > 1:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.workers)
            list(self._pool.map(fn, jobs))
        else:
            for job in jobs:
                fn(job)

    def _degrade_u8(self, hr: np.ndarray, g: np.random.Generator,
                    pipe: Callable[[np.ndarray, np.random.Generator], np.ndarray] | None = None
                    ) -> np.ndarray:
        """uint8 HR ``(sH, sW, 3)`` -> its degraded uint8 LR ``(H, W, 3)`` (rounded), by
        ``pipe`` (default: this sampler's pipeline)."""
        pipe = pipe or self.degrade
        assert pipe is not None
        return np.floor(pipe(hr.astype(np.float32) / 255.0, g) * 255.0 + 0.5).astype(np.uint8)

    def _make_versions(self, keys: set[tuple[int, int]]) -> None:
        """Degrade the whole images ``(image, version)`` not made yet (seeded per key)."""

        def one(key: tuple[int, int]) -> None:
            g = np.random.default_rng([self.seed, key[0], key[1]])
            pipe = self.degrade.at(self.level(key[1])) if self.leveled else None  # type: ignore[union-attr]
            self._versions[key] = self._degrade_u8(self.pairs[key[0]].hr, g, pipe)

        self._map(one, sorted(k for k in keys if k not in self._versions))

    def __len__(self) -> int:
        return len(self.pairs)

    @property
    def leveled(self) -> bool:
        """Whether versions have damage levels (a :class:`~upres.data.degrade.Leveled`
        pipeline with ``variants``): version ``v`` of every image is at level ``(v + 1) / V``."""
        return self.variants > 0 and hasattr(self.degrade, "at")

    def level(self, version: int) -> float:
        """The damage level of ``version`` (leveled data only)."""
        return (version + 1) / self.variants

    def sample_level(self, batch: int, rng: np.random.Generator, min_level: float = 0.0,
                     max_level: float = 1.0) -> tuple[torch.Tensor, torch.Tensor, float]:
        """As :meth:`sample`, every patch from the same version of its image, so the batch has
        one damage level ``t``, returned third (leveled data only); the version is drawn
        uniformly from those of level ``min_level <= t <= max_level``."""
        if not self.leveled:
            raise UpresError("a batch of one damage level needs data.degradation: leveled and "
                             "data.variants > 0")
        ok = [v for v in range(self.variants)
              if min_level - 1e-9 <= self.level(v) <= max_level + 1e-9]
        if not ok:
            raise UpresError(f"no damage level in [{min_level}, {max_level}] among "
                             f"{self.variants} versions")
        v = ok[int(rng.integers(len(ok)))]
        lr, hr = self.sample(batch, rng, version=v)
        return lr, hr, self.level(v)

    def sample(self, batch: int, rng: np.random.Generator, *, version: int | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        lrs, hrs = self.sample_u8(batch, rng, version=version)
        return to_float(lrs).contiguous(), to_float(hrs).contiguous()

    def sample_u8(self, batch: int, rng: np.random.Generator, *, version: int | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
        """The batch :meth:`sample` returns (the same draws from ``rng``), as it is made:
        uint8 ``(B, patch, patch, 3)`` and ``(B, patch*s, patch*s, 3)``, for a caller that
        converts on its device (:func:`to_float`)."""
        s, p = self.scale, self.patch
        lrs = np.empty((batch, p, p, 3), np.uint8)
        hrs = np.empty((batch, p * s, p * s, 3), np.uint8)
        jobs: list[tuple[int, np.ndarray, np.random.Generator]] = []
        picks = rng.choice(len(self.pairs), size=batch, p=self.weights)
        whole = self.degrade is not None and self.variants > 0
        if whole:
            versions = ([int(v) for v in rng.integers(0, self.variants, size=batch)]
                        if version is None else [version] * batch)
            self._make_versions({(int(k), v) for k, v in zip(picks, versions, strict=True)})
        for i, k in enumerate(picks):
            pair = self.pairs[k]
            y = int(rng.integers(0, pair.lr.shape[0] - p + 1))
            x = int(rng.integers(0, pair.lr.shape[1] - p + 1))
            src = self._versions[(int(k), versions[i])] if whole else pair.lr
            lr = src[y:y + p, x:x + p]
            hr = pair.hr[y * s:(y + p) * s, x * s:(x + p) * s]
            if self.augment:
                rot, flip = int(rng.integers(0, 4)), bool(rng.integers(0, 2))
                lr, hr = np.rot90(lr, rot), np.rot90(hr, rot)
                if flip:
                    lr, hr = lr[:, ::-1], hr[:, ::-1]
            if self.degrade is not None and not whole:  # blind SR per patch: LR made below
                jobs.append((i, hr, np.random.default_rng(rng.integers(2**63))))
            else:
                lrs[i] = lr
            hrs[i] = hr
        if jobs:
            # Each patch has its own generator, seeded from ``rng`` in order: the result does
            # not depend on the number of threads (OpenCV and NumPy release the GIL).
            def one(job: tuple[int, np.ndarray, np.random.Generator]) -> None:
                i, hr, g = job
                lrs[i] = self._degrade_u8(hr, g)

            self._map(one, jobs)
        return lrs, hrs
