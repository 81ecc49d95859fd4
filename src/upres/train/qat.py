"""Quantisation-aware fine-tuning: the int8 graph's rounding simulated while training.

:mod:`upres.quantize` turns a float network into an onnxruntime QDQ graph after training. Where
that loses more than its rule on the calibration crops (tiny-x3 with its last convolution in
int8, a photo endpoint at full strength), a short fine-tune with the same rounding in the
forward pass teaches the float weights to tolerate it (straight-through gradients inside each
range, none outside, as :func:`torch.fake_quantize_per_tensor_affine` defines them). The
weights stay float; the int8 graph is still made by :mod:`upres.quantize` afterwards.

What is rounded mirrors the graph the quantiser writes for a plain :class:`UpNet` (ReLU):

- the weights of every quantised convolution (the body's, and the last one with ``tail``):
  int8, symmetric, per output channel (``max |w| / 127`` a step);
- activations, uint8 per tensor: the head's output (the head convolution stays float32, but
  its output is the first body convolution's input, and the skip addition reads the same
  rounded tensor), the output of every body ReLU (the quantiser fuses each ReLU into its
  convolution), and with ``tail`` the last convolution's input (the skip sum) and output;
- each activation's range is the quantiser's: the ``100 - percentile``th to ``percentile``th
  percentiles of its values over the calibration crops, widened to hold 0 (weights trained
  before session 28 simulated onnxruntime's own rule: the ``percentile``th percentile of
  ``|x|``, clipped to the observed min and max). The ranges are
  measured with the float network (rounding off) when a run starts and every ``recalibrate``
  steps (a resumed run goes on with the ranges its checkpoint kept), because the quantiser will
  measure them on the final float weights. A range of zero width (a convolution that starts at
  zero, as UpNet's last one does) is left unrounded until the next measurement: rounded, every
  value would fall outside it and no gradient would pass.

Under bf16 autocast the rounded values are cast back to bf16, which moves them off the int8
grid by a fraction of a step; the simulation is exact in float32 only.
"""

from __future__ import annotations

import contextlib
import types
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["QatSim", "activation_range", "fake_weight"]


def activation_range(values: np.ndarray, percentile: float) -> tuple[float, float]:
    """``(lo, hi)`` of a uint8 activation as :mod:`upres.quantize` sets it from calibration
    values (any shape, float): :func:`upres.quantize.percentile_range`, the ``100 -
    percentile``th and ``percentile``th percentiles, widened to hold 0."""
    from upres.quantize import percentile_range

    return percentile_range(values, percentile)


