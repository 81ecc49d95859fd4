"""Fuzz every file upres reads (issue 26): mutated real files through the CLI, the Python API
and the HTTP API, seeded.

Seeds: small real images (PNG, JPEG, WebP, TIFF, BMP, GIF, from Set5), a DICOM and a GeoTIFF
(from ../shared/data/apps), a short H.264 clip with AAC sound (made here with PyAV), weights
(`.safetensors` from the zoo, `.pth` from the FSRCNN peer, `.onnx` exported here) and a YAML
recipe. Mutations (one per case, drawn from the case's seed): bit flips, truncation, a chunk
overwritten / inserted / deleted, a declared size made huge (width/height fields of PNG, BMP,
GIF, TIFF, DICOM headers set to 100000), the wrong suffix, zero bytes, random bytes.

Each case runs in a worker process (restarted after a hang or a crash; address space capped
at 8 GB) with stderr captured at the file-descriptor level, so FFmpeg's, GDAL's or libtiff's own
messages count too. A case passes when it exits 0, or exits 1/2 with every stderr line an
``upres: ...`` line (naming the file, for file errors), no traceback, no hidden temporary left
and no output written for a failed input; the HTTP API must answer every case with 200, 413,
415 or 422 (never another 5xx) within the time limit.

    .venv/bin/python benchmarks/fuzz.py [--cases 1500] [--seed 1] [--timeout 60]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
PEERS = ROOT.parent / "shared" / "peers"
IMAGE_KINDS = ("png", "jpg", "webp", "tif", "bmp", "gif")
KINDS = (*IMAGE_KINDS, "dcm", "geotiff", "video", "safetensors", "pth", "onnx", "yaml")
MUTATIONS = ("flip", "truncate", "overwrite", "insert", "delete", "huge", "suffix", "empty",
             "random")


# -- seeds -------------------------------------------------------------------------------------
def make_seeds(folder: Path) -> dict[str, Path]:
    """One small real file of every kind, in ``folder``."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    bird = Image.open(DATA / "benchmark" / "Set5" / "bird.png").convert("RGB").crop(
        (100, 100, 148, 136))
    seeds = {}
    for kind in IMAGE_KINDS:
        p = folder / f"seed.{kind}"
        img = bird.convert("P") if kind == "gif" else bird
        img.save(p, quality=90) if kind == "jpg" else img.save(p)
        seeds[kind] = p
    seeds["dcm"] = folder / "seed.dcm"
    shutil.copy(DATA / "apps" / "dicom" / "dicom_file03.dcm", seeds["dcm"])
    import rasterio
    from rasterio.windows import Window

    with rasterio.open(DATA / "apps" / "geo" / "RGB.byte.tif") as a:
        win = Window(0, 60, 48, 40)
        prof = a.profile | {"width": 48, "height": 40, "transform": a.window_transform(win)}
        seeds["geotiff"] = folder / "seed_geo.tif"
        with rasterio.open(seeds["geotiff"], "w", **prof) as d:
            d.write(a.read(window=win))
    seeds["video"] = folder / "seed.mp4"
    _make_clip(seeds["video"], np.asarray(bird))
    seeds["safetensors"] = folder / "seed.safetensors"
    shutil.copy(ROOT / "src" / "upres" / "zoo" / "tiny-x2.safetensors", seeds["safetensors"])
    seeds["pth"] = folder / "seed_x2.pth"
    shutil.copy(PEERS / "pytorch" / "FSRCNN_yjn870" / "fsrcnn_x2.pth", seeds["pth"])
    from upres.export import export_onnx
    from upres.models.weights import load_model

    net, card = load_model(ROOT / "src" / "upres" / "zoo" / "tiny-x2.safetensors")
    seeds["onnx"] = folder / "seed.onnx"
    export_onnx(net, card, seeds["onnx"])
    seeds["yaml"] = folder / "seed.yaml"
    shutil.copy(ROOT / "configs" / "fast-x2.yaml", seeds["yaml"])
    return seeds


def _make_clip(path: Path, frame) -> None:
    import av
    import numpy as np

    out = av.open(str(path), "w")
    v = out.add_stream("libx264", rate=10, options={"g": "4"})
    v.codec_context.width, v.codec_context.height, v.codec_context.pix_fmt = 48, 36, "yuv420p"
    a = out.add_stream("aac", rate=48000)
    a.layout = "mono"
    for i in range(8):
        f = av.VideoFrame.from_ndarray(np.roll(frame, i, axis=1), format="rgb24")
        f.pts = i
        for p in v.encode(f):
            out.mux(p)
    for p in v.encode(None):
        out.mux(p)
    tone = (0.1 * np.sin(np.arange(38400) / 48000 * 2 * np.pi * 440)).astype(np.float32)
    for k in range(0, 38400, 1024):
        fr = av.AudioFrame.from_ndarray(tone[None, k:k + 1024], format="fltp", layout="mono")
        fr.sample_rate, fr.pts = 48000, k
        for p in a.encode(fr):
            out.mux(p)
    for p in a.encode(None):
        out.mux(p)
    out.close()


