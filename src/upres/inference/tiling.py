"""Splitting an image into overlapping tiles and placing the upscaled cores back.

Each tile is a *core* window of at most ``tile x tile`` input pixels, read with ``overlap``
pixels of context on every side (clamped at the image border). After upscaling, only the core's
part of the output is kept. When ``overlap`` covers the network's receptive-field radius the
tiled result is identical to the untiled one, with no blending and no float canvas of the
whole image: each tile's core is converted and written straight into the output array.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import pairwise

__all__ = ["Tile", "tile_grid"]


@dataclass(frozen=True)
class Tile:
    """One tile: ``core`` and ``padded`` are ``(y0, y1, x0, x1)`` windows of the input (half-open);
    ``crop`` is the core's window inside the padded tile."""

    core: tuple[int, int, int, int]
    padded: tuple[int, int, int, int]

    @property
    def crop(self) -> tuple[int, int, int, int]:
        y0, y1, x0, x1 = self.core
        py0, _, px0, _ = self.padded
        return y0 - py0, y1 - py0, x0 - px0, x1 - px0


def _starts(n: int, tile: int, align: int) -> list[int]:
    count = math.ceil(n / tile)
    # Spread tiles evenly so that no tile is a thin sliver; starts are multiples of ``align``.
    size = math.ceil(math.ceil(n / count) / align) * align
    starts = [i * size for i in range(count) if i * size < n]
    return [*starts, n]


def tile_grid(height: int, width: int, tile: int, overlap: int, align: int = 1) -> Iterator[Tile]:
    """Tiles covering an ``height x width`` input, row by row.

    ``tile``: core size in input pixels (>= 1); ``overlap``: context on each side (>= 0);
    ``align``: every core and padded window starts at a multiple of it (for networks that fold
    pixels into channels, whose output depends on the grid's phase); the overlap is rounded up
    to a multiple of it.
    """
    if tile < 1 or overlap < 0 or align < 1:
        raise ValueError(f"tile and align must be >= 1 and overlap >= 0, got {tile}, {align} "
                         f"and {overlap}")
    overlap = math.ceil(overlap / align) * align
    ys, xs = _starts(height, tile, align), _starts(width, tile, align)
    for y0, y1 in pairwise(ys):
        for x0, x1 in pairwise(xs):
            yield Tile(
                core=(y0, y1, x0, x1),
                padded=(max(0, y0 - overlap), min(height, y1 + overlap),
                        max(0, x0 - overlap), min(width, x1 + overlap)),
            )
