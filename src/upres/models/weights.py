"""Saving and loading weights: upres ``.safetensors`` (with a :class:`ModelCard`) and
third-party ``.pth``/``.pt`` state dicts, loaded with ``torch.load(weights_only=True)``."""

from __future__ import annotations

import os
import pickle
import re
import warnings
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from upres.errors import UpresError, one_line
from upres.models.descriptor import ModelCard
from upres.models.registry import REGISTRY

__all__ = ["canonicalize", "load_model", "save_model"]

_CONTAINERS = ("params_ema", "params", "state_dict", "model", "net", "generator")


def canonicalize(obj: object) -> dict[str, torch.Tensor]:
    """Unwrap the usual containers (``params_ema``, ``params``, ``state_dict``, ...) and strip a
    ``module.`` prefix, returning a flat ``name -> tensor`` dict."""
    while isinstance(obj, Mapping):
        inner = next((obj[k] for k in _CONTAINERS if k in obj and isinstance(obj[k], Mapping)),
                     None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, Mapping):
        raise UpresError(f"expected a state dict, found {type(obj).__name__}")
    out: dict[str, torch.Tensor] = {}
    for k, v in obj.items():
        if isinstance(v, torch.Tensor):
            out[k.removeprefix("module.")] = v
    if not out:
        raise UpresError("the file holds no tensors")
    return out