# -- mutations ---------------------------------------------------------------------------------
def _huge(data: bytearray, kind: str) -> bytearray:
    """Declare a 100000x100000 image where the format keeps its size."""
    big = 100000
    if kind == "png" and len(data) > 24:
        data[16:24] = struct.pack(">II", big, big)
    elif kind == "bmp" and len(data) > 26:
        data[18:26] = struct.pack("<ii", big, big)
    elif kind == "gif" and len(data) > 10:
        data[6:10] = struct.pack("<HH", 65535, 65535)
    elif kind in ("tif", "geotiff"):
        for tag in (256, 257):  # ImageWidth, ImageLength as SHORT or LONG
            for typ, fmt in ((3, "<HHI"), (4, "<HHI")):
                needle = struct.pack(fmt, tag, typ, 1)
                i = bytes(data).find(needle)
                if i >= 0:
                    data[i + 8:i + 12] = struct.pack("<I", big if typ == 4 else 65535)
    elif kind == "dcm":
        for tag in (b"\x28\x00\x10\x00", b"\x28\x00\x11\x00"):  # Rows, Columns
            i = bytes(data).find(tag)
            if i >= 0 and i + 10 <= len(data):
                data[i + 8:i + 10] = struct.pack("<H", 65535)
    elif kind == "jpg":
        i = bytes(data).find(b"\xff\xc0")
        if i >= 0 and i + 9 <= len(data):
            data[i + 5:i + 9] = struct.pack(">HH", 65500, 65500)
    else:
        data[8:16] = b"\xff" * 8
    return data


def mutate(data: bytes, kind: str, how: str, rng: random.Random) -> tuple[bytes, str]:
    """``(new bytes, suffix)`` of one mutation ``how`` of a ``kind`` seed."""
    b = bytearray(data)
    n = max(1, len(b))
    suffix = {"geotiff": "tif", "video": "mp4"}.get(kind, kind)
    if how == "flip":
        for _ in range(rng.randint(1, 16)):
            i = rng.randrange(n)
            b[i] ^= 1 << rng.randrange(8)
    elif how == "truncate":
        b = b[: rng.randrange(n)]
    elif how == "overwrite":
        i = rng.randrange(n)
        b[i:i + 64] = bytes(rng.randrange(256) for _ in range(min(64, n - i)))
    elif how == "insert":
        i = rng.randrange(n)
        b[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 256)))
    elif how == "delete":
        i = rng.randrange(n)
        del b[i:i + rng.randint(1, 256)]
    elif how == "huge":
        b = _huge(b, kind)
    elif how == "suffix":
        suffix = rng.choice([k for k in ("png", "jpg", "tif", "dcm", "mp4", "webp", "bmp")
                             if k != suffix])
    elif how == "empty":
        b = bytearray()
    elif how == "random":
        b = bytearray(rng.randrange(256) for _ in range(rng.randint(1, 4096)))
    return bytes(b), suffix


# -- the worker: runs cases in-process, stderr captured at fd 2 -----------------------------------
@contextlib.contextmanager
def _capture_fd2():
    buf = tempfile.TemporaryFile()  # noqa: SIM115 (read by the caller, closed with it)
    saved = os.dup(2)
    sys.stderr.flush()
    os.dup2(buf.fileno(), 2)
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            yield err, buf
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def run_case(case: dict, seeds: dict[str, str], cache: dict) -> dict:
    """One case in this process: ``{"ok": bool, "why": str, ...}``."""
    from upres.cli import main

    path, kind, entry = Path(case["path"]), case["kind"], case["entry"]
    out = Path(case["out"])
    out.mkdir(parents=True, exist_ok=True)
    result = {"rc": None, "lines": []}
    with _capture_fd2() as (err, buf):
        try:
            if entry == "cli":
                if kind in ("safetensors", "pth", "onnx"):
                    args = ["upscale", seeds["png"], "-o", str(out / "o.png"), "-m", str(path)]
                elif kind == "video" or path.suffix == ".mp4":
                    args = ["video", str(path), "-o", str(out / "o.mkv"), "-m", "bicubic",
                            "-s", "2", "-q"]
                elif kind == "yaml":
                    args = ["train", str(path), "--run-dir", str(out / "run"), "--set",
                            "data.train=[]"]
                else:
                    args = ["upscale", str(path), "-o", str(out), "-m", "bicubic", "-s", "2",
                            "-q"]
                result["rc"] = main(args)
            else:  # the Python API
                import upres
                from upres.errors import UpresError

                try:
                    if kind in ("safetensors", "pth", "onnx"):
                        upres.load(str(path))
                    elif kind == "yaml":
                        from upres.train.config import load_config

                        load_config(path)
                    elif kind == "video" or path.suffix == ".mp4":
                        upres.upscale_video(cache["bic"], path, out / "o.mkv",
                                            say=lambda m: None)
                    else:
                        upres.upscale_file(cache["bic"], path, out / f"o{path.suffix}")
                    result["rc"] = 0
                except UpresError as exc:
                    result["rc"] = 1
                    result["lines"] = [f"upres: {exc}"]
        except SystemExit as exc:  # argparse
            result["rc"] = exc.code if isinstance(exc.code, int) else 2
        except BaseException as exc:  # a traceback: what the fuzzer looks for
            import traceback

            result["rc"] = "traceback"
            result["traceback"] = "".join(traceback.format_exception(exc))[-1500:]
    buf.seek(0)
    text = buf.read().decode(errors="replace") + err.getvalue()
    lines = [x for x in text.splitlines() if x.strip()] + result["lines"]
    return judge(case, result, lines, out)


