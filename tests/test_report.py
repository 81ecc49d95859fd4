"""The HTML report opens in a real browser (Debian's chromium, driven by Playwright): it loads
offline, every image appears, zoom works, and the console stays clean."""

from __future__ import annotations

import numpy as np
import pytest

from upres.cli import main
from upres.report import disagreement_window

from conftest import BENCH


def test_disagreement_window_finds_the_difference():
    hr = np.zeros((60, 80, 3), np.uint8)
    a, b = hr.copy(), hr.copy()
    b[30:40, 50:60] = 200
    assert disagreement_window([a, b], hr, 10, border=4) == (30, 50)
    assert disagreement_window([b], hr, 10) == (30, 50)


def test_report_in_a_real_browser(tmp_path, browser, capsys):
    out = tmp_path / "report"
    assert main(["eval", "-m", "bicubic", "lanczos", "-d", str(BENCH / "Set5"), "-s", "4",
                 "--report", str(out)]) == 0
    index = out / "index.html"
    assert index.is_file() and len(list((out / "img").glob("*.png"))) == 5 * 3
    page = browser.new_page(viewport={"width": 1000, "height": 800})
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(index.as_uri())
    page.wait_for_load_state("load")
    assert "28.43 / 0.8111" in page.inner_text("table")
    widths = page.eval_on_selector_all("img.crop", "els => els.map(e => e.naturalWidth)")
    assert len(widths) == 15 and all(w > 0 for w in widths)
    first = page.locator("img.crop").first
    before = first.bounding_box()["width"]
    first.click()
    assert first.bounding_box()["width"] == pytest.approx(2 * before, abs=1)
    page.screenshot(path=str(tmp_path / "report.png"), full_page=False)
    assert errors == []
