"""The command line on real images: outputs, exit codes, one-line errors, JSON schemas."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from upres.cli import _is_stream, main
from upres.io import read_image

from conftest import BENCH, ROOT

SAMPLE = ROOT / "src" / "upres" / "assets" / "butterfly.png"


@pytest.fixture
def images(tmp_path):
    """A folder with two Set14 images (one gray), a corrupt PNG and a text file."""
    d = tmp_path / "in"
    d.mkdir()
    shutil.copy(BENCH / "Set14" / "bridge.png", d / "bridge.png")
    Image.open(BENCH / "Set5" / "bird.png").crop((0, 0, 64, 48)).save(d / "bird.png")
    (d / "broken.png").write_bytes((BENCH / "Set5" / "baby.png").read_bytes()[:300])
    (d / "notes.txt").write_text("not an image")
    return d


def test_upscale_folder_continues_past_bad_file(images, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["upscale", str(images), "-o", str(out), "-m", "bicubic", "-s", "2"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1
    assert len(err) == 1 and "broken.png" in err[0]
    assert sorted(p.name for p in out.iterdir()) == ["bird_x2.png", "bridge_x2.png"]
    gray = read_image(out / "bridge_x2.png")
    src = read_image(images / "bridge.png")
    assert gray.ndim == 2 and gray.shape == (src.shape[0] * 2, src.shape[1] * 2)


def test_link_to_a_missing_image_in_a_folder_is_said(images, tmp_path, capsys):
    (images / "gone.png").symlink_to(tmp_path / "nowhere" / "gone.png")
    (images / "broken.png").unlink()
    out = tmp_path / "out"
    assert main(["upscale", str(images), "-o", str(out), "-m", "bicubic", "-s", "2"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "gone.png" in err[0] and "no such file" in err[0]
    assert sorted(p.name for p in out.iterdir()) == ["bird_x2.png", "bridge_x2.png"]


def test_upscale_never_overwrites(images, tmp_path, capsys):
    out = tmp_path / "one.png"
    args = ["upscale", str(images / "bird.png"), "-o", str(out), "-m", "bicubic", "-s", "3"]
    assert main(args) == 0
    assert Image.open(out).size == (192, 144)
    before = out.read_bytes()
    assert main([*args[:-2], "-s", "2"]) == 0
    assert "exists, skipped" in capsys.readouterr().err
    assert out.read_bytes() == before
    assert main([*args[:-2], "-s", "2", "--overwrite"]) == 0
    assert Image.open(out).size == (128, 96)


def test_upscale_default_name_and_format(images, tmp_path):
    assert main(["upscale", str(images / "bird.png"), "-m", "lanczos", "-s", "2",
                 "--format", "jpg"]) == 0
    assert Image.open(images / "bird_x2.jpg").format == "JPEG"


def test_usage_errors_exit_2(images, capsys):
    assert main(["upscale", str(images / "bird.png"), "-m", "no-such-model"]) == 2
    assert "no-such-model" in capsys.readouterr().err
    assert main(["upscale", str(images / "bird.png"), "--suffix", "_{size}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--suffix" in err[0] and "{scale}" in err[0]
    with pytest.raises(SystemExit) as exc:
        main(["upscale"])
    assert exc.value.code == 2


def test_missing_input_is_one_line(tmp_path, capsys):
    rc = main(["upscale", str(tmp_path / "nope.png"), "-m", "bicubic", "-s", "2"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1 and "nope.png" in err[0] and "no such file" in err[0]


def test_eval_bicubic_json_schema(tmp_path, capsys):
    out = tmp_path / "out.json"
    assert main(["eval", "-m", "bicubic", "-d", str(BENCH / "Set5"), "-s", "4",
                 "--json", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert len(rows) == 1
    r = rows[0]
    assert set(r) == {"model", "dataset", "scale", "psnr_y", "ssim_y", "n_images", "per_image"}
    assert r["model"] == "bicubic" and r["dataset"] == "Set5" and r["scale"] == 4
    assert round(r["psnr_y"], 2) == 28.43 and round(r["ssim_y"], 4) == 0.8111
    assert r["n_images"] == 5 and {p["name"] for p in r["per_image"]} == {
        "baby", "bird", "butterfly", "head", "woman"}
    assert "28.43" in capsys.readouterr().out


def test_models_json_schema(capsys):
    assert main(["models", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    for r in rows:  # the DESIGN schema; shipped models add notes, speed, summary, denoise,
        # and the path they run by default
        assert set(r) - {"notes", "gmacs", "cpu_ms", "summary", "denoise",
                         "default_precision"} == {"name", "arch", "scale", "params", "psnr"}
    assert all(r["default_precision"] in ("fp32", "int8") for r in rows if "denoise" in r)
    names = {r["name"] for r in rows}
    assert {"bicubic", "lanczos", "x2", "x3", "x4"} <= names
    bic = [r for r in rows if r["name"] == "bicubic"]
    assert all(r["params"] == 0 for r in bic)


def test_console_script_runs_main_job(tmp_path):
    """The README's main job through the installed ``upres`` script, default model."""
    exe = shutil.which("upres") or str(ROOT / ".venv" / "bin" / "upres")
    proc = subprocess.run([exe, "upscale", str(SAMPLE), "-o", str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "butterfly_x4.png"
    assert str(out) in proc.stdout
    assert Image.open(out).size == (1024, 1024)


def test_eval_lr_dir_markdown_and_rgb(tmp_path, capsys):
    """MATLAB's own LR images (--lr-dir) give the same scores as upres's bicubic; --rgb adds
    labelled RGB figures; --markdown writes a table."""
    js, md = tmp_path / "e.json", tmp_path / "e.md"
    assert main(["eval", "-m", "bicubic", "-d", str(BENCH / "Set5"), "-s", "3",
                 "--lr-dir", str(BENCH / "Set5_LR_bicubic"), "--json", str(js),
                 "--markdown", str(md), "--rgb"]) == 0
    (r,) = json.loads(js.read_text())
    assert round(r["psnr_y"], 2) == 30.40 and r["psnr_rgb"] < r["psnr_y"] - 1.0
    assert {"psnr_rgb", "ssim_rgb"} <= set(r["per_image"][0])
    assert "| bicubic | 30.40 / 0.8689 |" in md.read_text()
    assert "not the protocol's" in capsys.readouterr().out
    assert main(["eval", "-m", "bicubic", "-d", str(BENCH / "Set5"), "-s", "3",
                 "--lr-dir", str(tmp_path)]) == 1
    assert "no LR image for baby.png" in capsys.readouterr().err


def test_ensemble_flag_in_eval_upscale_and_bench(tmp_path, capsys):
    js = tmp_path / "e.json"
    assert main(["eval", "-m", "fast-x4", "bicubic", "-d", str(BENCH / "Set5"), "-s", "4",
                 "--ensemble", "2", "--json", str(js)]) == 0
    rows = {r["model"]: r for r in json.loads(js.read_text())}
    assert set(rows) == {"fast-x4 (ensemble 2)", "bicubic"}  # interpolators are not relabelled
    out = tmp_path / "b.png"
    assert main(["upscale", str(SAMPLE), "-m", "fast-x4", "--ensemble", "4", "-o", str(out),
                 "-q"]) == 0
    assert Image.open(out).size == tuple(4 * v for v in Image.open(SAMPLE).size)
    bj = tmp_path / "b.json"
    assert main(["bench", "-m", "fast-x2", "-s", "2", "--size", "64x48", "--repeat", "1",
                 "--ensemble", "8", "--json", str(bj)]) == 0
    assert json.loads(bj.read_text())[0]["ensemble"] == 8
    assert "ensemble 8" in capsys.readouterr().out
    # an existing results file is kept unless --overwrite says otherwise, refused before timing
    before = bj.read_text()
    assert main(["bench", "-m", "fast-x2", "-s", "2", "--size", "64x48", "--json", str(bj)]) == 2
    cap = capsys.readouterr()
    assert f"--json {bj}: exists; use --overwrite" in cap.err and bj.read_text() == before
    assert "MP/s" not in cap.out  # refused before any timing
    assert not _is_stream(Path("/dev/shm/results.json")) and _is_stream(Path("/dev/stdout"))
    assert main(["bench", "-m", "fast-x2", "-s", "2", "--size", "64x48", "--repeat", "1",
                 "--json", str(bj), "--overwrite"]) == 0
    assert json.loads(bj.read_text())[0]["ensemble"] == 1
    with pytest.raises(SystemExit):
        main(["upscale", str(SAMPLE), "--ensemble", "3", "-o", str(tmp_path / "c.png")])


def test_second_run_over_a_folder_leaves_its_own_outputs_out(images, tmp_path, capsys):
    (images / "broken.png").unlink()
    args = ["upscale", str(images), "-m", "bicubic", "-s", "2"]
    assert main(args) == 0
    assert (images / "bird_x2.png").is_file() and (images / "bridge_x2.png").is_file()
    capsys.readouterr()
    assert main([*args, "--overwrite"]) == 0  # the x2 outputs are not inputs of the rerun
    assert "left out 2 file(s)" in capsys.readouterr().err
    assert not list(images.glob("*_x2_x2.png"))
    # another scale is another run: its suffix differs, so the x2 files are inputs now
    assert main(["upscale", str(images), "-m", "bicubic", "-s", "3", "-q"]) == 0
    assert (images / "bird_x2_x3.png").is_file()
    # an output folder inside the listed tree is left out of a recursive rerun
    nested = images / "big"
    assert main(["upscale", str(images / "bird.png"), "-m", "bicubic", "-s", "2",
                 "-o", str(nested / "bird_x2.png")]) == 0
    assert main(["upscale", str(images), "-r", "-o", str(nested), "-m", "bicubic", "-s", "2",
                 "-q"]) == 0
    assert not (nested / "big").exists()
    # a file named on the command line is always upscaled
    assert main(["upscale", str(images / "bird_x2.png"), "-m", "bicubic", "-s", "2", "-q"]) == 0
    assert (images / "bird_x2_x2.png").is_file()


def test_upscale_precision_auto_says_what_it_chose(images, tmp_path, capsys):
    out = tmp_path / "auto.png"
    assert main(["upscale", str(images / "bird.png"), "-o", str(out), "-m", "fast-x2",
                 "--precision", "auto"]) == 0
    err = capsys.readouterr().err
    assert "upres: auto precision: " in err and " ms in int8" in err
    from upres.inference.paths import has_native_bf16

    assert (" ms in bf16, " in err) == has_native_bf16()  # not timed where it is emulated
    assert ("bf16 not timed: this CPU has no bf16 instructions" in err) != has_native_bf16()
    assert read_image(out).shape == (96, 128, 3)
    assert main(["upscale", str(images / "bird.png"), "-o", str(tmp_path / "q.png"), "-m",
                 "fast-x2", "--precision", "auto", "--quiet"]) == 0
    assert "auto precision" not in capsys.readouterr().err


def test_precision_choices_match_the_library():
    """The CLI lists precisions without importing torch; the list must stay the library's."""
    from upres import cli
    from upres.inference.upscaler import PRECISIONS

    assert cli._PRECISIONS == PRECISIONS


@pytest.mark.parametrize("model", ["tiny-x2", "photo-x2"])
def test_overlapped_folder_equals_one_at_a_time(tmp_path, model):
    """Decoding ahead and writing behind the network changes nothing: the same rows in the
    same order, the same output bytes, a corrupt file and an existing output handled alike."""
    import upres
    from upres.jobs import JobOptions, collect_inputs, process_items

    src = tmp_path / "in"
    src.mkdir()
    for i, name in enumerate(["bird", "baby", "butterfly", "head", "woman"]):
        im = Image.open(BENCH / "Set5" / f"{name}.png").crop((0, 0, 48 + 8 * i, 40))
        im.save(src / f"{i}-{name}.png")
    Image.open(BENCH / "Set14" / "bridge.png").crop((0, 0, 50, 30)).save(src / "5-gray.jpg")
    (src / "2b-broken.png").write_bytes((BENCH / "Set5" / "baby.png").read_bytes()[:300])
    up = upres.load(model, device="cpu")
    results = {}
    for overlap in (False, True):
        out = tmp_path / f"out-{overlap}"
        out.mkdir()
        Image.new("RGB", (4, 4)).save(out / "3-head_x2.png")  # already there: never replaced
        items = collect_inputs([str(src)], recursive=False)
        rows = list(process_items(up, items, JobOptions(output=str(out)), overlap=overlap))
        results[overlap] = ([(r.input, r.status, r.width, r.height, r.bytes, r.frames,
                              r.error, Path(r.output).name if r.output else None, r.notes,
                              r.denoise) for r in rows],
                            {p.name: p.read_bytes() for p in out.iterdir()})
        statuses = [r.status for r in rows]
        assert statuses.count("failed") == 1 and statuses.count("exists") == 1
        assert statuses.count("done") == 5
        assert "broken" in next(r.error for r in rows if r.status == "failed")
        assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporaries
    assert results[True][0] == results[False][0]
    assert results[True][1] == results[False][1]
    if model == "photo-x2":  # each written image says the strength it got
        assert all(r[-1] is not None for r in results[True][0] if r[1] == "done")


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_killed_folder_run_then_rerun_gives_every_output_once(tmp_path, seed):
    """SIGKILL `upres upscale DIR -o OUT` at a random moment, run it again: every output is
    there once, byte-identical to an uninterrupted run's, and no temporary is left."""
    import os
    import random
    import signal
    import sys
    import time

    from upres.formats.files import temp_path

    src = tmp_path / "in"
    src.mkdir()
    bsd = sorted((BENCH / "BSD100").glob("*.png"))[:24]
    for p in bsd:
        Image.open(p).convert("RGB").crop((0, 0, 96, 80)).save(src / p.name)
    cmd = [sys.executable, "-m", "upres", "upscale", str(src), "-m", "x2", "-q"]
    ref, out = tmp_path / "ref", tmp_path / "out"
    subprocess.run([*cmd, "-o", str(ref)], check=True, timeout=300)
    rng = random.Random(seed)
    for _ in range(2):  # two kills, at random moments, then a full run
        proc = subprocess.Popen([*cmd, "-o", str(out)])
        deadline = time.monotonic() + 120
        while not out.exists() and time.monotonic() < deadline:  # let it start writing
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 1.5))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    # A kill that lands inside a write leaves its temporary (writes are brief here, so make one
    # the way a killed process would: named for this host and that dead process).
    out.mkdir(exist_ok=True)
    left = temp_path(out / sorted(ref.iterdir())[-1].name).name.replace(
        f"-{os.getpid()}-", f"-{proc.pid}-")
    (out / left).write_bytes(b"half a PNG")
    assert subprocess.run([*cmd, "-o", str(out)], timeout=300).returncode == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(p.name for p in ref.iterdir()) and len(names) == len(bsd)
    for n in names:
        assert (out / n).read_bytes() == (ref / n).read_bytes(), n