def judge(case: dict, result: dict, lines: list[str], out: Path) -> dict:
    rc = result["rc"]
    why = ""
    name = Path(case["path"]).name
    # hidden files are temporaries, but a video's work folder (.NAME.upres/) is kept on purpose
    # after damage, for a resume
    temporaries = [p.name for p in out.rglob(".*") if p.is_file()
                   and not p.parent.name.endswith(".upres")]
    written = [p for p in out.rglob("*") if p.is_file() and not any(
        part.startswith(".") for part in p.relative_to(out).parts) and p.name != "train.log"]
    if rc == "traceback":
        why = "traceback: " + result["traceback"].strip().splitlines()[-1]
    elif rc not in (0, 1, 2):
        why = f"exit status {rc}"
    elif rc != 0 and not lines:
        why = "failed without a message"
    elif rc != 0 and any(not x.startswith("upres: ") for x in lines):
        why = "stray output: " + next(x for x in lines if not x.startswith("upres: "))[:200]
    elif rc != 0 and case["kind"] not in ("yaml",) and case["entry"] == "cli" and \
            not any(name in x for x in lines) and rc == 1:
        why = "error does not name the file: " + lines[-1][:200]
    elif temporaries:
        why = f"temporaries left: {temporaries[:3]}"
    elif rc != 0 and written and case["kind"] not in ("safetensors", "pth", "onnx"):
        why = f"output written for a failed input: {[p.name for p in written][:3]}"
    return {"id": case["id"], "ok": not why, "why": why, "rc": rc if rc != "traceback" else -1,
            "lines": lines[:3]}


