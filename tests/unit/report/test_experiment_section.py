"""The monitoring report's experiment section, built from a real SQLite prediction store: its figures are the
experiment report's numbers, the band at the last cut is the window's anytime-valid interval and is drawn on the
right side of 0, a mismatched split is flagged, an experiment without data still makes a page, and a config
without an experiment makes the page of today (the registry is a stand-in that only resolves versions)."""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from shipml.adapters.store import PredictionStore
from shipml.config import settings_from_mapping
from shipml.core.experiment_history import ExperimentHistory
from shipml.core.experiment_report import ExperimentReport
from shipml.core.monitor_report import DriftReport
from shipml.core.window import Window
from shipml.pipelines.experiment_history import (
    cuts,
    experiment_history,
    has_experiment,
    monitored_experiment,
)
from shipml.pipelines.experiments import ExperimentJob
from shipml.pipelines.workspace import Workspace
from shipml.report import render_report, write_report
from shipml.report.experiment_section import CHECKS
from tests.support.report import (
    HOUR,
    Experiment,
    Registry,
    experiment_settings,
    log,
    make_experiment,
    parse,
    spread,
    synthetic_report,
)


@pytest.fixture(scope="module")
def experiment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Experiment]:
    made = make_experiment(tmp_path_factory.mktemp("experiment"))
    yield made
    made.store.close()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[PredictionStore]:
    s = PredictionStore(f"sqlite:///{tmp_path}/p.db")
    yield s
    s.close()


def _one(marked: list[dict[str, str]], **where: str) -> dict[str, str]:
    found = [f for f in marked if all(f.get(k) == v for k, v in where.items())]
    assert len(found) == 1, (where, found)
    return found[0]


def _same(shown: str, expected: float) -> bool:
    value = float(shown)
    return (math.isnan(value) and math.isnan(expected)) or value == expected


def test_cuts_are_cumulative_and_end_at_the_window_end() -> None:
    assert cuts(Window(0.0, 12 * HOUR)) == [i * HOUR for i in range(1, 13)]
    assert cuts(Window(100.0, 400.0)) == [160.0, 220.0, 280.0, 340.0, 400.0]  # a minute apart at least
    assert cuts(Window(0.0, 30.0)) == [30.0]


def test_the_history_has_a_report_per_cut_and_the_last_is_the_windows(experiment: Experiment) -> None:
    points = experiment.history.points
    assert [p.until for p in points] == cuts(experiment.window)
    assert {p.since for p in points} == {experiment.window.since}
    whole = experiment.job().report("churn", experiment.window)
    last = experiment.history.report
    assert [v.requests for v in last.variants] == [v.requests for v in whole.variants] == [410, 400, 100]
    assert last.challengers[0].primary == whole.challengers[0].primary
    requests = [p.variant("challenger").requests for p in points]
    assert requests == sorted(requests) and requests[0] < requests[-1]  # cumulative: it only grows


def test_the_sections_figures_are_the_reports_numbers(experiment: Experiment) -> None:
    r = experiment.history.report
    elements = parse(experiment.page())
    (verdict,) = elements.marked("experiment_verdict")
    assert verdict["verdict"] == r.verdict == "ship"
    assert int(_one(elements.figures, figure="experiment_cuts")["value"]) == 12
    for v in r.variants:
        for name, expected in (
            ("variant_requests", v.requests), ("variant_errors", v.errors), ("variant_units", v.units),
            ("variant_labelled", v.labelled), ("variant_matured", v.matured), ("variant_share", v.share),
            ("variant_metric", v.metric.mean), ("variant_metric_lower", v.metric.lower),
            ("variant_metric_upper", v.metric.upper),
        ):  # fmt: skip
            assert _same(_one(elements.marked(name), variant=v.name)["value"], expected), (v.name, name)
    assert r.variant("champion").errors == 10
    (c,) = r.challengers
    d, lift = c.primary.difference, c.primary.relative_lift
    for name, expected in (
        ("difference", d.estimate), ("difference_lower", d.lower), ("difference_upper", d.upper),
        ("lift", lift.estimate), ("lift_lower", lift.lower), ("lift_upper", lift.upper),
    ):  # fmt: skip
        assert float(_one(elements.marked(name), variant="challenger")["value"]) == expected, name
    assert "error_rate" in {g.name for g in c.guardrails}
    for g in c.guardrails:
        row = {"variant": "challenger", "guardrail": g.name}
        assert _one(elements.marked("guardrail_status"), **row)["status"] == g.status
        if g.name in CHECKS:  # monitoring's yes/no: a status, no interval
            assert not [f for f in elements.marked("guardrail_lower") if f["guardrail"] == g.name]
            continue
        assert float(_one(elements.marked("guardrail_lower"), **row)["value"]) == g.lower
        assert float(_one(elements.marked("guardrail_upper"), **row)["value"]) == g.upper
        assert float(_one(elements.marked("guardrail_margin"), **row)["value"]) == g.margin
    assert c.sample_size is not None
    assert int(_one(elements.marked("sample_size_remaining"))["value"]) == c.sample_size.remaining
    (shadow,) = r.shadows
    assert int(_one(elements.marked("shadow_joined"), variant="candidate")["value"]) == shadow.joined == 100
    assert float(_one(elements.marked("shadow_agreement"))["value"]) == shadow.agreement == 1.0
    srm = r.srm
    for name, n, share in zip(srm.variants, srm.observed, srm.expected_share, strict=True):
        assert int(_one(elements.marked("srm_observed"), variant=name)["value"]) == n
        assert float(_one(elements.marked("srm_expected_share"), variant=name)["value"]) == share
    assert float(_one(elements.marked("srm_p_value"))["value"]) == srm.p_value
    assert _one(elements.marked("srm_mismatch"))["mismatch"] == "false"