def test_local_run_keeps_the_users_part_files(tmp_path):
    """Outputs beside their inputs: the sweep of killed runs' temporaries takes only names
    upres made for a dead process of this host, never a user's old hidden `.x.y.part` file."""
    import os

    d = tmp_path / "photos"
    d.mkdir()
    Image.open(BENCH / "Set5" / "bird.png").crop((0, 0, 40, 32)).save(d / "bird.png")
    mine = d / ".holiday.tar.part"
    mine.write_bytes(b"a user's partial download")
    os.utime(mine, (1, 1))  # decades old
    other = d / ".bird_x2.png.otherhost-12-ab12cd34.part"
    other.write_bytes(b"another machine's temporary")
    os.utime(other, (1, 1))
    assert main(["upscale", str(d / "bird.png"), "-m", "bicubic", "-s", "2", "-q"]) == 0
    assert mine.exists() and other.exists() and (d / "bird_x2.png").exists()


@pytest.mark.parametrize("overlap", [False, True])
def test_a_fault_on_one_item_is_its_row_and_the_batch_goes_on(tmp_path, overlap):
    """A fault of upres (not a bad input) met on the third item fails that item with one line
    naming it; the items before and after it are written, and the report matches the files."""
    import upres
    from upres.jobs import JobOptions, collect_inputs, process_items

    src = tmp_path / "in"
    src.mkdir()
    for i in range(4):
        Image.open(BENCH / "Set5" / "bird.png").crop((i, 0, 40 + i, 32)).save(src / f"{i}.png")
    real = upres.load("tiny-x2", device="cpu")

    class Breaks:
        calls = 0

        def __getattr__(self, name):
            return getattr(real, name)

        def upscale(self, *a, **k):
            Breaks.calls += 1
            if Breaks.calls == 3:
                raise RuntimeError("a bug")
            return real.upscale(*a, **k)

    out = tmp_path / "out"
    rows = list(process_items(Breaks(), collect_inputs([str(src)], recursive=False),
                              JobOptions(output=str(out)), overlap=overlap))
    assert [r.status for r in rows] == ["done", "done", "failed", "done"]
    assert rows[2].error == (f"{src / '2.png'}: unexpected RuntimeError: a bug (a fault of "
                             "upres on this file; please report it)")
    assert sorted(p.name for p in out.iterdir()) == ["0_x2.png", "1_x2.png", "3_x2.png"]


