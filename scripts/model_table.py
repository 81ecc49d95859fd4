"""Write the "architectures" section of docs/models.md: every registered architecture with its
parameters and multiply-adds (the ladder sections, from benchmarks/compare_peers.py, are kept).

    .venv/bin/python scripts/model_table.py

MACs and parameters come from :func:`upres.models.macs.count_macs` (an output of 1280x720,
inference form, SPAN folded).
"""

from __future__ import annotations

import sys
from pathlib import Path

from upres.models.macs import count_macs
from upres.models.registry import REGISTRY

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from _report import MODELS_DOC, MODELS_HEADER, update_section

# (label, arch, hyper-parameters without scale): the configurations papers compare.
CONFIGS = [
    ("UpNet 48x6 (upres: fast tier)", "upnet", {"channels": 48, "depth": 6}),
    ("UpNet 64x10 (upres: x3)", "upnet", {"channels": 64, "depth": 10}),
    ("UpNet 64x16 (upres: x2, x4, photo-x4)", "upnet", {"channels": 64, "depth": 16}),
    ("SRCNN 9-5-5 (RGB)", "srcnn", {}),
    ("FSRCNN (d56 s12 m4, Y)", "fsrcnn", {}),
    ("ESPCN (RGB)", "espcn", {}),
    ("VDSR (Y)", "vdsr", {}),
    ("EDSR-baseline", "edsr", {"channels": 64, "blocks": 16, "res_scale": 1.0}),
    ("EDSR", "edsr", {"channels": 256, "blocks": 32, "res_scale": 0.1}),
    ("CARN-M (one net, x2/x3/x4)", "carn_m", {}),
    ("IMDN", "imdn", {}),
    ("RFDN (AIM 2020: 50 ch, 4 blocks)", "rfdn", {}),
    ("SAFMN (36 dim, 8 blocks)", "safmn", {}),
    ("SPAN (48 ch, 6 blocks)", "span", {}),
    ("SwinIR lightweight", "swinir", {}),
    ("SRVGGNetCompact (64, 16 convs)", "srvgg", {}),
    ("SRResNet / SRGAN G", "srresnet", {}),
    ("RRDBNet (ESRGAN, 23 blocks)", "rrdbnet", {}),
]
SCALES = {"srresnet": (2, 4), "rrdbnet": (2, 4)}


def main() -> None:
    lines = ["| model | arch | x2 params / GMACs | x3 params / GMACs | x4 params / GMACs |",
             "|---|---|---|---|---|"]
    for label, arch, hp in CONFIGS:
        cells = []
        for s in (2, 3, 4):
            if s not in SCALES.get(arch, (2, 3, 4)):
                cells.append("-")
                continue
            params, gmacs = count_macs(arch, hp, s)
            cells.append(f"{params / 1e3:,.1f}k / {gmacs:,.1f}")
        lines.append(f"| {label} | `{arch}` | " + " | ".join(cells) + " |")
        print(lines[-1])
    summaries = "\n".join(f"- `{n}`: {REGISTRY.get(n).summary}" for n in REGISTRY.names())
    update_section(
        "architectures", "Architectures",
        "Every architecture in `upres.models.REGISTRY`, in the configurations "
        "papers compare. Parameters are those of the inference form (SPAN folded; it trains with "
        "about four times as many); GMACs are "
        "multiply-adds for a 1280x720 output (inputs 640x360, 427x240, 320x180; pre-upsampling "
        "models see 1280x720), counted by `torch.utils.flop_counter` (convolutions and matrix "
        "products only), in inference form (SPAN folded).\n\n" + "\n".join(lines)
        + "\n\n### Registered architectures\n\n" + summaries + "\n",
        doc=MODELS_DOC, header=MODELS_HEADER)


if __name__ == "__main__":
    main()