def test_the_band_at_the_last_cut_is_the_windows_interval(experiment: Experiment) -> None:
    """The marks are the history's intervals cut by cut, and the last is the interval `ab report` gives for the
    whole window."""
    whole = experiment.job().report("churn", experiment.window).challengers[0]
    elements = parse(experiment.page())
    band = [f for f in elements.marked("difference_interval") if f["variant"] == "challenger"]
    drawn = [(p.until, p.challengers[0].primary.difference) for p in experiment.history.points]
    assert [float(f["until"]) for f in band] == [t for t, d in drawn if math.isfinite(d.estimate)]
    for f, (_, d) in zip(band, [x for x in drawn if math.isfinite(x[1].estimate)], strict=True):
        assert (float(f["lower"]), float(f["value"]), float(f["upper"])) == (d.lower, d.estimate, d.upper)
    last = band[-1]
    assert float(last["until"]) == experiment.window.until
    difference = whole.primary.difference
    assert (float(last["lower"]), float(last["value"]), float(last["upper"])) == (
        difference.lower, difference.estimate, difference.upper,
    )  # fmt: skip
    for g in whole.guardrails:
        marks = [f for f in elements.marked("guardrail_interval") if f["guardrail"] == g.name]
        if g.name in CHECKS:
            assert marks == []  # a yes/no verdict of monitoring, not an interval: no chart
        else:
            assert (float(marks[-1]["lower"]), float(marks[-1]["upper"])) == (g.lower, g.upper), g.name


def _charts(page: str) -> list[str]:
    section = page[page.index('<section id="experiment"') :]
    return re.findall(r"<svg .*?</svg>", section[: section.index("</section>")], flags=re.S)


def test_the_band_is_drawn_on_the_side_of_zero_it_is_on(experiment: Experiment) -> None:
    """In pixels: the zero line crosses a cut's bar exactly when its interval holds 0, and the points narrow
    towards the end (the sequential boundary tightens as labels come in)."""
    charts = [parse(c) for c in _charts(experiment.page())]
    intervals = [g for g in experiment.history.report.challengers[0].guardrails if g.name not in CHECKS]
    assert len(charts) == 1 + len(intervals) + 1  # the difference, each guardrail's, the sample ratio bars
    crossed = []
    for chart in charts[:-1]:
        (zero,) = [float(a["y1"]) for t, a in chart.tags if t == "line" and a.get("class") == "zero"]
        for t, a in chart.tags:
            if t == "line" and "data-lower" in a:
                low, high = sorted((float(a["y1"]), float(a["y2"])))
                holds_zero = float(a["data-lower"]) <= 0.0 <= float(a["data-upper"])
                assert (low <= zero <= high) == holds_zero, a
                assert float(a["y1"]) >= float(a["y2"])  # the lower bound is drawn below the upper
                crossed.append(holds_zero)
    assert True in crossed and False in crossed  # both cases were checked
    widths = [float(f["upper"]) - float(f["lower"]) for f in parse(experiment.page()).marked("difference_interval")]
    assert widths[-1] < widths[0] / 2


def test_the_decision_is_marked_where_the_verdict_first_became_ship(experiment: Experiment) -> None:
    points = experiment.history.points
    verdicts = [p.challengers[0].decision.verdict for p in points]
    assert verdicts[0] == "continue" and verdicts[-1] == "ship"
    first = next(p for p in points if p.challengers[0].decision.verdict == "ship")
    assert first.challengers[0].primary.difference.lower > 0  # the band had left 0
    elements = parse(experiment.page())
    assert float(_one(elements.marked("decided_at"))["value"]) == first.until
    series = elements.marked("difference_series")
    assert [float(f["value"]) for f in series] == [p.challengers[0].primary.difference.estimate for p in points]


