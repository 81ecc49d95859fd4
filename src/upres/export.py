"""ONNX export and the onnxruntime backend.

``export_onnx`` writes a network as an ONNX graph with dynamic batch, height and width; the
graph is the bare network (its own input convention: RGB or Y, [0, 1] or [0, 255], as the
model card says) and the card travels in the file's metadata (``upres`` key), so
:func:`load_onnx` gives back an ``(OnnxNet, ModelCard)`` pair that the ordinary
:class:`~upres.inference.upscaler.Upscaler` runs with tiling, alpha, gray and 16-bit handling
unchanged.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import warnings
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from upres.errors import UpresError, one_line
from upres.models.descriptor import ModelCard
from upres.models.registry import REGISTRY

__all__ = ["MIN_OPSET", "OPSET", "GraphNet", "OnnxNet", "describe_io", "export_onnx",
           "io_convention", "load_onnx", "onnx_bytes", "set_metadata", "write_onnx"]

# Highest opset of torch's TorchScript-based exporter; onnxruntime >= 1.17 runs all of it.
OPSET = 20
#: the lowest opset every shipped architecture exports at (8 and below lack repeat_interleave)
MIN_OPSET = 9


@contextlib.contextmanager
def _quiet_stdout() -> Iterator[None]:
    """Send what native code writes to file descriptor 1 to /dev/null meanwhile."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def onnx_bytes(model: nn.Module, card: ModelCard, *, opset: int = OPSET) -> bytes:
    """The serialized ONNX model of ``model`` (float32, CPU): input ``input``
    ``(N, C, H, W)``, output ``output`` ``(N, C, H*s, W*s)`` (``H, W`` for pre-upsampling
    models), batch/height/width dynamic, the card in ``metadata_props['upres']`` and the
    input convention in words in its doc strings and plain metadata (:func:`describe_io`)."""
    spec = REGISTRY.get(card.arch) if card.arch in REGISTRY.names() else None
    if spec is not None and not spec.onnx:
        raise UpresError(f"{card.name}: architecture {card.arch} cannot be exported to ONNX with "
                         "dynamic sizes (parts of its graph depend on the input size)")
    if not MIN_OPSET <= opset <= OPSET:
        raise UpresError(f"opset must be {MIN_OPSET} to {OPSET}, got {opset}")
    import onnx

    model = model.float().cpu().eval()
    ch = 1 if card.color == "y" else 3
    side = max(16, card.min_size, card.size_multiple)
    side = -(-side // card.size_multiple) * card.size_multiple
    x = torch.rand(1, ch, side, side) * card.value_range
    with torch.inference_mode():
        model(x)  # re-parameterised architectures fold their branches on the first call
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:  # the exporter prints the graph to stdout when it gives up: not to the user
            with _quiet_stdout():
                torch.onnx.export(model, (x,), buf, dynamo=False, opset_version=opset,
                                  input_names=["input"], output_names=["output"],
                                  dynamic_axes={"input": {0: "batch", 2: "height", 3: "width"},
                                                "output": {0: "batch", 2: "out_height",
                                                           3: "out_width"}})
        except torch.onnx.errors.OnnxExporterError as exc:  # an op missing at this opset
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise UpresError(f"{card.name}: ONNX export at opset {opset} failed "
                             f"({first[:200]})") from None
    proto = onnx.load_from_string(buf.getvalue())
    entry = proto.metadata_props.add()
    entry.key, entry.value = "upres", json.dumps(asdict(card), sort_keys=True)
    proto.producer_name = "upres"
    describe_io(proto, card)
    return proto.SerializeToString()


# plain metadata keys for runtimes and viewers that do not read upres's JSON card
_IO_KEYS = ("upres_input", "upres_output", "upres_scale", "upres_value_range")


def io_convention(card: ModelCard) -> dict[str, str]:
    """What a graph of ``card`` takes and gives, in words, for someone running the file in
    plain onnxruntime (the network's own convention; upres does the conversions itself):
    ``{"upres_input": ..., "upres_output": ..., "upres_scale": "4",
    "upres_value_range": "1"}``."""
    bands = "1 channel, luma Y (BT.601, of YCbCr)" if card.color == "y" else "3 channels, RGB"
    vr = f"{card.value_range:g}"
    size = "height and width"
    if card.min_size > 1:
        size += f" at least {card.min_size}"
    if card.size_multiple > 1:
        size += f", multiples of {card.size_multiple}"
    pre = (f"; the image already enlarged {card.scale}x by bicubic (pre-upsampling network)"
           if card.pre_upsample else "")
    c = "1" if card.color == "y" else "3"
    hw = "height, width" if card.pre_upsample else f"{card.scale}*height, {card.scale}*width"
    out = (f"float32 (batch, {c}, {hw}), the same channels and range as the input, not "
           f"clipped (clip to [0, {vr}])")
    return {"upres_input": f"float32 (batch, {c}, height, width), {bands}, values in "
                           f"[0, {vr}], {size}{pre}",
            "upres_output": out, "upres_scale": str(card.scale), "upres_value_range": vr}


def metadata(model: bytes | object) -> dict[str, str]:
    """The plain ``metadata_props`` entries of an ONNX model (serialized bytes or a
    ``ModelProto``) as ``{key: value}``: what :func:`set_metadata` and :func:`export_onnx`
    write."""
    import onnx

    proto = onnx.load_from_string(model) if isinstance(model, bytes) else model
    return {e.key: e.value for e in proto.metadata_props}  # type: ignore[attr-defined]


def set_metadata(proto: object, entries: dict[str, str]) -> None:
    """Set plain ``metadata_props`` entries of the ONNX ``proto`` (changed in place): each key
    of ``entries`` once, with its value; other keys kept."""
    p = proto  # onnx.ModelProto
    keep = [e for e in p.metadata_props if e.key not in entries]  # type: ignore[attr-defined]
    del p.metadata_props[:]  # type: ignore[attr-defined]
    p.metadata_props.extend(keep)  # type: ignore[attr-defined]
    for key, value in entries.items():
        entry = p.metadata_props.add()  # type: ignore[attr-defined]
        entry.key, entry.value = key, value


def describe_io(proto: object, card: ModelCard) -> None:
    """Write :func:`io_convention` into the ONNX ``proto`` (changed in place): the model's and
    the graph input's and output's ``doc_string`` and plain ``metadata_props`` entries, which
    onnxruntime shows as ``modelmeta.description`` and ``custom_metadata_map``: the value range
    ([0, 1] or [0, 255]) and the channels are otherwise only inside the JSON card, and a wrong
    guess gives plausible but wrong pixels rather than an error."""
    conv = io_convention(card)
    p = proto  # onnx.ModelProto
    set_metadata(p, conv)
    p.doc_string = (f"upres {card.name} (x{card.scale}, {card.arch}"  # type: ignore[attr-defined]
                    f"{', ' + card.quantized if card.quantized else ''}). "
                    f"input: {conv['upres_input']}. output: {conv['upres_output']}.")
    p.graph.input[0].doc_string = conv["upres_input"]  # type: ignore[attr-defined]
    p.graph.output[0].doc_string = conv["upres_output"]  # type: ignore[attr-defined]


def export_onnx(model: nn.Module, card: ModelCard, path: str | os.PathLike[str], *,
                opset: int = OPSET) -> Path:
    """Write :func:`onnx_bytes` to ``path`` atomically (:func:`write_onnx`)."""
    return write_onnx(onnx_bytes(model, card, opset=opset), path)


def write_onnx(data: bytes, path: str | os.PathLike[str]) -> Path:
    """Write a serialized graph to ``path`` atomically (:func:`upres.formats.files.atomic_write`:
    a temporary name unique to this host, process and call, committed into place), replacing
    a file there; the folder must exist.

    Raises:
        UpresError: ``path`` cannot be written (a folder, no such folder, no permission, disk
            full), naming it.
    """
    from upres.formats.files import atomic_write

    out = Path(path)
    if out.is_dir():
        raise UpresError(f"{out}: is a folder, not a file to write the ONNX model to")
    if not out.parent.is_dir():
        raise UpresError(f"{out}: cannot write the ONNX model (no such folder)")
    return atomic_write(out, data, overwrite=True)


class GraphNet(nn.Module):
    """An exported graph run by a runtime other than PyTorch, behind the ``nn.Module`` call
    interface the Upscaler uses: ``forward`` (float32 ``(N, C, H, W)`` in and out, CPU),
    :meth:`uint8_ready` and :meth:`uint8_hwc` (8-bit pixels straight from the runtime).
    ``runtime`` names the runtime (:class:`OnnxNet`: onnxruntime, :class:`upres.ovnet.OvNet`:
    openvino). No parameters; CPU only."""

    runtime = ""

    def uint8_ready(self) -> bool:
        """Whether :meth:`uint8_hwc` can run."""
        return False

    def uint8_hwc(self, x: np.ndarray) -> np.ndarray:
        """float32 ``(1, C, H, W)`` -> uint8 ``(H', W', C)`` pixels."""
        raise UpresError(f"{self.runtime or 'this runtime'} cannot give 8-bit pixels directly")


#: onnxruntime graph transformers left out of every session. ``WeightBiasQuantization``
#: (onnxruntime 1.20 on) quantises the float32 weights of a convolution whose input is
#: dequantised and whose output is quantised again, so that it fuses into an integer
#: convolution: the convolutions :mod:`upres.quantize` keeps float32 on purpose ran int8
#: (measured: a convolution kept float32 between quantised layers moved a fast-x2 output by
#: 0.24 where float32 weights move it by 0.02). Unknown names are ignored, so older onnxruntime
#: versions take the same list.
DISABLED_OPTIMIZERS = ["WeightBiasQuantization"]


def _run_error(exc: Exception, x: np.ndarray) -> UpresError:
    return UpresError(f"onnxruntime failed at input {tuple(x.shape)} ({one_line(exc, 200)})")


class OnnxNet(GraphNet):
    """An onnxruntime session behind the ``nn.Module`` call interface the Upscaler uses.

    ``forward`` takes a float32 ``(N, C, H, W)`` tensor on CPU and returns the graph's output
    as a float32 CPU tensor. It has no parameters and runs on CPU only. :meth:`uint8_hwc`
    gives the same graph ending in the conversion to 8-bit pixels, for the Upscaler's
    8-bit fast path.
    """

    runtime = "onnxruntime"

    def __init__(self, model: bytes | str | os.PathLike[str], *, threads: int = 0) -> None:
        super().__init__()
        import threading

        import onnxruntime as ort

        self._opts = ort.SessionOptions()
        if threads:
            self._opts.intra_op_num_threads = threads
        self._src = model if isinstance(model, bytes) else str(model)
        self.session = ort.InferenceSession(self._src, self._opts,
                                            providers=["CPUExecutionProvider"],
                                            disabled_optimizers=DISABLED_OPTIMIZERS)
        self._in = self.session.get_inputs()[0].name
        self._u8: object | None = None  # the pixels session; False where it cannot be made
        self._u8_lock = threading.Lock()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        arr = np.ascontiguousarray(x.detach().float().cpu().numpy())
        try:
            return torch.from_numpy(self.session.run(None, {self._in: arr})[0])
        except MemoryError:
            raise
        except Exception as exc:  # onnxruntime's own error types
            raise _run_error(exc, arr) from None

    def uint8_ready(self) -> bool:
        """Whether :meth:`uint8_hwc` can run: its session is made at the first call (once,
        under a lock: server threads share a network); a graph it cannot be made for (an
        opset before 11 has no Clip with bounds as inputs) keeps the float path."""
        if self._u8 is None:
            with self._u8_lock:
                if self._u8 is None:
                    import onnxruntime as ort

                    try:
                        self._u8 = ort.InferenceSession(
                            _with_uint8_output(self._src), self._opts,
                            providers=["CPUExecutionProvider"],
                            disabled_optimizers=DISABLED_OPTIMIZERS)
                    except Exception:  # onnx's and onnxruntime's own error types
                        self._u8 = False
        return self._u8 is not False

    def uint8_hwc(self, x: np.ndarray) -> np.ndarray:
        """float32 ``(1, C, H, W)`` -> uint8 ``(H', W', C)``: the graph's output clipped to
        [0, 1], times 255, rounded half up and laid out as pixels, all inside onnxruntime
        (the same float32 operations as ``Upscaler``'s ``write_planes``, so the same values).
        Mixing torch's thread pool with onnxruntime's cost small networks up to half of their
        time (measured on tiny-x4: 37 against 18 ms for a 1280x720 output); here no torch
        kernel runs. For outputs in [0, 1] (``value_range`` 1); check :meth:`uint8_ready`
        first."""
        if not self.uint8_ready():
            raise UpresError("this onnxruntime graph cannot give 8-bit pixels directly")
        arr = np.ascontiguousarray(x, np.float32)
        try:
            return self._u8.run(None, {self._in: arr})[0][0]
        except MemoryError:
            raise
        except Exception as exc:  # onnxruntime's own error types
            raise _run_error(exc, arr) from None


def _with_uint8_output(src: bytes | str) -> bytes:
    """The graph ``src`` with its output turned into uint8 ``(N, H, W, C)`` pixels: Clip to
    [0, 1], Mul 255, Add 0.5, Floor, Cast, Transpose."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    proto = onnx.load_from_string(src) if isinstance(src, bytes) else onnx.load(src)
    g = proto.graph
    out = g.output[0].name
    for name, v in (("upres_u8_lo", 0.0), ("upres_u8_hi", 1.0), ("upres_u8_255", 255.0),
                    ("upres_u8_half", 0.5)):
        g.initializer.append(numpy_helper.from_array(np.array(v, np.float32), name))
    g.node.extend([
        helper.make_node("Clip", [out, "upres_u8_lo", "upres_u8_hi"], ["upres_u8_c"]),
        helper.make_node("Mul", ["upres_u8_c", "upres_u8_255"], ["upres_u8_m"]),
        helper.make_node("Add", ["upres_u8_m", "upres_u8_half"], ["upres_u8_a"]),
        helper.make_node("Floor", ["upres_u8_a"], ["upres_u8_f"]),
        helper.make_node("Cast", ["upres_u8_f"], ["upres_u8_i"], to=TensorProto.UINT8),
        helper.make_node("Transpose", ["upres_u8_i"], ["upres_u8_pixels"], perm=[0, 2, 3, 1])])
    del g.output[:]
    g.output.append(helper.make_tensor_value_info("upres_u8_pixels", TensorProto.UINT8, None))
    return proto.SerializeToString()


def _load_external_data(proto: object, p: Path) -> None:
    """Read tensors stored beside the model (ONNX external data) into it, refusing any whose
    location is absolute or leads out of the model's folder."""
    from onnx.external_data_helper import load_external_data_for_tensor, uses_external_data

    folder = p.parent.resolve()
    for t in proto.graph.initializer:  # type: ignore[attr-defined]
        if not uses_external_data(t):
            continue
        loc = next((e.value for e in t.external_data if e.key == "location"), "")
        target = (folder / loc).resolve()
        if not loc or Path(loc).is_absolute() or folder not in target.parents:
            raise UpresError(f"{p}: refused: tensor {t.name!r} reads external data from "
                             f"{loc!r}, outside the model's folder")
        if not target.is_file():
            raise UpresError(f"{p}: tensor {t.name!r}: external data {loc!r} is missing")
        try:
            load_external_data_for_tensor(t, str(folder))
        except Exception as exc:
            raise UpresError(f"{p}: cannot read external data {loc!r} "
                             f"({type(exc).__name__})") from None
        del t.external_data[:]
        t.data_location = 0  # DEFAULT: the data now lives in the model


def load_onnx(path: str | os.PathLike[str]) -> tuple[OnnxNet, ModelCard]:
    """Open an ONNX file written by :func:`export_onnx`: ``(OnnxNet, its ModelCard)``."""
    p = Path(path)
    if not p.is_file():
        raise UpresError(f"{p}: no such ONNX file")
    import onnx

    try:
        proto = onnx.load(str(p), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError and others for damaged files
        raise UpresError(f"{p}: not a readable ONNX model ({type(exc).__name__})") from None
    _load_external_data(proto, p)
    card = ModelCard.from_file_metadata(metadata(proto), p)
    if card is None:
        raise UpresError(f"{p}: ONNX file without an upres model card (export it with "
                         "'upres export')")
    try:
        return OnnxNet(proto.SerializeToString()), card
    except Exception as exc:  # onnxruntime's own error types (an invalid graph, ...)
        raise UpresError(f"{p}: not a valid ONNX model ({one_line(exc, 200)})") from None