def _one_err(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_the_same_input_twice_is_one_input(images, tmp_path, capsys):
    out = tmp_path / "out"
    bird = images / "bird.png"
    rc = main(["upscale", str(bird), str(bird), str(images / "." / "bird.png"), str(images),
               "-o", str(out), "-m", "bicubic", "-s", "2"])
    err = capsys.readouterr().err
    assert rc == 1 and "exists" not in err and "broken.png" in err  # only the corrupt file
    assert sorted(p.name for p in out.iterdir()) == ["bird_x2.png", "bridge_x2.png"]
    (tmp_path / "link.png").symlink_to(bird)  # a link is its own name, so its own output
    assert main(["upscale", str(bird), str(tmp_path / "link.png"), "-o", str(tmp_path / "l"),
                 "-m", "bicubic", "-s", "2"]) == 0
    assert sorted(p.name for p in (tmp_path / "l").iterdir()) == ["bird_x2.png", "link_x2.png"]


def test_output_option_checked_before_any_work(images, tmp_path, capsys):
    bird, bridge = str(images / "bird.png"), str(images / "bridge.png")
    assert main(["upscale", bird, "-o", str(tmp_path / "x.gif"), "-m", "bicubic", "-s", "2"]) == 2
    assert "cannot write .gif" in _one_err(capsys) and not (tmp_path / "x.gif").exists()
    single = tmp_path / "single.png"
    assert main(["upscale", bird, "-o", str(single), "-m", "bicubic", "-s", "2"]) == 0
    capsys.readouterr()
    for o in (single, tmp_path / "new.png"):
        assert main(["upscale", bird, bridge, "-o", str(o), "-m", "bicubic", "-s", "2"]) == 2
        assert "2 inputs need an output folder" in _one_err(capsys)
    assert not (tmp_path / "new.png").exists()
    for bad in (["--suffix", "../up"], ["--tile-overlap", "-3"], ["--suffix", "_a\nb"],
                ["--max-pixels", "-1"]):
        assert main(["upscale", bird, "-o", str(tmp_path / "o"), "-m", "bicubic", *bad]) == 2
        assert bad[0] in _one_err(capsys)
    assert not (tmp_path / "o").exists() and not (tmp_path / "up.png").exists()
    assert main(["upscale", bird, bridge, "-o", str(tmp_path / "results.v2"), "-m", "bicubic",
                 "-s", "2", "-q"]) == 0  # a dotted folder name is still a folder
    assert len(list((tmp_path / "results.v2").iterdir())) == 2
    taken = tmp_path / "t"
    (taken / "bird_x2.png").mkdir(parents=True)
    for extra in ([], ["--overwrite"]):
        assert main(["upscale", bird, "-o", str(taken), "-m", "bicubic", "-s", "2",
                     *extra]) == 1
        assert "is a folder" in _one_err(capsys)


def test_two_inputs_one_output_name_is_a_clash_not_a_skip(tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    img = Image.open(BENCH / "Set5" / "bird.png").crop((0, 0, 40, 32))
    img.save(src / "a.ppm")
    img.save(src / "a.tga")
    rc = main(["upscale", str(src), "-o", str(tmp_path / "out"), "-m", "bicubic", "-s", "2"])
    err = _one_err(capsys)
    assert rc == 1 and "is also the output of" in err and "exists" not in err
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["a_x2.png"]


def test_quiet_skips_and_format_aliases(images, tmp_path, capsys):
    bird = str(images / "bird.png")
    for fmt, name in (("bmp", "bird_x2.bmp"), ("jpeg", "bird_x2.jpg"), ("TIF", "bird_x2.tiff")):
        assert main(["upscale", bird, "-o", str(tmp_path), "-m", "bicubic", "-s", "2",
                     "--format", fmt]) == 0
        assert Image.open(tmp_path / name).size == (128, 96)
    capsys.readouterr()
    assert main(["upscale", bird, "-o", str(tmp_path), "-m", "bicubic", "-s", "2",
                 "--format", "bmp", "-q"]) == 0
    assert capsys.readouterr().err == ""


def test_denoise_without_a_photo_model_is_said(images, tmp_path, capsys):
    bird = str(images / "bird.png")
    assert main(["upscale", bird, "-o", str(tmp_path / "a"), "-m", "x2", "--denoise",
                 "0.5"]) == 2
    assert "not a photo model" in _one_err(capsys)
    assert main(["upscale", bird, "-o", str(tmp_path / "b"), "-s", "3", "--denoise", "0.3"]) == 0
    assert "--denoise ignored" in capsys.readouterr().err


def test_eval_bad_sets_and_result_paths_are_one_line(tmp_path, capsys):
    tiny = tmp_path / "tiny"
    tiny.mkdir()
    Image.new("RGB", (12, 12)).save(tiny / "t.png")
    assert main(["eval", "-m", "bicubic", "-d", str(tiny), "-s", "4"]) == 1
    err = _one_err(capsys)
    assert "t.png" in err and "too small to measure" in err
    assert main(["eval", "-m", "bicubic", "-d", str(tiny / "t.png"), "-s", "2"]) == 2
    assert "not a folder" in _one_err(capsys)
    assert main(["eval", "-m", "bicubic", "-d", str(BENCH / "Set5"), "-s", "2", "--json",
                 str(tmp_path)]) == 2
    assert "--json" in _one_err(capsys)
    target = tmp_path / "target.json"
    target.write_text("")
    (tmp_path / "link.json").symlink_to(target)  # written through, the link kept
    assert main(["eval", "-m", "bicubic", "-d", str(BENCH / "Set5"), "-s", "4", "--json",
                 str(tmp_path / "link.json")]) == 2  # an existing file is not replaced unasked
    assert "exists; use --overwrite" in _one_err(capsys) and target.read_text() == ""
    assert main(["eval", "-m", "bicubic", "-d", str(BENCH / "Set5"), "-s", "4", "--json",
                 str(tmp_path / "link.json"), "--overwrite"]) == 0
    assert (tmp_path / "link.json").is_symlink() and json.loads(target.read_text())
    capsys.readouterr()
    # a report folder that is a file, or holds a report, is refused before any work
    kept = tmp_path / "rep"
    kept.write_text("mine")
    assert main(["eval", "-m", "bicubic", "-d", str(BENCH / "Set5"), "-s", "4", "--report",
                 str(kept)]) == 2
    assert "is a file; name a folder" in _one_err(capsys) and kept.read_text() == "mine"
    (tmp_path / "rep2").mkdir()
    (tmp_path / "rep2" / "index.html").write_text("mine")
    assert main(["eval", "-m", "bicubic", "-d", str(BENCH / "Set5"), "-s", "4", "--report",
                 str(tmp_path / "rep2")]) == 2
    assert "holds a report" in _one_err(capsys)
    assert (tmp_path / "rep2" / "index.html").read_text() == "mine"
    for extra, says in ((["--lr-dir", str(tmp_path / "none")], "none: no such folder"),
                        (["--lr-dir", str(BENCH / "Set5"), "--no-reference"],
                         "with --no-reference the -d folders are the inputs")):
        assert main(["eval", "-m", "bicubic", "-d", str(BENCH / "Set5"), "-s", "2",
                     *extra]) == 2
        assert says in _one_err(capsys)
    # two datasets with one folder name: their results and crops would be mixed up
    for side in ("a", "b"):
        (tmp_path / side / "set").mkdir(parents=True)
        Image.new("RGB", (48, 48)).save(tmp_path / side / "set" / "x.png")
    assert main(["eval", "-m", "bicubic", "-d", str(tmp_path / "a" / "set"),
                 str(tmp_path / "b" / "set"), "-s", "2"]) == 2
    assert "two datasets named 'set'" in _one_err(capsys)


def test_video_refuses_a_still_image(tmp_path, capsys):
    assert main(["video", str(SAMPLE), "-o", str(tmp_path / "v.mp4"), "-m", "bicubic",
                 "-s", "2"]) == 1
    assert "a still image" in _one_err(capsys)
    assert list(tmp_path.iterdir()) == []
