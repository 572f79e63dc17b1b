"""A page in a real browser (Debian's `chromium`, headless): its DOM after loading, its console lines and a
screenshot, and the screenshot's colours. Name resolution is switched off for the browser, so a page that needed
the network could not hide it. Skips, saying why, where chromium is not installed."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

SIZE = (1280, 2000)
BACKGROUND = {(0xF6, 0xF7, 0xF9), (0xFF, 0xFF, 0xFF)}  # the report page and its cards


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        reason = "chromium is not installed (Debian: apt-get install chromium); the report's browser test needs it"
        print(reason)
        pytest.skip(reason)
    return found


def open_page(page: Path, tmp: Path) -> tuple[str, list[str], Path]:
    """The page's DOM after loading, the browser's console lines, and a screenshot."""
    png = tmp / "screenshot.png"
    command = [
        chromium(), "--headless=new", "--disable-gpu", "--no-sandbox", "--no-first-run", "--disable-extensions",
        f"--user-data-dir={tmp / 'profile'}", "--enable-logging=stderr", "--v=0",
        "--host-resolver-rules=MAP * ~NOTFOUND", f"--window-size={SIZE[0]},{SIZE[1]}",
        f"--screenshot={png}", "--dump-dom", page.resolve().as_uri(),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=90, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]
    return done.stdout, console, png


def colours(png: Path) -> dict[tuple[int, int, int], int]:
    """Pixels of the screenshot by colour."""
    image_module = pytest.importorskip("PIL.Image", reason="Pillow (installed with matplotlib) decodes the screenshot")
    with image_module.open(png) as image:
        assert image.size == SIZE
        rgb = image.convert("RGB")
        return {colour: n for n, colour in rgb.getcolors(SIZE[0] * SIZE[1])}
