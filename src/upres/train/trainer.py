"""The training loop: config -> model, data, optimizer -> checkpoints, log, exported weights.

Run folder layout (``runs/<name>`` unless given):
``config.yaml`` (resolved recipe), ``train.log``, ``last.pt`` (resumable checkpoint: model,
optimizer, EMA, step, RNG states), ``best.safetensors`` (best first-val-set PSNR),
``final.safetensors`` (weights after the last step, with a model card). With EMA on, the EMA
weights are the ones validated and exported.

``last.pt`` is read with ``torch.load(weights_only=True)``: tensors and plain data only.
Resuming checks it against the (possibly ``--set``-changed) config before the data is read or
``config.yaml`` rewritten. Ctrl-C stops at the end of the current step and writes ``last.pt``.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import pickle
import re
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn

from upres.data.datasets import PairedPatchSampler, to_float
from upres.errors import UpresError, one_line
from upres.evaluate import evaluate, load_benchmark
from upres.inference.upscaler import Upscaler, rgb_to_ycbcr
from upres.models.descriptor import ModelCard
from upres.models.registry import REGISTRY
from upres.models.weights import load_model, save_model
from upres.resize import imresize
from upres.train.config import TrainConfig
from upres.train.distributed import setup
from upres.train.gan import GanTrainer
from upres.train.losses import make_loss

__all__ = ["RUN_FILES", "Trainer", "check_run_free", "read_checkpoint", "remove_if_empty",
           "run_dir_for"]

# What a run writes in its folder (a fresh run must not find them there: the CLI refuses).
RUN_FILES = ("train.log", "last.pt", "config.yaml", "final.safetensors", "best.safetensors",
             "metrics.jsonl", "tb")
CHECKPOINT_KEYS = ("model", "opt", "step", "best", "rng", "torch_rng", "history")


def run_dir_for(cfg: TrainConfig, run_dir: str | os.PathLike[str] | None = None) -> Path:
    """The run folder: ``run_dir`` if given, else ``runs/<name>``."""
    return Path(run_dir or Path("runs") / cfg.name)


#: the file a training process holds locked in its run folder (its PID inside)
_LOCK = ".lock"


def _hold_run(run_dir: Path) -> Any:
    """Lock ``run_dir`` for this process (an exclusive ``flock`` on ``RUN/.lock``, released
    when the returned file is closed or the process ends, however it ends); UpresError, one
    line with the holder's PID, when another process holds it. None (no lock) where there are
    no locks: no ``fcntl`` (Windows), or a file system that refuses them (NFS without lockd)."""
    try:
        import fcntl
    except ImportError:
        return None
    try:
        f = open(run_dir / _LOCK, "a+")  # noqa: SIM115 (held open: it is the lock)
    except OSError as exc:
        raise UpresError(f"{run_dir}: cannot write in the run folder ({exc.strerror or exc})"
                         ) from None
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        pid = f.read().strip() or "unknown"
        f.close()
        raise UpresError(f"{run_dir}: another process (PID {pid}) is training this run now; "
                         "wait for it to stop, or stop it first") from None
    except OSError:
        f.close()
        return None
    f.seek(0)
    f.truncate()
    f.write(str(os.getpid()))
    f.flush()
    return f


def check_run_free(run_dir: Path) -> None:
    """UpresError (one line, the holder's PID) if a process is training ``run_dir`` now: asked
    before anything is said about the folder's contents, which a live run is changing. Under
    torchrun only rank 0 asks (the one that holds the lock)."""
    if os.environ.get("RANK", "0") == "0" and (run_dir / _LOCK).is_file():
        held = _hold_run(run_dir)
        if held is not None:
            held.close()


def _drop_lone_lock(run_dir: Path) -> bool:
    """Remove ``RUN/.lock`` if it is all ``run_dir`` holds (a run that stopped before writing
    anything); True if the folder is then empty. Any error leaves things as they are."""
    with contextlib.suppress(OSError):
        if {p.name for p in run_dir.iterdir()} <= {_LOCK}:
            (run_dir / _LOCK).unlink(missing_ok=True)
            return True
    return False


def remove_if_empty(run_dir: Path) -> None:
    """Remove ``run_dir`` if it holds nothing but its lock file (a new run that failed before
    writing anything); anything else, or any error, leaves it as it is."""
    if _drop_lone_lock(run_dir):
        with contextlib.suppress(OSError):
            run_dir.rmdir()


def read_checkpoint(path: str | os.PathLike[str], device: torch.device | str = "cpu"
                    ) -> dict[str, Any]:
    """A run's ``last.pt`` as a dict (:data:`CHECKPOINT_KEYS` and more), read with
    ``weights_only=True``: a file that needs any other object is refused, never unpickled; a
    damaged one is one error line."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as exc:
        raise UpresError(f"{path}: cannot read checkpoint ({exc.strerror})") from None
    if head != b"PK\x03\x04":  # torch.save writes a zip archive
        raise UpresError(f"{path}: damaged checkpoint "
                         f"({'empty file' if not head else 'not a torch zip archive'})")
    try:
        ck = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL (\S+)", str(exc))
        what = f" ({found[1]})" if found else ""
        raise UpresError(f"{path}: refused checkpoint: it holds objects beyond tensors and plain "
                         f"data{what}, which upres never unpickles") from None
    except Exception as exc:  # a truncated or garbled archive fails in many ways
        raise UpresError(f"{path}: damaged checkpoint "
                         f"({one_line(exc).split('. ')[0][:120]})") from None
    missing = [k for k in CHECKPOINT_KEYS if not isinstance(ck, dict) or k not in ck]
    if missing:
        raise UpresError(f"{path}: damaged checkpoint (no {', '.join(missing)})")
    if not all(isinstance(ck[k], dict) for k in ("model", "opt")):
        raise UpresError(f"{path}: damaged checkpoint (its model or optimizer is not a mapping)")
    return ck


def _optimizer_names(ck: dict[str, Any]) -> set[str]:
    """The ``optim.optimizer`` a checkpoint's state is for (checkpoints before this field was
    written are told apart by their parameter-group keys)."""
    if "optimizer" in ck:
        return {ck["optimizer"]}
    group = (ck["opt"].get("param_groups") or [{}])[0]
    if "alpha" in group:
        return {"rmsprop"}
    if "dampening" in group:
        return {"sgd"}
    if "decoupled_weight_decay" in group:
        return {"adamw" if group["decoupled_weight_decay"] else "adam"}
    return {"adam", "adamw"}


def _step_of(line: str) -> float:
    """The step of a ``metrics.jsonl`` row (infinite for a row cut short by a crash)."""
    try:
        return float(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return math.inf


def _make_optimizer(cfg: TrainConfig, params) -> torch.optim.Optimizer:
    o = cfg.optim
    if o.optimizer == "adam":
        return torch.optim.Adam(params, lr=o.lr, weight_decay=o.weight_decay)
    if o.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=o.lr, weight_decay=o.weight_decay)
    if o.optimizer == "sgd":
        return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
    return torch.optim.RMSprop(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)


def lr_at(cfg: TrainConfig, step: int) -> float:
    """Learning rate for 0-based ``step``: linear warm-up, then cosine to ``min_lr`` (from
    ``restart`` on, a second cosine from ``lr`` to ``min_lr``), multistep (times ``gamma`` at
    each milestone passed) or constant."""
    o = cfg.optim
    if o.warmup and step < o.warmup:
        return o.lr * (step + 1) / o.warmup
    if o.schedule == "constant":
        return o.lr
    if o.schedule == "multistep":
        return o.lr * o.gamma ** sum(step >= m for m in o.milestones)
    start = o.restart if o.restart and step >= o.restart else o.warmup
    t = (step - start) / max(1, o.steps - start)
    return o.min_lr + 0.5 * (o.lr - o.min_lr) * (1.0 + math.cos(math.pi * min(1.0, t)))


class Trainer:
    """Trains one model from a :class:`TrainConfig`; ``run()`` returns the final weights' path."""

    def __init__(self, cfg: TrainConfig, run_dir: str | os.PathLike[str] | None = None,
                 *, log=print, log_file: bool = True) -> None:
        """``log`` receives each log line; ``log_file=False`` keeps them out of the run's
        ``train.log`` (a reader of a run, such as a mid-run scoring, must not add a sitting)."""
        self.cfg = cfg
        self._log_file = log_file
        self.run_dir = run_dir_for(cfg, run_dir)
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            raise UpresError(f"{self.run_dir}: is a file, not a run folder") from None
        except OSError as exc:
            raise UpresError(f"{self.run_dir}: cannot make the run folder "
                             f"({exc.strerror or exc})") from None
        self._log_sink = log
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        if cfg.device == "cuda" and not torch.cuda.is_available():
            raise UpresError("config key 'device': cuda, but torch sees no CUDA device here "
                             "(use auto or cpu)")
        dev = "cuda" if cfg.device == "cuda" or (cfg.device == "auto"
                                                  and torch.cuda.is_available()) else "cpu"
        self.dist = setup(dev)
        self.device = torch.device(dev, self.dist.local_rank) if dev == "cuda" else \
            torch.device("cpu")
        torch.manual_seed(cfg.seed)
        hp = {**cfg.model.params, "scale": cfg.scale}
        self.hparams = hp
        self.model: nn.Module = REGISTRY.build(cfg.model.arch, hp)
        self.conv = REGISTRY.get(cfg.model.arch).defaults  # input conventions of this arch
        if cfg.model.init:
            self._init_from(cfg.model.init)
        self.model = self.model.to(self.device)
        self.base: dict[str, torch.Tensor] | None = None
        if cfg.model.denoise_base:
            self.base = self._load_base(cfg.model.denoise_base)
        if cfg.optim.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.ema: nn.Module | None = None
        if cfg.optim.ema > 0:
            self.ema = copy.deepcopy(self.model).eval().requires_grad_(False)
        self.qat = None
        if cfg.qat.enabled:  # after the EMA copy: the copy stays plain float
            from upres.quantize import calibration_inputs, load_calibration
            from upres.train.qat import QatSim

            conv_card = ModelCard(name=cfg.name, arch=cfg.model.arch, scale=cfg.scale,
                                  hparams=hp, params=0, **self.conv)
            self.qat = QatSim(self.model, calibration_inputs(load_calibration(), conv_card),
                              tail=cfg.qat.tail, percentile=cfg.qat.percentile)
        self.opt = _make_optimizer(cfg, self.model.parameters())
        self.loss_fn = make_loss(cfg.optim.loss)
        # Every process draws the same global batch of ``data.batch`` patches and trains on its
        # own shard, so N processes follow exactly the single-process run with that batch.
        if cfg.data.batch % self.dist.world:
            raise UpresError(f"config key 'data.batch': {cfg.data.batch} does not split over "
                             f"{self.dist.world} processes")
        self.rng = np.random.default_rng(cfg.seed)
        self.net: nn.Module = self.model
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            self.net = DistributedDataParallel(
                self.model, device_ids=[self.dist.local_rank] if dev == "cuda" else None)
        # optim.amp as an autocast dtype (None: fp32), for the network and a GAN's discriminator
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.optim.amp)
        self.gan: GanTrainer | None = None
        if cfg.gan.weight > 0 or cfg.gan.perceptual_weight > 0:
            self.gan = GanTrainer(cfg.gan, self.device, amp=self.amp_dtype,
                                  channels_last=cfg.optim.channels_last)
            if self.dist.enabled:
                from torch.nn.parallel import DistributedDataParallel

                self.gan.d_net = DistributedDataParallel(
                    self.gan.d, device_ids=[self.dist.local_rank] if dev == "cuda" else None)
        self.step = 0
        self.elapsed = 0.0  # training seconds of earlier segments (resume)
        self._t_start = time.time()
        self.best = -math.inf
        self.history: list[dict] = []
        self._interrupted = False

    # -- logging -------------------------------------------------------------------------
    def log(self, msg: str) -> None:
        if not self.dist.main:
            return
        line = f"{time.strftime('%Y-%m-%d %H:%M:%S')} {msg}"
        if self._log_file:
            with open(self.run_dir / "train.log", "a") as f:
                f.write(line + "\n")
        self._log_sink(line)

    def metric(self, **values: float) -> None:
        """Append one JSON line to ``metrics.jsonl`` (and TensorBoard, when installed)."""
        if not self.dist.main:
            return
        import json

        with open(self.run_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps({"step": self.step, **values}) + "\n")
        if self._tb is not None:
            for k, v in values.items():
                self._tb.add_scalar(k, v, self.step)

    def _init_from(self, path: str) -> None:
        src = load_model(path)[0].state_dict()
        if self.cfg.model.init_mode == "grow":
            grow = getattr(self.model, "grow_from", None)
            if grow is None:
                raise UpresError(f"config key 'model.init_mode': grow is not available for "
                                 f"{self.cfg.model.arch}")
            self.init_note = f"grown from {path}: {grow(src)}"
            return
        own = self.model.state_dict()
        copied = [k for k, v in src.items() if k in own and own[k].shape == v.shape]
        if not copied:
            raise UpresError(f"config key 'model.init': no tensor of {path} matches the names "
                             f"and shapes of this {self.cfg.model.arch} x{self.cfg.scale} "
                             f"(another architecture, size or scale?)")
        own.update({k: src[k] for k in copied})
        self.model.load_state_dict(own)
        skipped = sorted(set(own) - set(copied))
        self.init_note = f"initialised {len(copied)} tensors from {path}; fresh: {skipped}"

    def _load_base(self, path: str) -> dict[str, torch.Tensor]:
        """The frozen clean endpoint's parameters, by name, as this model's."""
        src = load_model(path)[0].state_dict()
        own = dict(self.model.named_parameters())
        bad = [k for k, v in own.items() if k not in src or src[k].shape != v.shape]
        if bad:
            raise UpresError(f"config key 'model.denoise_base': {path} is not the same "
                             f"architecture (no match for {bad[:3]})")
        return {k: v.detach().clone().copy_(src[k]) for k, v in own.items()}  # own layout

    def _blended(self, t: float) -> dict[str, torch.Tensor]:
        """The parameters at clean-up strength ``t``: ``base + t * (own - base)``, differentiable
        in the model's own."""
        assert self.base is not None
        return {k: self.base[k] + t * (p - self.base[k])
                for k, p in self.model.named_parameters()}

    def _convention(self, lr: torch.Tensor, hr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Turn RGB [0, 1] patches into what the architecture trains on: luma only for ``y``
        models, the LR enlarged by MATLAB bicubic for pre-upsampling models."""
        if self.conv.get("color") == "y":
            lr, hr = rgb_to_ycbcr(lr)[:, :1], rgb_to_ycbcr(hr)[:, :1]
        if self.conv.get("pre_upsample"):
            arr = lr.permute(0, 2, 3, 1).numpy().astype(np.float64)
            up = np.stack([imresize(a, float(self.cfg.scale)) for a in arr]).astype(np.float32)
            lr = torch.from_numpy(up).permute(0, 3, 1, 2).contiguous()
        return lr, hr

    # -- checkpoints ---------------------------------------------------------------------
    @torch.no_grad()
    def _update_ema(self) -> None:
        if self.ema is None:
            return
        d = self.cfg.optim.ema
        for pe, p in zip(self.ema.parameters(), self.model.parameters(), strict=True):
            pe.lerp_(p.detach(), 1.0 - d)
        for be, b in zip(self.ema.buffers(), self.model.buffers(), strict=True):
            be.copy_(b)

    @property
    def export_model(self) -> nn.Module:
        """The weights that are validated and exported: the EMA copy when EMA is on, folded
        into its inference form when the architecture trains in a re-parameterisable one."""
        m = self.ema if self.ema is not None else self.model
        return m.fold() if hasattr(m, "deploy_arch") else m

    def save_checkpoint(self) -> None:
        if not self.dist.main:
            return
        state = {
            "model": self.model.state_dict(), "opt": self.opt.state_dict(), "step": self.step,
            "optimizer": self.cfg.optim.optimizer,
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "best": self.best, "rng": self.rng.bit_generator.state,
            "torch_rng": torch.get_rng_state(), "history": self.history,
            "elapsed": self.elapsed + time.time() - self._t_start,
            "gan": self.gan.state_dict() if self.gan is not None else None,
            # the simulated int8 ranges in use (measured every qat.recalibrate steps)
            "qat": ({k: list(v) for k, v in self.qat.ranges.items()}
                    if self.qat is not None else None),
        }
        tmp = self.run_dir / "last.pt.part"
        torch.save(state, tmp)
        os.replace(tmp, self.run_dir / "last.pt")

    def resume(self) -> None:
        """Continue from ``RUN/last.pt`` (see :meth:`load_checkpoint`), logged."""
        self.load_checkpoint()
        self.log(f"resumed from {self.run_dir / 'last.pt'} at step {self.step}")

    def load_checkpoint(self) -> None:
        """Load ``RUN/last.pt`` into this trainer, after checking that it fits the config: the
        same network shape and optimizer. The config's optimizer settings replace the saved
        ones (``optim.weight_decay``, ``optim.momentum``, ``gan.d_betas``); EMA switched on
        for a run trained without it starts from the resumed weights."""
        path = self.run_dir / "last.pt"
        ck = read_checkpoint(path, self.device)
        self._check_fits(ck, path)
        try:
            self.model.load_state_dict(ck["model"])
            if self.ema is not None:
                self.ema.load_state_dict(ck["ema"] if ck.get("ema") is not None
                                         else self.model.state_dict())
            self.opt.load_state_dict(ck["opt"])
            if self.gan is not None and ck.get("gan") is not None:
                self.gan.load_state_dict(ck["gan"])
            self.step, self.best, self.history = int(ck["step"]), ck["best"], ck["history"]
            self.rng.bit_generator.state = ck["rng"]
            torch.set_rng_state(ck["torch_rng"].cpu())
            if self.qat is not None and ck.get("qat"):
                self.qat.ranges = {str(k): (float(v[0]), float(v[1]))
                                   for k, v in ck["qat"].items()}
        except (RuntimeError, KeyError, ValueError, TypeError) as exc:
            raise UpresError(f"{path}: damaged checkpoint ({one_line(exc, 120)})") from None
        self.elapsed, self._t_start = ck.get("elapsed", 0.0), time.time()
        self._apply_optim_settings()

    def _check_fits(self, ck: dict[str, Any], path: Path) -> None:
        own, theirs = self.model.state_dict(), ck["model"]
        for k in sorted(set(own) | set(theirs)):
            if k not in own or k not in theirs or own[k].shape != theirs[k].shape:
                where = (f"{tuple(theirs[k].shape)} in the checkpoint, {tuple(own[k].shape)} "
                         f"in the config" if k in own and k in theirs else
                         f"only in the {'config' if k in own else 'checkpoint'}")
                raise UpresError(f"{path}: the checkpoint's network does not match model.arch "
                                 f"and model.params ({k}: {where}); a resumed run keeps its "
                                 f"network's shape")
        names = _optimizer_names(ck)
        if self.cfg.optim.optimizer not in names:
            raise UpresError(f"{path}: the run trained with optim.optimizer "
                             f"{' or '.join(sorted(names))}, not {self.cfg.optim.optimizer}; a "
                             f"resumed run keeps its optimizer")
        if self.gan is not None and ck.get("gan") is not None:
            d_own, d_theirs = self.gan.d.state_dict(), ck["gan"].get("d", {})
            if {k: v.shape for k, v in d_own.items()} != {k: getattr(v, "shape", None)
                                                          for k, v in d_theirs.items()}:
                raise UpresError(f"{path}: the checkpoint's discriminator does not match "
                                 f"gan.discriminator and gan.d_params; a resumed run keeps it")

    def _apply_optim_settings(self) -> None:
        """Put the config's optimizer settings into state loaded from a checkpoint (the
        learning rates are set at every step)."""
        o = self.cfg.optim
        for g in self.opt.param_groups:
            g["weight_decay"] = o.weight_decay
            if "momentum" in g:
                g["momentum"] = o.momentum
        if o.optimizer == "rmsprop" and o.momentum > 0:  # saved without momentum: no buffer
            for p in self.model.parameters():
                state = self.opt.state.get(p)
                if state and "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p)
        if self.gan is not None:
            for g in self.gan.d_opt.param_groups:
                g["betas"] = tuple(self.cfg.gan.d_betas)

    def _trim_metrics(self) -> int:
        """Drop the ``metrics.jsonl`` rows of steps after the resumed one (they are trained
        again), rewriting the file atomically; returns how many were dropped."""
        path = self.run_dir / "metrics.jsonl"
        if not path.is_file():
            return 0
        rows = path.read_text().splitlines(keepends=True)
        keep = [r for r in rows if _step_of(r) <= self.step]
        if len(keep) < len(rows):
            tmp = path.with_name("metrics.jsonl.part")
            tmp.write_text("".join(keep))
            os.replace(tmp, path)
        return len(rows) - len(keep)

    def card(self, psnr: dict[str, float] | None = None) -> ModelCard:
        """The model card of the weights as they are now (validation PSNR: the latest)."""
        from upres.bench import machine

        arch, hparams = self.cfg.model.arch, self.hparams
        if hasattr(self.model, "deploy_arch"):  # the card describes the folded weights
            arch = self.model.deploy_arch
            hparams = {**self.model.deploy_hparams(), "scale": self.cfg.scale}
        params = sum(p.numel() for p in self.export_model.parameters())
        if psnr is None and self.history:
            psnr = {k: v for k, v in self.history[-1].items() if k != "step"}
        return ModelCard(
            name=self.cfg.name, arch=arch, scale=self.cfg.scale,
            hparams=hparams, params=params, trained_on=", ".join(self.cfg.data.train),
            steps=self.step, psnr=psnr or {}, config=self.cfg.to_dict(),
            train_seconds=round(self.elapsed + time.time() - self._t_start, 1),
            machine=f"{machine()}, {self.device.type}, {self.dist.world} process(es)",
            **self.conv,
        )

    @torch.no_grad()
    def _check_patch(self) -> None:
        """Run one zero patch through copies of the network (and the discriminator): a patch
        size the architecture cannot take is an error naming ``data.patch`` before any data is
        read. Copies, so nothing the run saves changes (batch-norm statistics, spectral-norm
        vectors, weights a re-parameterised block folds in eval mode)."""
        p, s = self.cfg.data.patch, self.cfg.scale
        lr, hr = self._convention(torch.zeros(1, 3, p, p), torch.zeros(1, 3, p * s, p * s))
        vr = self.conv.get("value_range", 1.0)
        nets = [(self.model, lr * vr, self.cfg.model.arch)]
        if self.gan is not None:
            nets.append((self.gan.d, hr, self.cfg.gan.discriminator))
        for net, x, name in nets:
            net = copy.deepcopy(net).eval()
            try:
                with torch.autocast(self.device.type, enabled=self.amp_dtype is not None,
                                    dtype=self.amp_dtype or torch.bfloat16):
                    net(x.to(self.device))  # as training will run it
            except torch.OutOfMemoryError:
                raise
            except RuntimeError as exc:
                raise UpresError(f"config key 'data.patch': {name} cannot take {p}x{p} LR "
                                 f"patches at x{s} ({one_line(exc, 120)})") from None

    def _catch_sigint(self) -> Callable[[], object]:
        """Make Ctrl-C stop the loop at the end of the current step, checkpointed (a second
        Ctrl-C stops at once); returns what puts the previous handler back."""
        self._interrupted = False
        previous = signal.getsignal(signal.SIGINT)
        if (threading.current_thread() is not threading.main_thread()
                or previous in (signal.SIG_IGN, None)):  # ignored, or a handler not of Python's
            return lambda: None

        def stop(signum: int, frame: object) -> None:
            self._interrupted = True
            signal.signal(signal.SIGINT, previous)

        signal.signal(signal.SIGINT, stop)
        return lambda: signal.signal(signal.SIGINT, previous)

    def _any_rank(self, flag: bool) -> bool:
        """Whether ``flag`` is true in any process (a collective: every process calls it)."""
        import torch.distributed as dist

        t = torch.tensor([int(flag)], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def _mean_over_ranks(self, values: dict[str, float]) -> dict[str, float]:
        """The mean of logged values over the processes (each has its shard's)."""
        import torch.distributed as dist

        t = torch.tensor(list(values.values()), dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return dict(zip(values, (t / self.dist.world).tolist(), strict=True))

    # -- validation ----------------------------------------------------------------------
    def upscaler(self) -> Upscaler:
        """A frozen copy of the exported weights (EMA, folded) with their card, ready to upscale
        as ``upres upscale`` would."""
        return Upscaler(copy.deepcopy(self.export_model).eval(), self.card(),
                        device=self.device.type)

    def validate(self) -> dict[str, float]:
        """PSNR-Y on each validation folder, through the same Upscaler and evaluate() as
        ``upres eval`` (standard protocol). With ``qat`` on and no EMA, the float network is
        scored (the exported weights run float; a copy of the model keeps its rounding
        hooks, switched off here)."""
        out = {}
        with self.qat.off() if self.qat is not None else contextlib.nullcontext():
            up = self.upscaler()
            for folder, images in self._val_sets:
                res = evaluate(up.upscale, model_name=self.cfg.name, dataset=folder,
                               scale=self.cfg.scale, with_ssim=False, images=images)
                out[Path(folder).name] = res.psnr_y
        return out

    # -- loop ----------------------------------------------------------------------------
    def run(self, *, resume: bool = False, until: int | None = None) -> Path:
        """Train to ``optim.steps`` (or stop after step ``until``, checkpointed, for time-boxed
        sessions); returns ``final.safetensors`` (or ``last.pt`` when stopped early). Ctrl-C
        stops at the end of a step, writes ``last.pt`` and raises KeyboardInterrupt. One
        process trains a run folder at a time (a second gets one line naming the first's PID;
        under torchrun rank 0 holds it)."""
        lock = _hold_run(self.run_dir) if self.dist.main and self._log_file else None
        try:
            return self._run(resume=resume, until=until)
        except BaseException:
            if lock is not None:  # a run that stopped before writing anything leaves nothing
                _drop_lone_lock(self.run_dir)
            raise
        finally:
            if lock is not None:
                lock.close()

    def _run(self, *, resume: bool, until: int | None) -> Path:
        """:meth:`run`, in the run folder this process holds."""
        cfg = self.cfg
        # The checkpoint, the patch size and the data first: a run that cannot go on stops
        # before it writes anything, so a resumed run's config.yaml stays as it was and a new
        # run's folder stays free for the corrected run (the CLI refuses folders holding a run).
        if resume:
            self.load_checkpoint()
            if cfg.optim.steps <= self.step:
                raise UpresError(f"config key 'optim.steps': {cfg.optim.steps} is not after the "
                                 f"step the run resumes from ({self.step}); set a larger one")
        if until is not None and until <= self.step:
            raise UpresError(f"--stop-after {until}: must be after the step the run starts from "
                             f"({self.step})")
        self._check_patch()
        t0 = time.time()
        from upres.data.degrade import degradation

        data = PairedPatchSampler(
            cfg.data.train, scale=cfg.scale, patch=cfg.data.patch,
            lr_folders=cfg.data.train_lr or None,
            degrade=degradation(cfg.data.degradation, cfg.scale),
            workers=torch.get_num_threads(), variants=cfg.data.variants, seed=cfg.seed,
            rescale=cfg.data.rescale)
        if self.base is not None and (not data.leveled or self.dist.enabled):
            raise UpresError("config key 'model.denoise_base' needs data.degradation: leveled "
                             "with data.variants > 0, in one process")
        self._val_sets = [(v, load_benchmark(v, cfg.scale)) for v in cfg.data.val]
        t_data = time.time() - t0
        if self.dist.main:
            (self.run_dir / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(),
                                                                     sort_keys=False))
        if resume:
            dropped = self._trim_metrics() if self.dist.main else 0
            note = (f"; {dropped} metrics.jsonl rows of later steps dropped (those steps are "
                    f"trained again)" if dropped else "")
            self.log(f"resumed from {self.run_dir / 'last.pt'} at step {self.step}{note}")
        elif hasattr(self, "init_note"):
            self.log(self.init_note)
        params = sum(p.numel() for p in self.model.parameters())
        self.log(f"run {cfg.name}: {cfg.model.arch} {self.hparams} ({params} params), "
                 f"{data.describe()}, "
                 f"data ready in {t_data:.1f}s, device {self.device}, "
                 f"processes {self.dist.world}, threads {torch.get_num_threads()}")
        self._tb = None
        if self.dist.main:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(self.run_dir / "tb"),
                                         purge_step=self.step + 1 if resume else None)
            except ImportError:  # tensorboard is optional
                pass
        from tqdm import tqdm

        bar = tqdm(total=cfg.optim.steps, initial=self.step, unit="step", dynamic_ncols=True,
                   disable=not (self.dist.main and sys.stderr.isatty()))
        self.model.train()
        restore_sigint = self._catch_sigint()
        try:
            self._loop(data, bar, until)
        finally:
            restore_sigint()
            bar.close()
            if self._tb is not None:
                self._tb.close()
        if self.step < cfg.optim.steps and self._interrupted:
            self.log(f"interrupted at step {self.step}, checkpointed; --resume {self.run_dir} "
                     f"continues from step {self.step}")
            raise KeyboardInterrupt
        if self.step < cfg.optim.steps:
            self.log(f"stopped at step {self.step}; resume with --resume {self.run_dir}")
            return self.run_dir / "last.pt"
        final = self.run_dir / "final.safetensors"
        if self.dist.main:
            save_model(final, self.export_model, self.card())
        self.log(f"done: {final}")
        return final

    def _loop(self, data: PairedPatchSampler, bar: Any, until: int | None) -> None:
        """Train from ``self.step`` to ``optim.steps``, or to step ``until``, or to the end of
        the step in which Ctrl-C came, checkpointed."""
        cfg = self.cfg
        loss_sum, n, t_data, t_last = 0.0, 0, 0.0, time.time()
        gan_sums: dict[str, float] = {}
        while self.step < cfg.optim.steps:
            if self.qat is not None and (not self.qat.ranges
                                         or self.step % cfg.qat.recalibrate == 0):
                # (a resumed run goes on with the checkpoint's ranges, as it would have)
                fresh = not self.qat.ranges
                ranges = self.qat.calibrate()
                if fresh:
                    self.log("qat: int8 rounding simulated (last convolution " +
                             ("int8" if cfg.qat.tail else "float32") + "); activation ranges " +
                             ", ".join(f"{k} [{lo:.3f}, {hi:.3f}]"
                                       for k, (lo, hi) in ranges.items()))
            lr = lr_at(cfg, self.step)
            for g in self.opt.param_groups:
                g["lr"] = lr
            td = time.time()
            level = 1.0
            if self.base is not None:
                lr_b, hr_b, level = data.sample_level(cfg.data.batch, self.rng,
                                                         cfg.data.min_level,
                                                         cfg.data.max_level)
                lr_b, hr_b = self._convention(lr_b, hr_b)
            elif self.conv.get("color") == "y" or self.conv.get("pre_upsample"):
                lr_b, hr_b = self._convention(*data.sample(cfg.data.batch, self.rng))
            else:  # plain RGB patches: uint8 to the device, floats made there
                lr_b, hr_b = data.sample_u8(cfg.data.batch, self.rng)
            if self.dist.enabled:  # this process's shard of the global batch
                per = cfg.data.batch // self.dist.world
                shard = slice(self.dist.rank * per, (self.dist.rank + 1) * per)
                lr_b, hr_b = lr_b[shard], hr_b[shard]
            if isinstance(lr_b, np.ndarray):  # NHWC bytes: channels_last floats as they are
                lr_b, hr_b = to_float(lr_b, self.device), to_float(hr_b, self.device)
                if not cfg.optim.channels_last:
                    lr_b, hr_b = lr_b.contiguous(), hr_b.contiguous()
            else:
                lr_b, hr_b = lr_b.to(self.device), hr_b.to(self.device)
            t_data += time.time() - td
            if cfg.optim.channels_last:
                lr_b = lr_b.contiguous(memory_format=torch.channels_last)
            vr = self.conv.get("value_range", 1.0)
            with torch.autocast(lr_b.device.type, enabled=self.amp_dtype is not None,
                                dtype=self.amp_dtype or torch.bfloat16):
                if self.base is not None:
                    from torch.func import functional_call

                    pred = functional_call(self.model, self._blended(level), (lr_b * vr,)) / vr
                else:
                    pred = self.net(lr_b * vr) / vr if vr != 1.0 else self.net(lr_b)
            loss = self.loss_fn(pred.float(), hr_b)
            extra: dict[str, float] = {}
            total = loss
            if self.gan is not None:
                terms = self.gan.generator_terms(pred.float(), hr_b, self.step)
                if cfg.gan.level_power > 0:
                    terms = {k: v * level ** cfg.gan.level_power for k, v in terms.items()}
                for k, v in terms.items():
                    total = total + v
                    extra[k] = v.item()
            self.opt.zero_grad(set_to_none=True)
            total.backward()
            if cfg.optim.grad_clip > 0:
                nn.utils.clip_grad_norm_(self.model.parameters(), cfg.optim.grad_clip)
            self.opt.step()
            if self.gan is not None:
                extra.update(self.gan.discriminator_step(pred.float(), hr_b, lr / cfg.optim.lr,
                                                         self.step))
            self._update_ema()
            self.step += 1
            loss_sum += loss.item()
            for k, v in extra.items():
                gan_sums[k] = gan_sums.get(k, 0.0) + v
            n += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
            if self.step % cfg.log_every == 0 or self.step == cfg.optim.steps:
                dt = time.time() - t_last
                means = {"loss": loss_sum / n, **{k: v / n for k, v in gan_sums.items()}}
                if self.dist.enabled:
                    means = self._mean_over_ranks(means)
                mean_loss = means.pop("loss")
                gan_text = "".join(f" {k} {v:.4f}" for k, v in means.items())
                self.log(f"step {self.step}/{cfg.optim.steps} loss {mean_loss:.5f}{gan_text} "
                         f"lr {lr:.2e} {n / dt:.2f} steps/s data {100 * t_data / dt:.1f}%")
                self.metric(loss=mean_loss, lr=lr, steps_per_s=n / dt,
                            data_wait=t_data / dt, **means)
                loss_sum, n, t_data, t_last = 0.0, 0, 0.0, time.time()
                gan_sums = {}
            last = self.step == cfg.optim.steps
            if self.dist.main and self._val_sets and (self.step % cfg.val_every == 0 or last):
                scores = self.validate()
                self.history.append({"step": self.step, **scores})
                first = next(iter(scores.values()))
                text = " ".join(f"{k} {v:.3f}" for k, v in scores.items())
                if first > self.best:
                    self.best = first
                    save_model(self.run_dir / "best.safetensors", self.export_model,
                               self.card(scores))
                    text += " (best)"
                self.log(f"val step {self.step}: PSNR-Y {text}")
                self.metric(**{f"val_psnr_y/{k}": v for k, v in scores.items()})
                self.model.train()
                t_last = time.time()
            until_here = until is not None and self.step >= until
            if self.dist.enabled and not (last or until_here):
                # every process stops after the same step on Ctrl-C, or none does (not at the
                # end: a process still in this exchange when another has exited would abort)
                self._interrupted = self._any_rank(self._interrupted)
            stop = self._interrupted or until_here
            if self.step % cfg.ckpt_every == 0 or last or stop:
                self.save_checkpoint()
            if stop:
                return
