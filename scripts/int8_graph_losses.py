"""What the int8 graphs ``upres.quantize.make_int8`` tries would lose on the calibration crops,
for weights files (issue 25: is a model's last convolution within the 0.05 dB rule in int8?).

    .venv/bin/python scripts/int8_graph_losses.py WEIGHTS.safetensors [...]

For each file: the PSNR-Y (dB) its int8 graph loses against its float32 network on the bundled
calibration crops (training-set images), with the last convolution int8, the same with channel
ranges equalised, and with the last convolution float32 (the first stays float32 in all three).
"""

from __future__ import annotations

import sys

import torch

from upres import quantize
from upres.models.weights import load_model


def main() -> None:
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    torch.set_num_threads(1)
    crops = quantize.load_calibration()
    for path in sys.argv[1:]:
        model, card = load_model(path)
        model.eval()
        card = card.with_(default_precision="")
        ref = quantize._psnrs(model, card, crops)
        for words, kw in (("last convolution int8", {"tail": True}),
                          ("last convolution int8, ranges equalised",
                           {"tail": True, "equalise": True}),
                          ("last convolution float32", {"tail": False})):
            graph = quantize.quantize_int8(model, card, crops=crops, **kw)
            loss = quantize.calibration_loss(model, card, graph, crops, reference=ref)
            print(f"{path}: {words}: {loss:.4f} dB", flush=True)


if __name__ == "__main__":
    main()
