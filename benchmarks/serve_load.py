"""Load and abuse test of ``upres serve`` on loopback: many concurrent clients mixing valid
images with oversized uploads, decompression bombs, truncated files and non-images.

    .venv/bin/python benchmarks/serve_load.py [--requests 200] [--clients 16] [--model fast-x2]

Starts the real server (uvicorn subprocess, free loopback port, one worker, queue of 32 with
a 30 s wait), fires the requests from ``--clients`` concurrent httpx clients, checks every answer
(valid images: 200 with an image of exactly ``scale`` times the size, or 503 with Retry-After;
bad inputs: the documented 4xx code), and writes the "serve-load" section of
docs/benchmarks.md: throughput, latency percentiles per kind, status-code counts, peak server
RSS. Bounded: ``--requests`` requests, each with a 120 s client timeout, on loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import random
import socket
import struct
import subprocess
import sys
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--model", default="fast-x2")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    cases = _cases(args.requests, args.seed)
    port = _free_port()
    cmd = [sys.executable, "-m", "upres.cli", "serve", "--port", str(port), "--models",
           args.model, "--max-upload-mb", str(MAX_UPLOAD_MB), "--max-pixels", str(MAX_PIXELS),
           "--workers", "1", "--max-queue", "32", "--queue-timeout", "30"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
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
                raise SystemExit(f"server did not start:\n{proc.stdout.read()}")
            time.sleep(0.3)
        scale = next(m["scale"] for m in httpx.get(f"{url}/v1/models").json()
                     if m["name"] == args.model)
        t0 = time.perf_counter()
        results = asyncio.run(_fire(url, cases, args.clients, args.model, scale))
        wall = time.perf_counter() - t0
        alive = httpx.get(f"{url}/healthz", timeout=5).status_code == 200
        peak = peak_rss_mb(proc.pid)
    finally:
        proc.terminate()
        log, _ = proc.communicate(timeout=30)
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
