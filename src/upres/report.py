"""A static HTML report of an evaluation: the table, and for every image side-by-side crops of
HR, bicubic and each model around the region where the models disagree most.

The report is one ``index.html`` plus PNG crops in ``img/``; it needs no network and no script
library (a few lines of inline JavaScript toggle the zoom).
"""

from __future__ import annotations

import html
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from upres.evaluate import EvalResult
from upres.formats.image import write_image
from upres.metrics import rgb_to_y
from upres.resize import imresize

__all__ = ["disagreement_window", "write_report"]

#: ``(dataset, scale) -> image name -> (hr, lr, {model: sr})``, all uint8 ``(H, W, 3)``
Outputs = Mapping[tuple[str, int], Mapping[str, tuple[np.ndarray, np.ndarray,
                                                      Mapping[str, np.ndarray]]]]

_CSS = """
body{font:15px/1.4 system-ui,sans-serif;margin:1.5rem;color:#222;background:#fafafa}
table{border-collapse:collapse;margin:.5rem 0 1.5rem}
td,th{border:1px solid #ccc;padding:.25rem .6rem}
th{background:#eee}td.num{text-align:right;font-variant-numeric:tabular-nums}
.row{display:flex;flex-wrap:wrap;gap:.6rem;margin:.4rem 0 1.4rem}
figure{margin:0;background:#fff;border:1px solid #ddd;padding:.3rem}
figcaption{font-size:12px;text-align:center;max-width:18rem}
img.crop{image-rendering:pixelated;cursor:zoom-in;display:block}
img.crop.zoom{cursor:zoom-out}
"""

_JS = """
document.querySelectorAll('img.crop').forEach(function(im){
  im.addEventListener('click',function(){
    var z=im.classList.toggle('zoom');var px=(z?6:3)*(+im.dataset.w)+'px';
    im.style.width=px;im.style.height=px;});
});
"""


def disagreement_window(srs: Sequence[np.ndarray], hr: np.ndarray, size: int,
                        border: int = 0) -> tuple[int, int]:
    """Top-left ``(y, x)`` of the ``size x size`` window where the outputs differ most.

    With two or more outputs: the largest sum of the per-pixel standard deviation of their Y;
    with one: the largest sum of its absolute Y error against ``hr``. Pixels within ``border``
    of the edge (which the protocol shaves, and where padding differs) do not count.
    """
    ys = [rgb_to_y(s) for s in srs]
    score = np.std(np.stack(ys), axis=0) if len(ys) >= 2 else np.abs(ys[0] - rgb_to_y(hr))
    if border and min(score.shape) > 2 * border:
        score[:border], score[-border:], score[:, :border], score[:, -border:] = 0, 0, 0, 0
    h, w = score.shape
    size = min(size, h, w)
    integral = np.pad(score, ((1, 0), (1, 0))).cumsum(0).cumsum(1)
    sums = (integral[size:, size:] - integral[:-size, size:] - integral[size:, :-size]
            + integral[:-size, :-size])
    y, x = np.unravel_index(int(np.argmax(sums)), sums.shape)
    return int(y), int(x)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-")[:60] or "x"


def write_report(out_dir: str | os.PathLike[str], results: Sequence[EvalResult],
                 outputs: Outputs, *, crop: int = 96, reference: bool = True) -> Path:
    """Write ``out_dir/index.html`` and ``out_dir/img/*.png``; returns the HTML path.

    ``crop``: side of the HR-resolution crop shown for each image (displayed 3x, 6x on click).
    ``reference=False``: inputs without ground truth; the first panel is the input enlarged by
    nearest neighbour and the figures are NIQE (no reference; lower is more natural).
    """
    out = Path(out_dir)
    (out / "img").mkdir(parents=True, exist_ok=True)
    models = list(dict.fromkeys(r.model for r in results))
    cols = list(dict.fromkeys((r.dataset, r.scale) for r in results))
    cell = {(r.model, r.dataset, r.scale): r for r in results}
    per_image = {(r.model, r.dataset, r.scale): {p.name: p for p in r.per_image}
                 for r in results}
    esc = html.escape
    parts = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'>"
             f"<meta name='viewport' content='width=device-width,initial-scale=1'>"
             f"<title>upres evaluation</title><style>{_CSS}</style></head><body>",
             "<h1>upres evaluation</h1>",
             ("<p>PSNR-Y (dB) / SSIM-Y by the standard protocol: MATLAB-bicubic LR, luma "
              "(BT.601), border shaved by the scale." if reference else
              "<p>Real inputs without ground truth: judge by eye. The figures are NIQE "
              "(no-reference naturalness, upres's own fit: lower is more natural), not "
              "fidelity. Models that clean up (photo models) remove what they take for "
              "noise and invent plausible texture: not for measurement, medical, satellite "
              "analysis or forensics.")
             + " Crops show where the models disagree most; click a crop to zoom.</p>",
             "<table><tr><th>model</th>"
             + "".join(f"<th>{esc(d)} x{s}</th>" for d, s in cols) + "</tr>"]
    for m in models:
        tds = []
        for d, s in cols:
            r = cell.get((m, d, s))
            val = (f"{r.psnr_y:.2f} / {r.ssim_y:.4f}" if reference else
                   f"NIQE {r.niqe:.2f}") if r else None
            tds.append(f"<td class='num'>{val}</td>" if val else "<td>-</td>")
        parts.append(f"<tr><td>{esc(m)}</td>{''.join(tds)}</tr>")
    parts.append("</table>")
    for (dataset, scale), images in outputs.items():
        parts.append(f"<h2>{esc(dataset)} x{scale}</h2>")
        for name, (hr, lr, srs) in images.items():
            y, x = disagreement_window(list(srs.values()), hr, crop, border=2 * scale)
            c = min(crop, hr.shape[0], hr.shape[1])
            bic = srs.get("bicubic")
            if bic is None:
                bic = imresize(lr, float(scale))
            first = "HR" if reference else "input (nearest)"
            panels = [(first, hr, None),
                      ("bicubic", bic, per_image.get(("bicubic", dataset, scale), {}).get(name))]
            panels += [(m, sr, per_image.get((m, dataset, scale), {}).get(name))
                       for m, sr in srs.items() if m != "bicubic"]
            figs = []
            for label, img, score in panels:
                f = f"img/{_slug(dataset)}_x{scale}_{_slug(name)}_{_slug(label)}.png"
                write_image(out / f, np.ascontiguousarray(img[y:y + c, x:x + c]), overwrite=True)
                fig = None if score is None else (f"{score.psnr_y:.2f} dB" if reference else
                                                  f"NIQE {score.niqe:.2f}"
                                                  if score.niqe is not None else None)
                if score is not None and score.denoise is not None:
                    fig = (f"{fig}, " if fig else "") + f"clean-up {score.denoise:.2f}"
                cap = esc(label) + (f"<br>{fig}" if fig else "")
                figs.append(f"<figure><img class='crop' src='{f}' alt='{esc(label)} crop of "
                            f"{esc(name)}' width='{c * 3}' height='{c * 3}' data-w='{c}'>"
                            f"<figcaption>{cap}</figcaption></figure>")
            parts.append(f"<h3>{esc(name)} <small>(crop at x={x}, y={y}, {c}x{c} px)"
                         f"</small></h3><div class='row'>{''.join(figs)}</div>")
    parts.append(f"<script>{_JS}</script></body></html>")
    index = out / "index.html"
    from upres.formats.files import atomic_write

    atomic_write(index, "\n".join(parts).encode("utf-8"), overwrite=True)  # never half-written
    return index