def _fake_act(x: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """``x`` rounded to 256 levels on ``[lo, hi]`` (uint8, zero exact), gradient straight
    through inside the range."""
    scale = max(hi - lo, 1e-8) / 255.0
    zero = int(min(255, max(0, round(-lo / scale))))
    y = torch.fake_quantize_per_tensor_affine(x.float(), scale, zero, 0, 255)
    return y.to(x.dtype)


def fake_weight(w: torch.Tensor) -> torch.Tensor:
    """Convolution weights ``(O, I, kh, kw)`` rounded to int8 per output channel, symmetric
    (step ``max |w| / 127`` of the channel), gradient straight through."""
    scale = (w.detach().abs().amax(dim=(1, 2, 3)).float() / 127.0).clamp_min(1e-12)
    zero = torch.zeros(w.shape[0], dtype=torch.int32, device=w.device)
    return torch.fake_quantize_per_channel_affine(w.float(), scale, zero, 0, -127, 127).to(w.dtype)


def _rounded_conv(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    return conv._conv_forward(x, fake_weight(conv.weight), conv.bias)


class QatSim:
    """Rounding of an :class:`~upres.models.archs.upnet.UpNet` (ReLU, no unshuffle) as its int8
    graph rounds, installed on ``model`` in place (hooks and the convolutions' ``forward``;
    the state dict is unchanged). ``inputs`` are the calibration inputs,
    :func:`upres.quantize.calibration_inputs` (``(1, C, h, w)`` float32 each). ``enabled``
    switches the rounding off and on (ranges are measured with it off)."""

    def __init__(self, model: nn.Module, inputs: list[np.ndarray], *, tail: bool = False,
                 percentile: float = 99.999) -> None:
        from upres.models.archs.upnet import UpNet

        if not isinstance(model, UpNet) or model.act != "relu" or model.unshuffle != 1:
            raise ValueError("quantisation-aware training needs a plain UpNet with act relu "
                             "and no unshuffle")
        self.model, self.inputs, self.tail, self.percentile = model, inputs, tail, percentile
        self.enabled = True
        self.ranges: dict[str, tuple[float, float]] = {}
        body = list(model.body)
        convs = [m for m in body if isinstance(m, nn.Conv2d)]
        relus = [m for m in body if isinstance(m, nn.ReLU)]
        # (name, module, "in" = its input | "out" = its output)
        self.points: list[tuple[str, nn.Module, str]] = [("head_out", model.head, "out")]
        self.points += [(f"relu{i}", r, "out") for i, r in enumerate(relus)]
        self.rounded = list(convs)
        if tail:
            self.points += [("tail_in", model.tail, "in"), ("tail_out", model.tail, "out")]
            self.rounded.append(model.tail)
        self._handles: list[Any] = []
        for name, mod, where in self.points:
            if where == "in":
                self._handles.append(mod.register_forward_pre_hook(self._pre(name)))
            else:
                self._handles.append(mod.register_forward_hook(self._post(name)))
        for conv in self.rounded:
            conv.forward = types.MethodType(self._conv_forward, conv)  # type: ignore[method-assign]

    def _conv_forward(self, conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
        if self.enabled:
            return _rounded_conv(conv, x)
        return conv._conv_forward(x, conv.weight, conv.bias)

    def _pre(self, name: str) -> Callable[..., Any]:
        def hook(mod: nn.Module, args: tuple[Any, ...]) -> Any:
            if self.enabled and name in self.ranges:
                return (_fake_act(args[0], *self.ranges[name]), *args[1:])
            if self._record is not None:
                self._keep(name, args[0])
            return None
        return hook

    def _post(self, name: str) -> Callable[..., Any]:
        def hook(mod: nn.Module, args: tuple[Any, ...], out: torch.Tensor) -> Any:
            if self.enabled and name in self.ranges:
                return _fake_act(out, *self.ranges[name])
            if self._record is not None:
                self._keep(name, out)
            return None
        return hook

    _record: dict[str, list[np.ndarray]] | None = None

    def _keep(self, name: str, x: torch.Tensor) -> None:
        """Record a copy of ``x`` (an in-place ReLU may later write into the tensor)."""
        assert self._record is not None
        self._record.setdefault(name, []).append(x.detach().float().cpu().numpy().copy())

    @torch.no_grad()
    def calibrate(self, params: dict[str, torch.Tensor] | None = None) -> dict[str, tuple[float,
                                                                                          float]]:
        """Measure every range with the float network (``params``: parameters to run it with
        instead of its own, by name, as :func:`torch.func.functional_call` takes them) over
        the calibration inputs; returns and keeps them (those of zero width left out: not
        rounded until measured again)."""
        dev = next(self.model.parameters()).device
        self._record = {}
        with self.off():
            try:
                for x in self.inputs:
                    t = torch.from_numpy(x).to(dev)
                    if params is None:
                        self.model(t)
                    else:
                        from torch.func import functional_call

                        functional_call(self.model, params, (t,))
                ranges = {name: activation_range(np.concatenate([a.ravel() for a in arrs]),
                                                 self.percentile)
                          for name, arrs in self._record.items()}
                self.ranges = {k: (lo, hi) for k, (lo, hi) in ranges.items()
                               if hi - lo > 1e-6}
            finally:
                self._record = None
        return self.ranges

    @contextlib.contextmanager
    def off(self) -> Iterator[None]:
        """Run the float network inside the block (rounding switched back as it was after)."""
        was, self.enabled = self.enabled, False
        try:
            yield
        finally:
            self.enabled = was

    def remove(self) -> None:
        """Take the rounding off ``model`` again (hooks and ``forward`` overrides)."""
        for h in self._handles:
            h.remove()
        for conv in self.rounded:
            conv.__dict__.pop("forward", None)
        self._handles = []