def save_model(path: str | os.PathLike[str], model: nn.Module, card: ModelCard) -> Path:
    """Write ``model``'s weights (float32, contiguous) and ``card`` to a ``.safetensors`` file."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().float().contiguous().cpu() for k, v in model.state_dict().items()}
    tmp = p.with_suffix(p.suffix + ".part")
    save_file(state, str(tmp), metadata=card.to_metadata())
    os.replace(tmp, p)
    return p


#: The largest safetensors header upres reads (its JSON: tensor names, shapes, offsets).
MAX_HEADER = 16 * 2**20


def _check_safetensors_header(p: Path) -> None:
    """Refuse, before any parsing, a header that claims more than the file holds or more than
    :data:`MAX_HEADER`, and tensor offsets that point past the end of the file."""
    import json
    import struct

    size = p.stat().st_size
    with open(p, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise UpresError(f"{p}: not a safetensors file (shorter than its 8-byte header "
                             "length)")
        n = struct.unpack("<Q", head)[0]
        if n > min(MAX_HEADER, size - 8):
            raise UpresError(f"{p}: refused: its header claims {n} bytes, but the file has "
                             f"{size - 8} after the length and upres reads at most {MAX_HEADER}")
        try:
            header = json.loads(f.read(n))
        except ValueError:
            raise UpresError(f"{p}: not a safetensors file (its header is not JSON)") from None
    data = size - 8 - n
    for name, t in header.items() if isinstance(header, dict) else ():
        if name == "__metadata__" or not isinstance(t, dict):
            continue
        a, b = (t.get("data_offsets") or [0, 0])[:2]
        if not (isinstance(a, int) and isinstance(b, int) and 0 <= a <= b <= data):
            raise UpresError(f"{p}: refused: tensor {name!r} claims bytes {a}-{b} of a data "
                             f"section of {data}")


def _read_safetensors(p: Path) -> tuple[dict[str, torch.Tensor], ModelCard | None]:
    _check_safetensors_header(p)
    try:
        with safe_open(str(p), framework="pt") as f:
            meta = f.metadata()
            state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    except Exception as exc:  # safetensors raises its own error types
        raise UpresError(f"{p}: not a readable safetensors file ({one_line(exc, 200)})") \
            from None
    return state, ModelCard.from_file_metadata(meta, p)


def _read_pth(p: Path) -> dict[str, torch.Tensor]:
    with open(p, "rb") as f:
        head = f.read(4)
    # torch.save writes a zip archive (PK..) or, in old versions, a raw pickle (0x80 ...).
    if not (head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"):
        raise UpresError(f"{p}: not a weights file (expected upres .safetensors or a PyTorch "
                         f".pth/.pt state dict)")
    try:
        with warnings.catch_warnings():  # a damaged file gets our one line, not torch's warnings
            warnings.simplefilter("ignore")
            obj = torch.load(str(p), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise UpresError(
            f"{p}: refused: the file needs arbitrary unpickling (a whole pickled model, not a "
            f"state dict), which upres never executes"
        ) from None
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UpresError(f"{p}: cannot read weights ({first})") from None
    try:
        return canonicalize(obj)
    except UpresError as exc:
        raise UpresError(f"{p}: {exc}") from None


def _pick_scale(p: Path, scales: tuple[int, ...], scale: int | None) -> int:
    if scale is not None:
        if scale not in scales:
            raise UpresError(f"{p}: these weights upscale x{'/x'.join(map(str, scales))}, "
                             f"not x{scale}")
        return scale
    if len(scales) == 1:
        return scales[0]
    hint = re.search(r"x([2-8])(?![0-9])", p.stem.lower())
    if hint and int(hint.group(1)) in scales:
        return int(hint.group(1))
    if 4 in scales:
        return 4
    raise UpresError(f"{p}: the weights do not record their scale; pass one of {scales}")


def load_model(path: str | os.PathLike[str],
               scale: int | None = None) -> tuple[nn.Module, ModelCard]:
    """Build and load a model from ``.safetensors`` (upres) or ``.pth``/``.pt`` (third party).

    ``scale`` picks the scale for weights that hold several (CARN-M) or do not record theirs
    (FSRCNN; the file name's ``x2``/``x3``/``x4`` is used when no scale is given); for others it
    must match. Returns the model in eval mode on CPU, float32, and its card (for third-party
    files, one made from what the detector found).
    """
    p = Path(path)
    if not p.is_file():
        raise UpresError(f"{p}: no such weights file")
    if p.suffix == ".safetensors":
        state, card = _read_safetensors(p)
    else:
        state, card = _read_pth(p), None
    if card is None:
        try:
            arch, det = REGISTRY.detect(state)
        except UpresError as exc:
            raise UpresError(f"{p}: {exc}") from None
        s = _pick_scale(p, det.scales, scale)
        state = {k: v for k, v in state.items() if not k.endswith(det.drop)}
        params = sum(int(v.numel()) for v in state.values())
        card = ModelCard(name=p.stem, arch=arch, scale=s, hparams={**det.hparams, "scale": s},
                         params=params, notes=det.note, **det.conventions())
    elif scale is not None and scale != card.scale:
        if not card.hparams.get("multi_scale"):
            raise UpresError(f"{p}: model upscales x{card.scale}, not x{scale}")
        card = card.with_(scale=scale, hparams={**card.hparams, "scale": scale})
    try:
        model = REGISTRY.build(card.arch, card.hparams)
    except UpresError as exc:  # a card naming an architecture or settings this upres lacks
        raise UpresError(f"{p}: {exc}") from None
    own = model.state_dict()
    # State dicts from before PyTorch 0.4.1 lack BatchNorm's step counter; it is unused here.
    state = {**{k: v for k, v in own.items() if k.endswith("num_batches_tracked")}, **state}
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in own if k in state and own[k].shape != state[k].shape]
    if missing or unexpected or wrong:
        parts = [f"{name}: {', '.join(keys[:4])}{' ...' if len(keys) > 4 else ''}"
                 for name, keys in (("missing", missing), ("unexpected", unexpected),
                                    ("wrong shape", wrong)) if keys]
        raise UpresError(f"{p}: weights do not fit architecture {card.arch!r} "
                         f"({'; '.join(parts)})")
    model.load_state_dict(state, strict=True)
    return model.eval(), card


def state_sha256(model: torch.nn.Module) -> str:
    """SHA-256 (hex) of a network's state dict: tensor names and float32 values in name order.
    What identifies its weights wherever results are cached or resumed (cheap for these
    models)."""
    import hashlib

    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()