def test_the_history_is_embedded_as_json(experiment: Experiment) -> None:
    page = experiment.page()
    elements = parse(page)
    scripts = [a for t, a in elements.tags if t == "script"]
    assert [(a["type"], a["id"]) for a in scripts] == [
        ("application/json", "shipml-report"), ("application/json", "shipml-experiment"),
    ]  # fmt: skip
    data = elements.scripts[1]
    assert "</" not in data
    again = ExperimentHistory.from_json(data)
    assert [p.to_json() for p in again.points] == [p.to_json() for p in experiment.history.points]
    assert "http://" not in page and "https://" not in page
    assert all(link.startswith("#") for link in elements.links)


def test_a_sample_ratio_mismatch_is_flagged(store: PredictionStore) -> None:
    now = time.time()
    window = Window(now - 2 * HOUR, now)
    rng = np.random.default_rng(3)
    log(store, "champion", spread(window, 300, rng), [None] * 300)
    log(store, "challenger", spread(window, 150, rng), [None] * 150)
    history = experiment_history(ExperimentJob(experiment_settings(), store, Registry()), "churn", window)  # type: ignore[arg-type]
    r = history.report
    assert r.srm.mismatch and r.verdict == "unhealthy"
    page = render_report(DriftReport("churn", window.since, window.until, now, ()), experiment=history)
    elements = parse(page)
    flag = _one(elements.marked("srm_mismatch"))
    assert (flag["mismatch"], flag["value"]) == ("true", "1")
    assert _one(elements.marked("experiment_verdict"))["verdict"] == "unhealthy"
    assert [int(f["value"]) for f in elements.marked("srm_observed")] == [300, 150]
    assert [float(f["value"]) for f in elements.marked("srm_expected")] == [225.0, 225.0]
    assert "sample ratio mismatch" in page  # the reason is written out


def test_an_experiment_without_data_still_makes_a_page(store: PredictionStore, tmp_path: Path) -> None:
    now = time.time()
    window = Window(now - HOUR, now)
    history = experiment_history(ExperimentJob(experiment_settings(), store, Registry()), "churn", window)  # type: ignore[arg-type]
    assert history.report.verdict == "no_data" and len(history.points) == 12
    drift = DriftReport("churn", window.since, window.until, now, ())
    page = write_report(drift, tmp_path / "report.html", experiment=history).read_text()
    elements = parse(page)
    assert _one(elements.marked("experiment_verdict"))["verdict"] == "no_data"
    assert elements.marked("experiment_empty") and "No predictions of the experiment" in page
    assert "No interval at any cut yet" in page
    assert not elements.marked("difference_interval")
    assert [int(f["value"]) for f in elements.marked("variant_requests")] == [0, 0]


def test_without_an_experiment_the_page_is_as_before(store: PredictionStore) -> None:
    now = time.time()
    window = Window(now - HOUR, now)
    single = settings_from_mapping({"serve": {"model": "churn@production"}})
    assert not has_experiment(single)
    assert monitored_experiment(Workspace(single, store, Registry()), "churn", window) is None  # type: ignore[arg-type]
    # an experiment of other models: nothing to show in churn's report
    assert monitored_experiment(Workspace(experiment_settings(), store, Registry()), "fraud", window) is None  # type: ignore[arg-type]
    report = synthetic_report()
    page = render_report(report, report_id=3, experiment=None)
    assert page == render_report(report, report_id=3)
    assert 'id="experiment"' not in page and "shipml-experiment" not in page
    assert not parse(page).marked("experiment_verdict")


def test_the_section_comes_with_the_drift_report_of_the_same_window(experiment: Experiment, tmp_path: Path) -> None:
    """The page keeps every drift figure and adds the section, linked from the header."""
    ws = Workspace(experiment.settings, experiment.store, Registry())  # type: ignore[arg-type]
    found = monitored_experiment(ws, "churn", experiment.window)
    assert found is not None and found.report.verdict == experiment.history.report.verdict
    report = synthetic_report()
    page = render_report(report, experiment=experiment.history)
    plain = parse(render_report(report))
    elements = parse(page)
    assert [f for f in elements.figures if f["figure"] == "drift_statistic"] == plain.marked("drift_statistic")
    assert page.index('id="experiment"') < page.index('id="segment-0"')
    assert '<a href="#experiment">' in page
    assert ExperimentReport.from_json(json.dumps(json.loads(elements.scripts[1])["points"][-1])).verdict == "ship"
