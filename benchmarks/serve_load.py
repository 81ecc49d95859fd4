"""Load and abuse test of ``upres serve`` on loopback: many concurrent clients mixing valid
images with oversized uploads, decompression bombs, truncated files and non-images.

    .venv/bin/python benchmarks/serve_load.py [--requests 200] [--clients 16] [--model fast-x2]
    .venv/bin/python benchmarks/serve_load.py --soak 300 [--clients 16]

Starts the real server (uvicorn subprocess, free loopback port, one worker, queue of 32 with
a 30 s wait), fires the requests from ``--clients`` concurrent httpx clients, checks every answer
(valid images: 200 with an image of exactly ``scale`` times the size, or 503 with Retry-After;
bad inputs: the documented 4xx code), and writes the "serve-load" section of
docs/benchmarks.md: throughput, latency percentiles per kind, status-code counts, peak server
RSS. Bounded: ``--requests`` requests, each with a 120 s client timeout, on loopback only.

``--soak SECONDS`` (the "serve-soak" section) runs the clients for that long instead, mixing
in multipart uploads, slow uploads (half the body, then silence past the server's 5 s read
timeout: 408 expected), trickled uploads (a chunk a second, completing), and clients that
abandon their request mid-upload or mid-response; it samples the server's RSS and open file
descriptors every 2 s and compares the first minute after a 30 s warm-up with the last minute,
and counts files left in the server's own temporary folder. Bounded by SECONDS plus the
in-flight requests' timeouts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import os
import random
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from upres.bench import peak_rss_mb

from _report import update_section

BENCH = Path(__file__).resolve().parents[2] / "shared" / "data" / "benchmark"
MAX_UPLOAD_MB = 4
MAX_PIXELS = 2_000_000


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _bomb() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", 50_000, 50_000, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0"))
            + chunk(b"IEND", b""))


def _cases(n: int, seed: int) -> list[tuple[str, bytes, tuple[int, int] | None]]:
    """``(kind, body, (h, w) of a valid image or None)``: about 55 % valid images (crops of
    Set14, 96 to 256 px), the rest oversized / bomb / truncated / not an image."""
    rng = random.Random(seed)
    photos = [np.asarray(Image.open(p).convert("RGB")) for p in sorted(
        (BENCH / "Set14").glob("*.png"))]
    big = os.urandom(MAX_UPLOAD_MB * 2**20 + 1024)
    out = []
    for _ in range(n):
        r = rng.random()
        if r < 0.55:
            img = rng.choice(photos)
            h, w = rng.randint(96, min(256, img.shape[0])), rng.randint(96, min(256, img.shape[1]))
            y, x = rng.randint(0, img.shape[0] - h), rng.randint(0, img.shape[1] - w)
            out.append(("valid", _png(np.ascontiguousarray(img[y:y + h, x:x + w])), (h, w)))
        elif r < 0.67:
            out.append(("oversized", big, None))
        elif r < 0.78:
            out.append(("bomb", _bomb(), None))
        elif r < 0.90:
            data = _png(rng.choice(photos)[:128, :128].copy())
            out.append(("truncated", data[: len(data) // 2], None))
        else:
            out.append(("not_image", b"%PDF-1.4 this is not an image " * 40, None))
    return out


EXPECTED = {"oversized": {413}, "bomb": {413}, "truncated": {422}, "not_image": {415}}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _fire(url: str, cases: list, clients: int, model: str, scale: int) -> list[dict]:
    results: list[dict] = []
    queue: asyncio.Queue = asyncio.Queue()
    for c in cases:
        queue.put_nowait(c)

    async def client() -> None:
        async with httpx.AsyncClient(timeout=120) as http:
            while not queue.empty():
                kind, body, size = queue.get_nowait()
                t = time.perf_counter()
                try:
                    r = await http.post(f"{url}/v1/upscale", params={"model": model},
                                        content=body)
                    status, headers, content = r.status_code, r.headers, r.content
                except httpx.HTTPError as exc:
                    status, headers, content = f"client error {type(exc).__name__}", {}, b""
                dt = time.perf_counter() - t
                ok = _check(kind, status, headers, content, size, scale)
                results.append({"kind": kind, "status": status, "seconds": dt, "ok": ok})

    await asyncio.gather(*(client() for _ in range(clients)))
    return results


def _check(kind: str, status, headers, content: bytes, size, scale: int) -> bool:
    if status == 503:
        return int(headers.get("retry-after", "0")) > 0
    if kind == "valid":
        if status != 200:
            return False
        with Image.open(io.BytesIO(content)) as im:
            return im.size == (size[1] * scale, size[0] * scale)
    return status in EXPECTED[kind]


SOAK_KINDS = (("valid", 0.36), ("multipart", 0.10), ("oversized", 0.07), ("bomb", 0.07),
              ("truncated", 0.07), ("not_image", 0.05), ("slow", 0.06), ("trickle", 0.06),
              ("abandon_upload", 0.08), ("abandon_response", 0.08))
READ_TIMEOUT = 5.0


async def _raw(port: int, head: bytes, body: bytes, *, stall_after: int | None = None,
               trickle: int | None = None, read_bytes: int | None = None,
               timeout: float = 120) -> str:
    """One request over a raw socket. ``stall_after``: send that many body bytes, then wait
    (the server must time out); ``trickle``: send the body in that many pieces a second apart;
    ``read_bytes``: close after reading that many bytes of the answer. The status, or what
    happened."""
    r, w = await asyncio.open_connection("127.0.0.1", port)
    try:
        w.write(head)
        if stall_after is not None:
            w.write(body[:stall_after])
            await w.drain()
            line = await asyncio.wait_for(r.readline(), READ_TIMEOUT * 4)
            return line.split()[1].decode() if line else "closed"
        if trickle:
            step = -(-len(body) // trickle)
            for i in range(0, len(body), step):
                w.write(body[i:i + step])
                await w.drain()
                await asyncio.sleep(1.0)
        else:
            w.write(body)
            await w.drain()
        if read_bytes is not None:
            await asyncio.wait_for(r.read(read_bytes), timeout)
            return "abandoned"
        line = await asyncio.wait_for(r.readline(), timeout)
        status = line.split()[1].decode() if line else "closed"
        await asyncio.wait_for(r.read(), timeout)  # the rest of the answer
        return status
    finally:
        w.close()


def _multipart(data: bytes) -> tuple[bytes, str]:
    b = "upresSoakBoundary7"
    body = (f"--{b}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"../x.png\"\r\n"
            f"Content-Type: image/png\r\n\r\n").encode() + data + f"\r\n--{b}--\r\n".encode()
    return body, f"multipart/form-data; boundary={b}"


async def _soak(url: str, port: int, seconds: float, clients: int, model: str, scale: int,
                seed: int, pid: int) -> tuple[list[dict], list[tuple[float, float, int]]]:
    """Clients firing mixed requests for ``seconds``; samples ``(t, RSS MB, fds)``."""
    rng = random.Random(seed)
    pool = _cases(120, seed)
    valid = [c for c in pool if c[0] == "valid"]
    bad = {k: [c for c in pool if c[0] == k] for k in EXPECTED}
    results: list[dict] = []
    samples: list[tuple[float, float, int]] = []
    t0 = time.perf_counter()
    end = t0 + seconds
    kinds, weights = zip(*SOAK_KINDS, strict=True)

    def head(n: int, ctype: str = "image/png") -> bytes:
        return (f"POST /v1/upscale?model={model} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Content-Type: {ctype}\r\nContent-Length: {n}\r\n"
                "Connection: close\r\n\r\n").encode()

    async def sampler() -> None:
        while time.perf_counter() < end:
            with contextlib.suppress(OSError):
                rss = next(int(x.split()[1]) for x in
                           Path(f"/proc/{pid}/status").read_text().splitlines()
                           if x.startswith("VmRSS:")) / 1024
                samples.append((time.perf_counter() - t0, rss, len(os.listdir(f"/proc/{pid}/fd"))))
            await asyncio.sleep(2.0)

    async def client(k: int) -> None:
        crng = random.Random(rng.random())
        async with httpx.AsyncClient(timeout=120) as http:
            while time.perf_counter() < end:
                kind = crng.choices(kinds, weights)[0]
                t = time.perf_counter()
                ok = True
                try:
                    if kind in ("valid", "multipart"):
                        _, data, size = crng.choice(valid)
                        if kind == "multipart":
                            body, ctype = _multipart(data)
                            r = await http.post(f"{url}/v1/upscale", params={"model": model},
                                                content=body, headers={"content-type": ctype})
                        else:
                            r = await http.post(f"{url}/v1/upscale", params={"model": model},
                                                content=data)
                        status = r.status_code
                        ok = _check("valid", status, r.headers, r.content, size, scale)
                    elif kind in EXPECTED:
                        _, data, _ = crng.choice(bad[kind])
                        r = await http.post(f"{url}/v1/upscale", params={"model": model},
                                            content=data)
                        status = r.status_code
                        ok = _check(kind, status, r.headers, r.content, None, scale)
                    else:
                        _, data, _ = crng.choice(valid)
                        if kind == "slow":
                            status = await _raw(port, head(len(data)), data,
                                                stall_after=len(data) // 2)
                            ok = status == "408"
                        elif kind == "trickle":
                            status = await _raw(port, head(len(data)), data, trickle=4)
                            ok = status in ("200", "503")
                        elif kind == "abandon_upload":
                            _r, w_ = await asyncio.open_connection("127.0.0.1", port)
                            w_.write(head(len(data)) + data[: len(data) // 3])
                            await w_.drain()
                            w_.close()
                            status = "abandoned"
                        else:
                            status = await _raw(port, head(len(data)), data, read_bytes=64)
                except (httpx.HTTPError, OSError, TimeoutError) as exc:
                    status, ok = f"client error {type(exc).__name__}", False
                results.append({"kind": kind, "status": status, "ok": ok,
                                "seconds": time.perf_counter() - t})

    await asyncio.gather(sampler(), *(client(k) for k in range(clients)))
    return results, samples


def _soak_report(results: list[dict], samples: list, args: argparse.Namespace, wall: float,
                 alive: bool, crashed: bool, temps: list[str]) -> tuple[str, bool]:
    codes = Counter(str(r["status"]) for r in results)
    bad = [r for r in results if not r["ok"]]
    fives = sum(v for k, v in codes.items() if k.startswith("5") and k != "503")
    lines = [f"{len(results)} requests from {args.clients} concurrent clients over "
             f"{wall:.0f} s; model `{args.model}`; server: 1 worker, queue 32, 30 s wait, "
             f"read timeout {READ_TIMEOUT:g} s, uploads <= {MAX_UPLOAD_MB} MiB, inputs <= "
             f"{MAX_PIXELS:,} pixels.", "", "| kind | requests | answers | not as expected |",
             "|---|---|---|---|"]
    for kind, _ in SOAK_KINDS:
        rs = [r for r in results if r["kind"] == kind]
        c = Counter(str(r["status"]) for r in rs)
        lines.append(f"| {kind} | {len(rs)} | "
                     f"{', '.join(f'{k}: {v}' for k, v in sorted(c.items()))} | "
                     f"{sum(1 for r in rs if not r['ok'])} |")

    def minute(a: float, b: float) -> str:
        ss = [x for x in samples if a <= x[0] < b]
        if not ss:
            return "-"
        return (f"RSS {np.mean([x[1] for x in ss]):.0f} MB (max {max(x[1] for x in ss):.0f}), "
                f"open fds {min(x[2] for x in ss)}-{max(x[2] for x in ss)}")

    last = samples[-1][0] if samples else 0.0
    first_s, last_s = minute(30, 90), minute(last - 60, last + 1)
    rss_first = [x[1] for x in samples if 30 <= x[0] < 90]
    rss_last = [x[1] for x in samples if x[0] >= last - 60]
    growth = (np.mean(rss_last) / np.mean(rss_first) - 1) * 100 if rss_first and rss_last else 0
    lines += ["", "| window | server |", "|---|---|",
              f"| first minute after a 30 s warm-up (30-90 s) | {first_s} |",
              f"| last minute | {last_s} |", "",
              f"RSS change, last minute against the first: {growth:+.1f} %. 5xx other than 503: "
              f"{fives}; answers not as expected: {len(bad)}; server alive afterwards: "
              f"{'yes' if alive else 'NO'}; traceback in the server log: "
              f"{'YES' if crashed else 'no'}; files left in the server's temporary folder: "
              f"{len(temps)}."]
    failed = bool(bad or fives or crashed or not alive or temps or growth > 10)
    return "\n".join(lines), failed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--model", default="fast-x2")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--soak", type=float, default=None, metavar="SECONDS",
                    help="soak for SECONDS with slow and abandoned requests mixed in")
    args = ap.parse_args()
    cases = _cases(args.requests, args.seed)
    port = _free_port()
    cmd = [sys.executable, "-m", "upres.cli", "serve", "--port", str(port), "--models",
           args.model, "--max-upload-mb", str(MAX_UPLOAD_MB), "--max-pixels", str(MAX_PIXELS),
           "--workers", "1", "--max-queue", "32", "--queue-timeout", "30"]
    tmpdir = tempfile.mkdtemp(prefix="upres-soak-")
    env = {**os.environ, "TMPDIR": tmpdir}
    if args.soak:
        cmd += ["--read-timeout", str(READ_TIMEOUT)]
    # The server's log goes to a file: a pipe nobody reads until the end fills up (64 KiB)
    # and then blocks the server on its next log line.
    log_file = Path(tmpdir).with_suffix(".log")
    proc = subprocess.Popen(cmd, stdout=open(log_file, "w"),  # noqa: SIM115 (closed on exit)
                            stderr=subprocess.STDOUT, text=True, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                raise SystemExit(f"server did not start:\n{log_file.read_text()}")
            time.sleep(0.3)
        scale = next(m["scale"] for m in httpx.get(f"{url}/v1/models").json()
                     if m["name"] == args.model)
        t0 = time.perf_counter()
        if args.soak:
            results, samples = asyncio.run(_soak(url, port, args.soak, args.clients,
                                                 args.model, scale, args.seed, proc.pid))
        else:
            results = asyncio.run(_fire(url, cases, args.clients, args.model, scale))
        wall = time.perf_counter() - t0
        try:
            t_h = time.perf_counter()
            alive = httpx.get(f"{url}/healthz", timeout=30).status_code == 200
            print(f"healthz after {time.perf_counter() - t_h:.2f} s", flush=True)
        except httpx.HTTPError:
            alive = False
        peak = peak_rss_mb(proc.pid)
        temps = sorted(str(p) for p in Path(tmpdir).rglob("*"))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log = log_file.read_text(errors="replace")
        log_file.unlink()
        shutil.rmtree(tmpdir, ignore_errors=True)
    if "Traceback" in log:
        print(f"server exit code {proc.returncode}; its errors: "
              + "; ".join(sorted({x for x in log.splitlines() if not x.startswith(" ")
                                  and ("Error" in x or "Exception" in x)})), file=sys.stderr)
    if args.soak:
        body, failed = _soak_report(results, samples, args, wall, alive, "Traceback" in log,
                                    temps)
        print(body)
        update_section("serve-soak", "Serve: soak with slow and abandoned clients (loopback)",
                       body)
        raise SystemExit(1 if failed else 0)
    codes = Counter(str(r["status"]) for r in results)
    bad = [r for r in results if not r["ok"]]
    crashed = "Traceback" in log
    lines = [f"{len(results)} requests from {args.clients} concurrent clients in {wall:.1f} s "
             f"({len(results) / wall:.1f} requests/s); model `{args.model}` (x{scale}); server: "
             f"1 worker, queue 32, 30 s wait, uploads <= {MAX_UPLOAD_MB} MiB, inputs <= "
             f"{MAX_PIXELS:,} pixels.", "",
             "| kind | requests | status codes | p50 s | p90 s | p99 s | max s |",
             "|---|---|---|---|---|---|---|"]
    for kind in ("valid", "oversized", "bomb", "truncated", "not_image"):
        rs = [r for r in results if r["kind"] == kind]
        if not rs:
            continue
        t = np.array([r["seconds"] for r in rs])
        c = Counter(str(r["status"]) for r in rs)
        codes_k = ", ".join(f"{k}: {v}" for k, v in sorted(c.items()))
        p50, p90, p99 = np.percentile(t, [50, 90, 99])
        lines.append(f"| {kind} | {len(rs)} | {codes_k} | {p50:.2f} | {p90:.2f} | {p99:.2f} | "
                     f"{t.max():.2f} |")
    valid_ok = sum(1 for r in results if r["kind"] == "valid" and r["status"] == 200)
    lines += ["", f"All status codes: {', '.join(f'{k}: {v}' for k, v in sorted(codes.items()))}."
              f" Valid images answered with the right size: {valid_ok}; answers not as "
              f"expected: {len(bad)}; 500s: {codes.get('500', 0)}; server alive afterwards: "
              f"{'yes' if alive else 'NO'}; traceback in the server log: "
              f"{'YES' if crashed else 'no'}. Peak server RSS (VmHWM): {peak:.0f} MB."]
    body = "\n".join(lines)
    print(body)
    update_section("serve-load", "Serve: load and abuse test (loopback)", body)
    if bad or crashed or not alive or codes.get("500"):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
