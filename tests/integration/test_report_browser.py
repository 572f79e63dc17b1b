"""The monitoring report page in a real browser (Debian's `chromium`, headless): it draws something a person can
read, and the browser logs nothing (the page runs no script, so any console line is a blocked request, a CSP
violation or an error). Name resolution is switched off for the browser, so a page that needed the network
could not hide it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from shipml.pipelines.report import COLOURS, write_report
from tests.unit.pipelines.test_report import sample_report, synthetic_report

pytestmark = pytest.mark.integration

SIZE = (1280, 2000)
BACKGROUND = {(0xF6, 0xF7, 0xF9), (0xFF, 0xFF, 0xFF)}  # the page and the cards


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        reason = "chromium is not installed (Debian: apt-get install chromium); the report's browser test needs it"
        print(reason)
        pytest.skip(reason)
    return found


def _open(page: Path, tmp: Path) -> tuple[str, list[str], Path]:
    """The page's DOM after loading, the browser's console lines, and a screenshot."""
    png = tmp / "screenshot.png"
    command = [
        _chromium(), "--headless=new", "--disable-gpu", "--no-sandbox", "--no-first-run", "--disable-extensions",
        f"--user-data-dir={tmp / 'profile'}", "--enable-logging=stderr", "--v=0",
        "--host-resolver-rules=MAP * ~NOTFOUND", f"--window-size={SIZE[0]},{SIZE[1]}",
        f"--screenshot={png}", "--dump-dom", page.resolve().as_uri(),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=90, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]
    return done.stdout, console, png


def _colours(png: Path) -> dict[tuple[int, int, int], int]:
    image_module = pytest.importorskip("PIL.Image", reason="Pillow (installed with matplotlib) decodes the screenshot")
    with image_module.open(png) as image:
        assert image.size == SIZE
        rgb = image.convert("RGB")
        return {colour: n for n, colour in rgb.getcolors(SIZE[0] * SIZE[1])}


def _rgb(hex_colour: str) -> tuple[int, int, int]:
    return int(hex_colour[1:3], 16), int(hex_colour[3:5], 16), int(hex_colour[5:7], 16)


def test_the_report_renders_in_chromium_without_console_messages(tmp_path: Path) -> None:
    report = synthetic_report()
    page = write_report(report, tmp_path / "report.html", report_id=1)
    dom, console, png = _open(page, tmp_path)
    assert console == []
    charts = sum(len(s.distributions) + len({p.feature for p in s.series}) + 1 for s in report.segments)
    assert dom.count("<svg") == charts  # every distribution, every series, one accuracy chart per segment
    assert 'id="shipml-report"' in dom and "Monitoring report:" in dom
    assert "<script>alert(1)</script>" not in dom  # the XSS-shaped category stayed text in the live DOM

    colours = _colours(png)
    drawn = sum(n for c, n in colours.items() if c not in BACKGROUND)
    assert drawn > 0.05 * SIZE[0] * SIZE[1], "the screenshot is (almost) blank"
    assert len(colours) > 50  # text, bars, lines: not a flat page
    assert colours.get(_rgb(COLOURS["drift"]), 0) > 200  # the drift badges are drawn in their colour
    assert colours.get(_rgb("#1565c0"), 0) > 200  # the current share's bars


def test_the_stored_sample_report_renders_too(tmp_path: Path) -> None:
    page = write_report(sample_report(), tmp_path / "report.html")
    dom, console, png = _open(page, tmp_path)
    assert console == []
    assert dom.count("<svg") > 10
    drawn = sum(n for c, n in _colours(png).items() if c not in BACKGROUND)
    assert drawn > 0.05 * SIZE[0] * SIZE[1], "the screenshot is (almost) blank"


def test_the_console_check_sees_errors_and_blocked_requests(tmp_path: Path) -> None:
    """The check above can fail: a page with a script error and an outside image is caught by it."""
    page = tmp_path / "bad.html"
    page.write_text(
        '<!DOCTYPE html><meta http-equiv="Content-Security-Policy" content="img-src \'none\'">'
        '<p>x</p><img src="https://example.com/x.png"><script>throw new Error("boom")</script>'
    )
    _, console, _ = _open(page, tmp_path)
    assert any("example.com" in line for line in console), console
    assert any("Uncaught Error: boom" in line for line in console), console
