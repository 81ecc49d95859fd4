"""The job folder of a scaled-out run: ``OUT/.upres-job/``.

``manifest.json``: the parameters that decide the outputs' bytes (model and a hash of its
weights, scale, tile, format, ... and the upres version), their hash, and the number of inputs
and a hash of their sorted relative paths; ``inputs.txt``: those paths, one per line. A run
into a folder that holds the manifest of other parameters is refused (one line) unless
``--overwrite``; a run with the same parameters does only what is missing (the output files
are the truth). ``report*.jsonl``: one JSON object per item and run (input, status, output,
bytes, seconds, error), appended by the driver of a Ray run, or by each ``--shard`` process
into its own file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from upres.errors import UpresError, one_line
from upres.formats.files import OutputExistsError, commit, temp_path
from upres.jobs import Item, JobOptions, Row

__all__ = ["JOB_DIR", "Report", "job_params", "open_job"]

JOB_DIR = ".upres-job"


def _weights_hash(model: str) -> str:
    from upres.api import resolve_weights
    from upres.models.zoo import BASELINES

    if model in BASELINES:
        return model
    try:
        path = resolve_weights(model)
    except UpresError:
        return model
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def job_params(model: str, scale: int, precision: str, ensemble: int, backend: str,
               opts: JobOptions, denoise: float | str = "auto", *,
               int8_runtime: str | None = None) -> dict[str, Any]:
    """What decides the outputs' bytes, as a JSON-able dict (a named int8 runtime only when
    one was named and the precision may be int8, so jobs begun before the option, or running
    floats, keep their parameters)."""
    import upres

    o = {k: v for k, v in opts.__dict__.items() if k not in ("overwrite", "output")}
    if opts.size is not None:  # --outscale / --size / --fit, as plain JSON
        o["size"] = {k: list(v) if isinstance(v, tuple) else v
                     for k, v in dataclasses.asdict(opts.size).items() if v is not None}
    may_int8 = precision in ("int8", "auto", "default")
    named = {"int8_runtime": int8_runtime} if int8_runtime and may_int8 else {}
    return {"model": model, "weights_sha256": _weights_hash(model), "scale": scale,
            "precision": precision, "ensemble": ensemble, "backend": backend,
            "denoise": denoise, **named,
            "upres": upres.__version__, **{k: list(v) if isinstance(v, tuple) else v
                                            for k, v in o.items()}}


def _write_once(path: Path, text: str) -> bool:
    """Create ``path`` with ``text`` unless it exists (atomic, no clobber); True if created."""
    tmp = temp_path(path)
    tmp.write_text(text)
    try:
        commit(tmp, path)
    except OutputExistsError:
        return False
    return True


def open_job(out_dir: str | os.PathLike[str], items: list[Item], params: dict[str, Any], *,
             overwrite: bool = False) -> Path:
    """Create or check the job folder of ``out_dir``; returns it.

    A rerun over a changed set of inputs (files added, say) is the same job: it does what is
    missing, and ``inputs.txt`` is rewritten.

    Raises:
        UpresError: the folder holds a job of other parameters (and not ``overwrite``).
    """
    d = Path(out_dir) / JOB_DIR
    try:
        d.mkdir(parents=True, exist_ok=True)
        return _open_job(d, out_dir, items, params, overwrite)
    except OSError as exc:
        raise UpresError(f"{out_dir}: cannot make or write the job folder {JOB_DIR} there "
                         f"({exc.strerror or exc})") from None


def _open_job(d: Path, out_dir: str | os.PathLike[str], items: list[Item],
              params: dict[str, Any], overwrite: bool) -> Path:
    """:func:`open_job` in the job folder ``d``, which exists."""
    rels = sorted(it.rel for it in items)
    blob = "\n".join(rels) + ("\n" if rels else "")
    raw = blob.encode("utf-8", "surrogateescape")  # names as the file system has them
    key = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()
    manifest = {"params_sha256": key, "params": params, "inputs": len(rels),
                "inputs_sha256": hashlib.sha256(raw).hexdigest()}
    text = json.dumps(manifest, indent=1, sort_keys=True)
    mf = d / "manifest.json"
    if not _write_once(mf, text):
        try:
            old = json.loads(mf.read_text())  # an OSError is said by open_job: cannot read
            if not isinstance(old, dict):
                raise ValueError("not a JSON object")
        except ValueError as exc:
            if not overwrite:
                raise UpresError(f"{mf}: damaged job manifest ({one_line(exc, 80)}); delete "
                                 "it and run again (outputs already written are kept and "
                                 "skipped), or use another output folder") from None
            old = {}
        if old.get("params_sha256") != key:
            changed = sorted(k for k in set(params) | set(old.get("params", {}))
                             if params.get(k) != old.get("params", {}).get(k))
            if not overwrite:
                raise UpresError(f"{out_dir}: holds a job run with other parameters "
                                 f"({', '.join(changed) or 'unknown'} differ); use the same "
                                 "parameters, another output folder, or --overwrite")
            tmp = temp_path(mf)
            tmp.write_text(text)
            os.replace(tmp, mf)
    inputs = d / "inputs.txt"
    if not inputs.exists() or inputs.read_bytes() != raw:
        tmp = temp_path(inputs)
        tmp.write_bytes(raw)
        os.replace(tmp, inputs)
    return d


def _last_byte(path: Path) -> bytes:
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1)


class Report:
    """Appends rows as JSON lines to ``path`` (one writer per file)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            cut = path.stat().st_size > 0 and _last_byte(path) != b"\n"
            self.f = open(path, "a", buffering=1)  # noqa: SIM115 (closed by close())
            if cut:  # a line an earlier run left unfinished (disk full, killed): end it
                self.f.write("\n")
        except FileNotFoundError:
            self.f = open(path, "a", buffering=1)  # noqa: SIM115
        except OSError as exc:
            raise UpresError(f"{path}: cannot write the report ({exc.strerror})") from None

    def write(self, rows: Iterable[Row]) -> None:
        try:
            for r in rows:
                self.f.write(json.dumps(r.to_json()) + "\n")
        except OSError as exc:  # a full or read-only disk stops the run in one line
            raise UpresError(f"{self.path}: cannot write the report ({exc.strerror})") from None

    def close(self) -> None:
        with contextlib.suppress(OSError):  # a write error was said already; still closed
            self.f.close()
