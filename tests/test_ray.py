"""Scale-out (issue 24): a real local Ray cluster (a head and two worker nodes, all started with
the loopback node address and contacted only at 127.0.0.1), and the engine-less ``--shard``.

Outputs byte-identical to a local run; a corrupt image is one error row; a worker SIGKILLed
mid-run and the job still writes every output exactly once; a driver killed and run again
resumes; a second run skips everything; other parameters are refused; two ``--shard``
processes split the job with no overlap."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("ray")

from upres.cli import main

from conftest import BENCH

RAY = str(Path(sys.executable).with_name("ray"))


@pytest.fixture(scope="module")
def netns():
    """A network namespace with nothing but a loopback interface (held by a sleeping
    process), and the command prefix that runs a program inside it: whatever the cluster
    binds, and whatever it tries to reach, it can reach nothing but 127.0.0.1."""
    if subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode != 0:
        pytest.skip("needs unshare -n (root) for an isolated loopback-only test network")
    holder = subprocess.Popen(["unshare", "-n", "sleep", "3600"])
    try:
        # Until unshare has made the new namespace, /proc/PID/ns/net is still this one's: the
        # loopback brought up then would be this namespace's, and the cluster's would stay
        # down (seen once: the head's GCS listened and no client could reach it).
        assert _wait_for(lambda: _netns(holder.pid) not in ("", _netns(os.getpid())), 10)
        prefix = ["nsenter", f"--net=/proc/{holder.pid}/ns/net"]
        assert _wait_for(lambda: subprocess.run([*prefix, "ip", "link", "set", "lo", "up"],
                                                capture_output=True).returncode == 0, 10)
        yield prefix
    finally:
        holder.kill()
        holder.wait()


@pytest.fixture(scope="module")
def cluster(netns, tmp_path_factory):
    """``(prefix, env, address)`` of a Ray cluster in ``netns``: a head (no CPUs) and two
    worker nodes of one CPU each, all on 127.0.0.1, with a token of their own."""
    import secrets

    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token",
           "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    addr = "127.0.0.1:26379"
    log = open(tmp_path_factory.mktemp("ray") / "start.log", "w")  # noqa: SIM115

    def run(*a: str) -> None:
        # to a file, not a pipe: the daemons ray start leaves behind keep its pipes open
        subprocess.run([*netns, RAY, *a], env=env, check=True, stdout=log, stderr=log,
                       timeout=180)

    try:
        run("start", "--head", "--node-ip-address", "127.0.0.1", "--port", "26379",
            "--num-cpus", "0", "--include-dashboard", "false", "--disable-usage-stats")
        for _ in range(2):
            run("start", "--address", addr, "--node-ip-address", "127.0.0.1", "--num-cpus", "1")
        yield netns, env, addr
    finally:
        subprocess.run([*netns, RAY, "stop", "--force"], env=env, stdout=log, stderr=log,
                       timeout=120)
        log.close()


def _inputs(folder: Path, n: int, size: tuple[int, int] = (96, 64)) -> list[Path]:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    srcs = sorted((BENCH / "BSD100").glob("*.png"))
    out = []
    for i in range(n):
        sub = folder / ("a" if i % 3 else "b")
        sub.mkdir(exist_ok=True)
        p = sub / f"im{i:03d}.png"
        Image.open(srcs[i % len(srcs)]).crop((i, i, i + size[0], i + size[1])).save(p)
        out.append(p)
    return out


def _outputs(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*")
            if p.is_file() and ".upres-job" not in p.parts}


def _rows(job: Path, name: str = "report.jsonl") -> list[dict]:
    return [json.loads(x) for x in (job / ".upres-job" / name).read_text().splitlines()]


def _cli(args: list[str], prefix: list[str] | tuple = ()) -> list[str]:
    return [*prefix, sys.executable, "-m", "upres", "upscale", *args]


def _ray_run(cluster, args: list[str]) -> subprocess.CompletedProcess:
    prefix, env, addr = cluster
    return subprocess.run(_cli([*args, "--engine", "ray", "--address", addr], prefix),
                          env=env, capture_output=True, text=True, timeout=600)


def test_ray_equals_local_with_a_corrupt_image(cluster, tmp_path, capsys):
    src = tmp_path / "in"
    _inputs(src, 12)
    (src / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    local, rayout = tmp_path / "local", tmp_path / "ray"
    assert main(["upscale", str(src), "-r", "-o", str(local), "-m", "fast-x2", "-q"]) == 1
    assert "broken.png" in capsys.readouterr().err
    r = _ray_run(cluster, [str(src), "-r", "-o", str(rayout), "-m", "fast-x2", "-q"])
    assert r.returncode == 1 and r.stderr.count("broken.png") == 1, r.stderr
    a, b = _outputs(local), _outputs(rayout)
    assert len(a) == 12 and a == b  # same tree, names and bytes
    rows = _rows(rayout)
    assert sorted(r["status"] for r in rows) == ["done"] * 12 + ["failed"]
    assert len({r["worker"] for r in rows}) == 2  # both worker nodes took part
    manifest = json.loads((rayout / ".upres-job" / "manifest.json").read_text())
    assert manifest["inputs"] == 13 and manifest["params"]["model"] == "fast-x2"
    # the same job again: everything is there; other parameters: refused in one line
    r = _ray_run(cluster, [str(src), "-r", "-o", str(rayout), "-m", "fast-x2", "-q"])
    assert r.returncode == 1
    assert sum(r["status"] == "exists" for r in _rows(rayout)) == 12
    r = _ray_run(cluster, [str(src), "-r", "-o", str(rayout), "-m", "fast-x2", "-q",
                           "--tile", "64"])
    err = r.stderr.strip().splitlines()
    assert r.returncode == 1 and len(err) == 1, err
    assert "other parameters (tile differ)" in err[0], err


def _netns(pid: int) -> str:
    """The network namespace of process ``pid`` (``net:[inode]``), or "" if unreadable."""
    try:
        return os.readlink(f"/proc/{pid}/ns/net")
    except OSError:
        return ""


def _wait_for(cond, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.1)
    return False


def _worker_pids() -> list[int]:
    r = subprocess.run(["pgrep", "-f", "ray::_Worker"], capture_output=True, text=True)
    return [int(x) for x in r.stdout.split()]


def test_worker_killed_every_output_exactly_once(cluster, tmp_path):
    src = tmp_path / "in"
    _inputs(src, 40, (200, 150))
    out = tmp_path / "out"
    prefix, env, addr = cluster
    p = subprocess.Popen(_cli([str(src), "-r", "-o", str(out), "-m", "x2", "-q", "--engine",
                               "ray", "--address", addr], prefix), env=env)
    try:
        assert _wait_for(lambda: len(_outputs(out)) >= 3 if out.exists() else False, 300)
        pids = _worker_pids()
        assert pids
        os.kill(pids[0], signal.SIGKILL)
        assert p.wait(timeout=600) == 0
    finally:
        if p.poll() is None:
            p.kill()
    got = _outputs(out)
    assert len(got) == 40 and all(v[:8] == b"\x89PNG\r\n\x1a\n" for v in got.values())
    assert not [f for f in out.rglob(".*") if f.is_file()]  # no temporaries left
    rows = _rows(out)
    done = [r["input"] for r in rows if r["status"] == "done"]
    assert len(done) == len(set(done))  # each output committed once
    assert {r["input"] for r in rows if r["status"] in ("done", "exists")} == \
        {str(f) for f in src.rglob("*.png")}


def test_driver_killed_then_rerun_resumes(cluster, tmp_path):
    src = tmp_path / "in"
    _inputs(src, 30, (200, 150))
    out = tmp_path / "out"
    prefix, env, addr = cluster
    cmd = _cli([str(src), "-r", "-o", str(out), "-m", "x2", "-q", "--engine", "ray",
                "--address", addr], prefix)
    p = subprocess.Popen(cmd, env=env)
    try:
        assert _wait_for(lambda: len(_outputs(out)) >= 4 if out.exists() else False, 300)
        os.kill(p.pid, signal.SIGKILL)
        p.wait(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    first = len(_outputs(out))
    assert 4 <= first < 30
    subprocess.run(cmd, env=env, check=True, timeout=600)
    assert len(_outputs(out)) == 30
    rows = _rows(out)
    assert sum(r["status"] == "exists" for r in rows) >= first - 2
    assert not [f for f in out.rglob(".*") if f.is_file()]


def test_shards_split_the_job_with_no_overlap(tmp_path):
    src = tmp_path / "in"
    _inputs(src, 16)
    out = tmp_path / "out"
    procs = [subprocess.Popen(_cli([str(src), "-r", "-o", str(out), "-m", "fast-x2", "-q",
                                    "--shard", f"{k}/2"])) for k in range(2)]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    shards = [{r["input"] for r in _rows(out, f"report-shard-{k}-of-2.jsonl")}
              for k in range(2)]
    assert shards[0] and shards[1] and not shards[0] & shards[1]
    assert shards[0] | shards[1] == {str(f) for f in src.rglob("*.png")}
    local = tmp_path / "local"
    assert main(["upscale", str(src), "-r", "-o", str(local), "-m", "fast-x2", "-q"]) == 0
    assert _outputs(local) == _outputs(out)
    assert main(["upscale", str(src), "-r", "-o", str(out), "--shard", "2/2"]) == 2


def test_commit_never_clobbers(tmp_path):
    from upres.formats.files import _HOST, OutputExistsError, commit, sweep_stale, temp_path

    dst = tmp_path / "x.png"
    a, b = temp_path(dst), temp_path(dst)
    a.write_bytes(b"first")
    b.write_bytes(b"second")
    commit(a, dst)
    with pytest.raises(OutputExistsError):
        commit(b, dst)
    assert dst.read_bytes() == b"first" and not a.exists() and not b.exists()
    # a temporary of a process that is gone is swept; one of a live process is kept
    dead = tmp_path / f".y.png.{_HOST}-999999-ab12cd34.part"  # no such process
    dead.write_bytes(b"x")
    live = temp_path(tmp_path / "z.png")  # this process
    live.write_bytes(b"x")
    assert sweep_stale(tmp_path) == [dead] and live.exists()


def test_a_chunk_that_kills_workers_is_split_then_failed_alone():
    from collections import deque

    from upres.jobs.ray_engine import LOSSES, _after_loss

    chunk = [("a.png", ".", True), ("b.png", ".", True)]
    todo: deque = deque()
    assert _after_loss(todo, 0, chunk, RuntimeError()) == [] and list(todo) == [(1, chunk)]
    todo.clear()
    assert _after_loss(todo, 1, chunk, RuntimeError()) == []  # second loss: one at a time
    assert list(todo) == [(2, [chunk[0]]), (2, [chunk[1]])]
    rows = _after_loss(deque(), LOSSES - 1, [chunk[0]], RuntimeError())
    assert len(rows) == 1 and rows[0].status == "failed" and "died on this input" in rows[0].error


def test_job_files_hold_sizes_and_any_file_name(tmp_path):
    from upres.inference.outscale import SizeRequest
    from upres.jobs import Item, JobOptions, shard_of
    from upres.jobs.manifest import Report, job_params, open_job

    name = os.fsdecode(b"caf\xe9.png")  # a Latin-1 name, not UTF-8
    items = [Item(tmp_path / name, tmp_path)]
    assert shard_of(items[0].rel, 4) in range(4)
    opts = JobOptions(output=str(tmp_path / "o"), size=SizeRequest(size=(300, 0)))
    params = job_params("bicubic", 2, "default", 1, "torch", opts)
    job = open_job(tmp_path / "o", items, params)
    assert json.loads((job / "manifest.json").read_text())["params"]["size"] == {
        "size": [300, 0]}
    assert (job / "inputs.txt").read_bytes() == b"caf\xe9.png\n"
    (job / "report.jsonl").write_text('{"input": "x", "sta')  # cut by a full disk
    from upres.jobs import Row

    rep = Report(job / "report.jsonl")
    rep.write([Row(input="y", output=None, status="failed", error="y: bad")])
    rep.close()
    lines = (job / "report.jsonl").read_text().splitlines()
    assert len(lines) == 2 and json.loads(lines[1])["input"] == "y"


def test_sweep_takes_only_names_upres_made(tmp_path):
    from upres.formats.files import sweep_stale

    old = time.time() - 7200
    mine = [tmp_path / n for n in ("._holiday.part2.jpg", ".notes.partial.txt",
                                   ".scan.part1.tif")]
    theirs = tmp_path / ".a.png.otherhost-12-ab12cd34.part.png"
    for f in (*mine, theirs):
        f.write_bytes(b"x")
        os.utime(f, (old, old))
    assert sweep_stale(tmp_path) == [theirs]
    assert all(f.exists() for f in mine)


def test_outputs_sharing_a_name_are_found_before_any_work(tmp_path):
    from upres.jobs import JobOptions, collect_inputs, drop_clashes

    for name in ("a.png", "a.jpg", "b.png", "A.png"):
        (tmp_path / name).write_bytes(b"")
    items = collect_inputs([str(tmp_path)], False)
    kept, clashes = drop_clashes(items, JobOptions(output=str(tmp_path / "o"), format="png"), 2)
    assert [it.src.name for it in kept] == ["A.png", "a.jpg", "b.png"]
    (it, row), = clashes
    assert it.src.name == "a.png" and "also the output of" in row.error and "a.jpg" in row.error
    series = tmp_path / "dcm"
    series.mkdir()
    src = BENCH.parent / "apps" / "dicom" / "dicom_file01.dcm"
    for uid in ("1.2.840.113619.2.55.3.101", "1.2.840.113619.2.55.3.102"):
        (series / uid).write_bytes(src.read_bytes())  # UID names: each keeps its whole name
    kept, clashes = drop_clashes(collect_inputs([str(series)], False),
                                 JobOptions(output=str(tmp_path / "o")), 2)
    assert len(kept) == 2 and not clashes


def test_a_damaged_manifest_or_an_unwritable_job_folder_is_one_line(tmp_path, capsys):
    """A damaged manifest.json was reported as "a job run with other parameters (every key
    differs)"; deleting it resumes the job without redoing its outputs. An output folder where
    the job folder cannot be made (here: a file stands in its place) printed a traceback."""
    src = tmp_path / "in"
    _inputs(src, 2)
    out = tmp_path / "out"
    args = ["upscale", str(src), "-r", "-o", str(out), "-m", "bicubic", "-s", "2", "-q",
            "--shard", "0/1"]
    assert main(args) == 0
    done = _outputs(out)
    mf = out / ".upres-job" / "manifest.json"
    for damage in ("{bad", "", "[1, 2]"):
        mf.write_text(damage)
        capsys.readouterr()
        assert main(args) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"{mf}: damaged job manifest (" in err[0], err
    mf.unlink()
    assert main(args) == 0 and _outputs(out) == done
    blocked = tmp_path / "blocked"
    blocked.mkdir()
    (blocked / ".upres-job").write_text("a file")
    capsys.readouterr()
    assert main([*args[:4], str(blocked), *args[5:]]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot make or write the job folder .upres-job there" in err[0], err
