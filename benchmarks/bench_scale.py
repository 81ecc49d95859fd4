"""Scale-out (issue 24): the same folder job on the local engine, a Ray cluster of one and of
two worker nodes, and two ``--shard`` processes, in one run on this machine.

Inputs: N small images (64x48 crops of BSD100, PNG). Each run is ``upres upscale IN -r -o OUT
-m MODEL -q`` in a child process; the Ray clusters (a head with no CPUs and 1 or 2 worker
nodes of one CPU each) run in a network namespace with nothing but a loopback interface, as in
the tests, so they bind and talk on 127.0.0.1 only. Reported: wall time (cold: it includes
Python, the model load and, for Ray, connecting and starting the actors), images/s, the cold
start (the same command on 8 images), peak RSS of the driver (the child process) and of the
largest worker actor (sampled from /proc while it runs), and the driver's peak RSS at 1k and
10k inputs (bicubic, tiny images) to show it grows only with the manifest.

    sudo .venv/bin/python benchmarks/bench_scale.py [--n 2000] [--model fast-x2]
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import update_section

BENCH = Path(__file__).resolve().parents[2] / "shared" / "data" / "benchmark"
RAY = str(Path(sys.executable).with_name("ray"))


def make_inputs(folder: Path, n: int, size: tuple[int, int] = (64, 48)) -> None:
    from PIL import Image

    srcs = [Image.open(p).convert("RGB") for p in sorted((BENCH / "BSD100").glob("*.png"))]
    for i in range(n):
        sub = folder / f"d{i // 1000:03d}"
        sub.mkdir(parents=True, exist_ok=True)
        x, y = (i * 7) % 400, (i * 13) % 260
        srcs[i % len(srcs)].crop((x, y, x + size[0], y + size[1])).save(sub / f"{i:06d}.png")


class WorkerRss:
    """Samples the resident memory of Ray worker actors (``ray::_Worker``) from /proc."""

    def __init__(self) -> None:
        self.peak = 0
        self.stop = threading.Event()
        self.t = threading.Thread(target=self.loop, daemon=True)

    def loop(self) -> None:
        while not self.stop.is_set():
            for pid in os.listdir("/proc"):
                if not pid.isdigit():
                    continue
                try:
                    cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
                    if b"ray::_Worker" not in cmd:
                        continue
                    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                        if line.startswith("VmRSS:"):
                            self.peak = max(self.peak, int(line.split()[1]))
                except OSError:
                    continue
            time.sleep(0.5)

    def __enter__(self) -> WorkerRss:
        self.t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.t.join()


def child(args: list[str], prefix: list[str] = (), env: dict | None = None
          ) -> tuple[float, float]:
    """``(seconds, peak RSS MB)`` of ``upres ARGS`` in a child process."""
    code = ("import resource, sys; from upres.cli import main; rc = main(sys.argv[1:]); "
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); sys.exit(rc)")
    t0 = time.perf_counter()
    r = subprocess.run([*prefix, sys.executable, "-c", code, *args], capture_output=True,
                       text=True, env=env)
    dt = time.perf_counter() - t0
    if r.returncode not in (0, 1):
        raise RuntimeError(r.stderr[-2000:])
    return dt, int(r.stdout.split()[-1]) / 1024


class Cluster:
    """A Ray head and ``workers`` worker nodes in a loopback-only network namespace."""

    def __init__(self, workers: int, log: Path) -> None:
        self.holder = subprocess.Popen(["unshare", "-n", "sleep", "36000"])
        own = os.readlink("/proc/self/ns/net")
        for _ in range(100):  # until unshare has made the new namespace (else lo would be ours)
            try:
                if os.readlink(f"/proc/{self.holder.pid}/ns/net") != own:
                    break
            except OSError:
                pass
            time.sleep(0.1)
        else:
            raise RuntimeError("unshare -n did not make a network namespace in 10 s")
        self.prefix = ["nsenter", f"--net=/proc/{self.holder.pid}/ns/net"]
        subprocess.run([*self.prefix, "ip", "link", "set", "lo", "up"], check=True)
        self.env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token",
                    "RAY_AUTH_TOKEN": secrets.token_hex(32)}
        self.addr = "127.0.0.1:26380"
        self.log = open(log, "a")  # noqa: SIM115 (closed in close())
        self.ray("start", "--head", "--node-ip-address", "127.0.0.1", "--port", "26380",
                 "--num-cpus", "0", "--include-dashboard", "false", "--disable-usage-stats")
        for _ in range(workers):
            self.ray("start", "--address", self.addr, "--node-ip-address", "127.0.0.1",
                     "--num-cpus", "1")

    def ray(self, *a: str) -> None:
        subprocess.run([*self.prefix, RAY, *a], env=self.env, check=True, stdout=self.log,
                       stderr=self.log, timeout=300)

    def close(self) -> None:
        subprocess.run([*self.prefix, RAY, "stop", "--force"], env=self.env, stdout=self.log,
                       stderr=self.log, timeout=300)
        self.holder.kill()
        self.log.close()


def estimate(per_node: float, model: str) -> str:
    """The cost of a million images from ``per_node``, the seconds of one CPU per image."""
    import math

    cpu_h = per_node * 1e6 / 3600
    return (f"\n\nEstimate from the 2-node run: {per_node * 1e3:.1f} ms of one CPU per {model} "
            f"image of 64x48 -> 128x96 (decode, network, encode, commit, report), so a million "
            f"such images take {cpu_h:.1f} CPU-hours: {cpu_h / 32 * 60:.0f} minutes on one "
            f"32-core machine, within the hour on {max(1, math.ceil(cpu_h / 32))} such "
            "machine(s), plus one cold start per node. The cost per image grows with its "
            "pixels: a 1280x720 output with `x4` takes about 0.16 s of two cores here "
            "(network alone, `docs/benchmarks.md`, video section: 280 frames in 44.5 s), "
            "i.e. about 0.3 s of one CPU, so a million such images are about 90 CPU-hours: "
            "3 hours on one 32-core machine, or an hour on 3.")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--model", default="fast-x2")
    args = ap.parse_args()
    rows = ["| engine | images | wall (cold) | images/s | cold start (8 images) | "
            "driver peak RSS | worker peak RSS |", "|---|---|---|---|---|---|---|"]
    per_image = {}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        src, small = tmp / "in", tmp / "in8"
        make_inputs(src, args.n)
        make_inputs(small, 8)
        base = ["-r", "-m", args.model, "-q"]

        def run(name: str, extra: list[str], prefix=(), env=None) -> None:
            out = tmp / f"out-{name}"
            cold, _ = child(["upscale", str(small), "-o", str(tmp / f"c-{name}"), *base,
                             *extra], list(prefix), env)
            with WorkerRss() as w:
                dt, rss = child(["upscale", str(src), "-o", str(out), *base, *extra],
                                list(prefix), env)
            done = sum(1 for p in out.rglob("*.png"))
            per_image[name] = dt / max(1, done)
            rows.append(f"| {name} | {done} | {dt:.1f} s | {done / dt:.1f} | {cold:.1f} s | "
                        f"{rss:.0f} MB | {w.peak / 1024:.0f} MB |" if w.peak else
                        f"| {name} | {done} | {dt:.1f} s | {done / dt:.1f} | {cold:.1f} s | "
                        f"{rss:.0f} MB | - |")
            print(rows[-1], flush=True)
            shutil.rmtree(out, ignore_errors=True)

        run("local (1 process, 2 threads)", [])
        for nodes in (1, 2):
            c = Cluster(nodes, tmp / "ray.log")
            try:
                run(f"ray, {nodes} worker node(s)", ["--engine", "ray", "--address", c.addr],
                    c.prefix, c.env)
            finally:
                c.close()
        # two shards side by side, each 1 torch thread: wall time of the pair
        out = tmp / "out-shard"
        t0 = time.perf_counter()
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        procs = [subprocess.Popen([sys.executable, "-m", "upres", "upscale", str(src), "-o",
                                   str(out), *base, "--shard", f"{k}/2"], env=env)
                 for k in range(2)]
        [p.wait() for p in procs]
        dt = time.perf_counter() - t0
        done = sum(1 for p in out.rglob("*.png"))
        rows.append(f"| --shard K/2, 2 processes of 1 thread | {done} | {dt:.1f} s | "
                    f"{done / dt:.1f} | - | - | - |")
        print(rows[-1], flush=True)
        # driver memory against the number of inputs (bicubic, 16x12 images)
        mem = ["| inputs | driver peak RSS (ray engine, local cluster) |", "|---|---|"]
        for n in (1000, 10000):
            many = tmp / f"many{n}"
            make_inputs(many, n, (16, 12))
            c = Cluster(2, tmp / "ray.log")
            try:
                _, rss = child(["upscale", str(many), "-r", "-o", str(tmp / f"o{n}"), "-m",
                                "bicubic", "-s", "2", "-q", "--engine", "ray", "--address",
                                c.addr], c.prefix, c.env)
            finally:
                c.close()
            mem.append(f"| {n} | {rss:.0f} MB |")
            print(mem[-1], flush=True)
    two = per_image.get("ray, 2 worker node(s)")
    est = estimate(two * 2, args.model) if two else ""
    body = (f"{args.n} images, model `{args.model}`, all runs in this one run. The machine has "
            "2 cores, so two one-CPU worker nodes can at best double one node; the local "
            "engine already uses both cores through torch's threads.\n\n" + "\n".join(rows)
            + "\n\nDriver memory against the job's size:\n\n" + "\n".join(mem) + est)
    update_section("scale-out", "Scale-out: Ray and shards (x2, small images)", body)


if __name__ == "__main__":
    main()