def worker() -> None:
    """Read cases (JSON lines) on stdin, answer results (JSON lines) on stdout."""
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (8 * 2**30, 8 * 2**30))
    import upres

    seeds = json.loads(sys.stdin.readline())
    cache = {"bic": upres.load("bicubic", scale=2)}
    real_stdout = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)  # CLI success lines go nowhere
    for line in sys.stdin:
        case = json.loads(line)
        t0 = time.perf_counter()
        res = run_case(case, seeds, cache)
        res["seconds"] = round(time.perf_counter() - t0, 3)
        res["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        real_stdout.write(json.dumps(res) + "\n")


# -- the parent: cases, workers, time limits, the HTTP API --------------------------------------
class Worker:
    def __init__(self, seeds: dict[str, Path]) -> None:
        self.p = subprocess.Popen([sys.executable, __file__, "--worker"], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True, bufsize=1)
        self.p.stdin.write(json.dumps({k: str(v) for k, v in seeds.items()}) + "\n")

    def run(self, case: dict, timeout: float) -> dict | None:
        import select

        self.p.stdin.write(json.dumps(case) + "\n")
        self.p.stdin.flush()
        ready, _, _ = select.select([self.p.stdout], [], [], timeout)
        if not ready:
            return None
        line = self.p.stdout.readline()
        return json.loads(line) if line else {"id": case["id"], "ok": False,
                                              "why": "worker died (crash)", "rc": -9}

    def kill(self) -> None:
        self.p.kill()
        self.p.wait()


def cases(seeds: dict[str, Path], n: int, seed: int, folder: Path) -> list[dict]:
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        kind = KINDS[i % len(KINDS)]
        how = MUTATIONS[(i // len(KINDS)) % len(MUTATIONS)]
        data, suffix = mutate(seeds[kind].read_bytes(), kind, how, random.Random(rng.random()))
        p = folder / f"case{i:05d}_{kind}_{how}.{suffix}"
        p.write_bytes(data)
        entry = "cli" if i % 2 == 0 else "api"
        out.append({"id": i, "kind": kind, "how": how, "entry": entry, "path": str(p),
                    "out": str(folder / f"out{i:05d}")})
    return out


def run_all(n: int, seed: int, timeout: float, http: bool = True,
            log=print) -> dict:
    """Run ``n`` cases (and the image cases through the HTTP API); returns the figures."""
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        seeds = make_seeds(tmp / "seeds")
        todo = cases(seeds, n, seed, tmp / "cases")
        w = Worker(seeds)
        results, hangs = [], []
        try:
            for c in todo:
                r = w.run(c, timeout)
                if r is None:
                    w.kill()
                    hangs.append(c)
                    r = {"id": c["id"], "ok": False, "why": f"hang (> {timeout:g} s)", "rc": -1}
                    w = Worker(seeds)
                elif r.get("why") == "worker died (crash)":
                    w.kill()
                    w = Worker(seeds)
                r.update(kind=c["kind"], how=c["how"], entry=c["entry"])
                results.append(r)
                if not r["ok"]:
                    log(f"FAIL case {c['id']} {c['kind']} {c['how']} {c['entry']}: {r['why']}")
        finally:
            w.kill()
        http_res = run_http([c for c in todo if c["kind"] in IMAGE_KINDS], timeout,
                            log) if http else []
    fails = [r for r in results if not r["ok"]]
    return {"cases": len(results), "failures": len(fails), "hangs": len(hangs),
            "tracebacks": sum(r["why"].startswith("traceback") for r in fails),
            "peak_rss_mb": max((r.get("rss_mb", 0) for r in results), default=0),
            "by_kind": {k: sum(r["kind"] == k for r in results) for k in KINDS},
            "http_cases": len(http_res), "http_failures": sum(not r["ok"] for r in http_res),
            "http_statuses": sorted({r["status"] for r in http_res}),
            "fail_list": [f"{r['kind']}/{r['how']}/{r['entry']}: {r['why']}" for r in fails]
            + [f"http {r['path']}: {r['status']}" for r in http_res if not r["ok"]]}


def run_http(todo: list[dict], timeout: float, log=print) -> list[dict]:
    import socket

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "upres", "serve", "--port", str(port),
                             "--models", "fast-x2"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    out = []
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            time.sleep(0.3)
        for c in todo:
            data = Path(c["path"]).read_bytes()
            try:
                r = httpx.post(f"{url}/v1/upscale", params={"model": "bicubic", "scale": 2},
                               content=data, timeout=timeout)
                status = r.status_code
            except httpx.HTTPError as exc:
                status = f"no answer ({type(exc).__name__})"
            ok = status in (200, 413, 415, 422)
            if not ok:
                log(f"FAIL http {c['path']}: {status}")
            out.append({"path": Path(c["path"]).name, "status": status, "ok": ok})
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return out


def main() -> None:
    if "--worker" in sys.argv:
        worker()
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=1500)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=60.0)
    args = ap.parse_args()
    t0 = time.time()
    r = run_all(args.cases, args.seed, args.timeout)
    dt = time.time() - t0
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _report import update_section

    kinds = ", ".join(f"{k} {v}" for k, v in r["by_kind"].items())
    body = (f"{r['cases']} cases through the CLI and the Python API (half each; {kinds}), "
            f"mutations {', '.join(MUTATIONS)}, seed {args.seed}, {dt / 60:.0f} min; and the "
            f"{r['http_cases']} image cases through the HTTP API (a real server on 127.0.0.1).\n\n"
            "| figure | value |\n|---|---|\n"
            f"| cases failing the rules (any of the below) | {r['failures']} |\n"
            f"| tracebacks | {r['tracebacks']} |\n"
            f"| hangs over {args.timeout:g} s | {r['hangs']} |\n"
            f"| peak RSS of a worker (8 GB address-space cap) | {r['peak_rss_mb']:.0f} MB |\n"
            f"| HTTP answers other than 200/413/415/422 | {r['http_failures']} "
            f"(statuses seen: {', '.join(map(str, r['http_statuses']))}) |\n"
            + ("\nFailures:\n\n" + "\n".join(f"- {x}" for x in r["fail_list"][:40])
               if r["fail_list"] else ""))
    update_section("fuzz", "Fuzzing: mutated real files through every entry point", body)
    print(json.dumps({k: v for k, v in r.items() if k != "fail_list"}, indent=1))


if __name__ == "__main__":
    main()
