"""The monitoring report page in a real browser (Debian's `chromium`, headless): it draws something a person can
read, and the browser logs nothing (the page runs no script, so any console line is a blocked request, a CSP
violation or an error). Name resolution is switched off for the browser, so a page that needed the network
could not hide it. With an experiment too: the page `shipml monitor report` writes for a config that runs one."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from shipml.adapters.store import PredictionStore
from shipml.core.window import Window
from shipml.report import write_report
from shipml.report.experiment_section import BAND, CHECKS
from shipml.report.markup import COLOURS
from tests.support.browser import BACKGROUND, SIZE, colours, open_page
from tests.support.cli import shipml
from tests.support.project import train_project
from tests.support.report import log, make_experiment, parse, sample_report, spread, synthetic_report

pytestmark = pytest.mark.integration


def _rgb(hex_colour: str) -> tuple[int, int, int]:
    return int(hex_colour[1:3], 16), int(hex_colour[3:5], 16), int(hex_colour[5:7], 16)


def test_the_report_renders_in_chromium_without_console_messages(tmp_path: Path) -> None:
    report = synthetic_report()
    page = write_report(report, tmp_path / "report.html", report_id=1)
    dom, console, png = open_page(page, tmp_path)
    assert console == []
    charts = sum(len(s.distributions) + len({p.feature for p in s.series}) + 1 for s in report.segments)
    assert dom.count("<svg") == charts  # every distribution, every series, one accuracy chart per segment
    assert 'id="shipml-report"' in dom and "Monitoring report:" in dom
    assert "<script>alert(1)</script>" not in dom  # the XSS-shaped category stayed text in the live DOM

    drawn_colours = colours(png)
    drawn = sum(n for c, n in drawn_colours.items() if c not in BACKGROUND)
    assert drawn > 0.05 * SIZE[0] * SIZE[1], "the screenshot is (almost) blank"
    assert len(drawn_colours) > 50  # text, bars, lines: not a flat page
    assert drawn_colours.get(_rgb(COLOURS["drift"]), 0) > 200  # the drift badges are drawn in their colour
    assert drawn_colours.get(_rgb("#1565c0"), 0) > 200  # the current share's bars


def test_the_stored_sample_report_renders_too(tmp_path: Path) -> None:
    page = write_report(sample_report(), tmp_path / "report.html")
    dom, console, png = open_page(page, tmp_path)
    assert console == []
    assert dom.count("<svg") > 10
    drawn = sum(n for c, n in colours(png).items() if c not in BACKGROUND)
    assert drawn > 0.05 * SIZE[0] * SIZE[1], "the screenshot is (almost) blank"


def test_the_report_with_an_experiment_renders_in_chromium(tmp_path: Path) -> None:
    """The page with the experiment section (first, so in the screenshot): no console line, every chart drawn,
    and the interval band visible in its colour."""
    experiment = make_experiment(tmp_path)
    try:
        history = experiment.history
        page = write_report(synthetic_report(), tmp_path / "report.html", report_id=1, experiment=history)
    finally:
        experiment.store.close()
    dom, console, png = open_page(page, tmp_path)
    assert console == []
    assert 'id="experiment"' in dom and "Experiment: churn" in dom and 'id="shipml-experiment"' in dom
    report = synthetic_report()
    drift_charts = sum(len(s.distributions) + len({p.feature for p in s.series}) + 1 for s in report.segments)
    (challenger,) = history.report.challengers
    intervals = [g for g in challenger.guardrails if g.name not in CHECKS]
    assert dom.count("<svg") == drift_charts + 1 + len(intervals) + 1  # the difference, the guardrails, the split

    drawn_colours = colours(png)
    drawn = sum(n for c, n in drawn_colours.items() if c not in BACKGROUND)
    assert drawn > 0.05 * SIZE[0] * SIZE[1], "the screenshot is (almost) blank"
    assert drawn_colours.get(_rgb(COLOURS["no_drift"]), 0) > 200  # the ship badges and the points where it shipped
    band = tuple(round(255 - 0.13 * (255 - c)) for c in _rgb(BAND))  # the band's fill over the white card
    near = sum(n for c, n in drawn_colours.items() if max(abs(a - b) for a, b in zip(c, band, strict=True)) <= 3)
    assert near > 2000, "the interval band is not drawn"


EXPERIMENT = """
serve:
  variants:
    - {name: champion, model: churn/1, weight: 0.5}
    - {name: challenger, model: churn/1, weight: 0.5}
"""


def test_monitor_report_draws_the_experiment_that_ab_report_judges(tmp_path: Path) -> None:
    """`shipml monitor report` of a config with an experiment: the section's last interval is the one
    `shipml ab report` gives for the same window, a model the experiment does not serve gets no section (and a
    note), and the page opens in Chromium without a console line."""
    root = tmp_path / "project"
    root.mkdir()
    train_project(root)
    (root / "shipml.yaml").write_text(EXPERIMENT)
    until = time.time() - 3600
    window = Window(until - 12 * 3600, until)
    rng = np.random.default_rng(5)
    store = PredictionStore(f"sqlite:///{root}/.shipml/predictions.db")
    try:
        for variant, accuracy in (("champion", 0.7), ("challenger", 0.9)):
            right = (rng.random(300) < accuracy).tolist()
            log(store, variant, spread(window, 300, rng), right, keys=[f"{variant}-{i}" for i in range(300)])
    finally:
        store.close()
    span = ("--since", repr(window.since), "--until", repr(window.until))
    done = shipml(root, "monitor", "report", *span, "-o", "page.html")
    assert done.returncode == 0, done.stderr
    judged = shipml(root, "ab", "report", *span, "--json")
    assert judged.returncode != 2, judged.stderr
    expected = json.loads(judged.stdout)
    assert f"experiment {expected['verdict']}" in done.stdout

    page = (root / "page.html").read_text()
    elements = parse(page)
    (verdict,) = elements.marked("experiment_verdict")
    assert verdict["verdict"] == expected["verdict"]
    last = elements.marked("difference_interval")[-1]
    difference = expected["challengers"][0]["primary"]["difference"]
    assert float(last["until"]) == window.until
    assert (float(last["lower"]), float(last["value"]), float(last["upper"])) == (
        difference["lower"], difference["estimate"], difference["upper"],
    )  # fmt: skip
    assert [int(f["value"]) for f in elements.marked("variant_requests")] == [300, 300]

    other = shipml(root, "monitor", "report", *span, "-m", "fraud", "-o", "other.html")
    assert other.returncode == 0, other.stderr
    assert "no experiment section" in other.stderr
    assert 'id="experiment"' not in (root / "other.html").read_text()

    dom, console, png = open_page(root / "page.html", tmp_path)
    assert console == []
    assert "Experiment: churn" in dom
    drawn = sum(n for c, n in colours(png).items() if c not in BACKGROUND)
    assert drawn > 0.05 * SIZE[0] * SIZE[1], "the screenshot is (almost) blank"


def test_the_console_check_sees_errors_and_blocked_requests(tmp_path: Path) -> None:
    """The check above can fail: a page with a script error and an outside image is caught by it."""
    page = tmp_path / "bad.html"
    page.write_text(
        '<!DOCTYPE html><meta http-equiv="Content-Security-Policy" content="img-src \'none\'">'
        '<p>x</p><img src="https://example.com/x.png"><script>throw new Error("boom")</script>'
    )
    _, console, _ = open_page(page, tmp_path)
    assert any("example.com" in line for line in console), console
    assert any("Uncaught Error: boom" in line for line in console), console
