"""The monitoring report page: one self-contained file whose figures are exactly the stored report's (and so
the gauges' on /metrics), with every text from the data escaped."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from shipml.core.drift import FeatureDrift, worst
from shipml.core.monitor_report import Distribution, DriftReport, SegmentReport
from shipml.errors import ConfigError, ShipmlError
from shipml.report import render_report, write_report
from shipml.server.monitoring import report_gauges
from tests.support.report import (
    HOUR,
    NOT_LABELS,
    T0,
    XSS,
    Elements,
    drift_series,
    parse,
    psi_drift,
    sample_report,
    segment,
    synthetic_report,
)

REPORTS = {"sample": sample_report, "synthetic": synthetic_report}


@pytest.fixture(params=sorted(REPORTS), scope="module")
def rendered(request: pytest.FixtureRequest) -> tuple[DriftReport, str, Elements]:
    report = REPORTS[request.param]()
    page = render_report(report, report_id=42)
    return report, page, parse(page)


def test_page_is_small_and_requests_nothing(rendered: tuple[DriftReport, str, Elements]) -> None:
    _, page, elements = rendered
    assert len(page.encode()) < 2 * 1024 * 1024
    assert "http://" not in page and "https://" not in page
    assert all(link.startswith("#") for link in elements.links), elements.links
    assert not [t for t, a in elements.tags if t in ("img", "iframe", "link", "object", "embed", "base")]
    csp = [a["content"] for t, a in elements.tags if a.get("http-equiv") == "Content-Security-Policy"]
    assert csp and csp[0].startswith("default-src 'none'")
    # the only script is the report's data, which a browser never runs
    assert [a.get("type") for t, a in elements.tags if t == "script"] == ["application/json"]
    assert "url(" not in page and "@import" not in page


def test_embedded_json_is_the_report(rendered: tuple[DriftReport, str, Elements]) -> None:
    report, page, elements = rendered
    (data,) = elements.scripts
    assert "</" not in data and "<!--" not in data
    assert DriftReport.from_json(data) == report
    assert page.count('id="shipml-report"') == 1


def test_every_feature_appears_with_its_verdict(rendered: tuple[DriftReport, str, Elements]) -> None:
    report, _, elements = rendered
    shown = {(a["version"], a["variant"], a["feature"]) for a in elements.marked("feature_verdict")}
    for s in report.segments:
        for feature in {d.feature for d in s.drift}:
            expected = worst([d.verdict for d in s.drift if d.feature == feature and d.decisive])
            verdicts = {
                a["verdict"]
                for a in elements.marked("feature_verdict")
                if (a["version"], a["variant"], a["feature"]) == (s.version, s.variant, feature)
            }
            assert verdicts == {expected}, feature
        assert {(s.version, s.variant, d.feature) for d in s.drift} <= shown


def test_statistics_carry_the_reports_values(rendered: tuple[DriftReport, str, Elements]) -> None:
    report, page, elements = rendered
    shown = elements.marked("drift_statistic")
    for s in report.segments:
        for d in s.drift:
            same = [
                a for a in shown
                if (a["version"], a["variant"], a["feature"], a["statistic"])
                == (s.version, s.variant, d.feature, d.statistic)
            ]  # fmt: skip
            assert same, (s.version, d.feature, d.statistic)
            assert {float(a["value"]) for a in same} == {d.value}
            assert all((a["gauge"] == "shipml_drift_score") == d.decisive for a in same)
    assert f">{report.segments[0].drift[0].value:.4f}<" in page  # what a person reads: 4 decimals


def _gauge_samples(report: DriftReport) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in report_gauges(report)
        for sample in family.samples
    }


def test_figures_equal_the_gauges_of_the_same_report(rendered: tuple[DriftReport, str, Elements]) -> None:
    """Every number the page marks as a gauge is the value /metrics exports for that report, and every gauge of
    the report is on the page."""
    report, _, elements = rendered
    on_page: dict[tuple[str, frozenset[tuple[str, str]]], set[float]] = {}
    for f in elements.figures:
        if f["gauge"]:
            labels = frozenset((k, v) for k, v in f.items() if k not in NOT_LABELS | {"tag", "figure"})
            on_page.setdefault((f["gauge"], labels), set()).add(float(f["value"]))
    gauges = _gauge_samples(report)
    assert set(on_page) == set(gauges)
    for key, values in on_page.items():
        assert values == {gauges[key]}, key


def _wide_report(features: int, segments: int) -> DriftReport:
    """A big model: ``features`` features (a third categorical with 30 buckets) in ``segments`` segments."""

    def wide(version: str) -> SegmentReport:
        base = segment(version, "main", 0.0)
        drift, distributions, series = [], [], []
        for i in range(features):
            name, kind, n = f"feature_number_{i}", "categorical" if i % 3 == 0 else "numeric", 30 if i % 3 == 0 else 12
            drift += [psi_drift(name, 0.05, 100_000, "no_drift", kind)]
            drift += [FeatureDrift(name, kind, "js", 0.05, 0.13, 0.19, 100_000, "no_drift", decisive=False)]  # type: ignore[arg-type]
            labels = tuple(f"category value {j}" for j in range(n))
            distributions.append(Distribution(name, kind, labels, (1 / n,) * n, tuple(1000 + j for j in range(n))))
            series += drift_series(name, [0.05] * 24)
        return SegmentReport(
            version, "main", 100_000, "no_drift", tuple(drift), tuple(distributions), tuple(series),
            base.performance, base.performance_series, base.labels,
        )  # fmt: skip

    return DriftReport("churn", T0, T0 + 24 * HOUR, T0 + 24 * HOUR, tuple(wide(str(v)) for v in range(segments)))


def test_a_big_model_still_fits_in_two_megabytes() -> None:
    """About 21 kB per feature and segment: 40 features served by two versions stay under 2 MB."""
    page = render_report(_wide_report(40, 2))
    assert len(page.encode()) < 2 * 1024 * 1024
    elements = parse(page)
    assert len(elements.marked("feature_verdict")) == 2 * 2 * 40  # overview and card, per segment
    assert len(elements.marked("current_count")) == 2 * (26 * 12 + 14 * 30)  # every bucket drawn


def test_performance_series_and_intervals_are_drawn() -> None:
    report = synthetic_report()
    elements = parse(render_report(report))
    points = elements.marked("performance_series")
    expected = [p for s in report.segments for p in s.performance_series]
    assert len(points) == len(expected)
    assert sorted(float(a["value"]) for a in points) == sorted(p.estimate.value or 0.0 for p in expected)
    assert len([t for t, _ in elements.tags if t == "polygon"]) == 2 * 2  # an interval band per kind and segment
    bars = elements.marked("labelled_rows")
    assert sorted(int(a["value"]) for a in bars) == sorted(
        p.estimate.count for p in expected if p.estimate.kind == "realised"
    )
    holdout = {float(a["value"]) for a in elements.marked("holdout")}
    assert holdout == {0.8, 0.84}


def test_slices_without_enough_rows_are_gaps_not_zeros() -> None:
    report = synthetic_report()
    elements = parse(render_report(report))
    points = [a for a in elements.marked("series") if a["feature"] == "plan"]
    assert len(points) == 2 * (24 - 2)
    assert all(float(a["value"]) > 0 for a in points)


def test_text_from_the_data_is_escaped() -> None:
    page = render_report(synthetic_report())
    assert XSS not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert page.count("<script") == 1  # the JSON data block only
    assert "canary<b>" not in page and "canary&lt;b&gt;" in page
    assert 'churn "</script>' not in page and "churn &quot;&lt;/script&gt;" in page
    assert "premium &amp; more" in page


def test_a_report_with_no_segments_still_renders() -> None:
    report = DriftReport("churn", T0, T0 + HOUR, T0 + HOUR, ())
    page = render_report(report)
    assert "no_data" in page and "No predictions" in page
    assert DriftReport.from_json(parse(page).scripts[0]) == report


def test_a_non_finite_statistic_does_not_break_the_page() -> None:
    s = segment("1", "main", 0.0)
    broken = SegmentReport(
        s.version, s.variant, s.rows, s.verdict, (psi_drift("tenure", math.inf, 10, "drift"),), s.distributions
    )
    page = render_report(DriftReport("churn", T0, T0 + HOUR, T0 + HOUR, (broken,)))
    assert 'data-value="inf"' in page
    assert json.loads(parse(page).scripts[0])["segments"][0]["drift"][0]["value"] is None


def test_write_report_writes_the_page_atomically(tmp_path: Path) -> None:
    target = tmp_path / "report.html"
    target.write_text("old")
    assert write_report(synthetic_report(), target, report_id=3) == target
    assert target.read_text().startswith("<!DOCTYPE html>")
    assert target.stat().st_mode & 0o777 == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]  # no temporary file left beside it


@pytest.mark.parametrize("where", ["missing/report.html", "."])
def test_a_bad_output_path_is_a_clear_error(tmp_path: Path, where: str) -> None:
    target = tmp_path / where
    with pytest.raises(ConfigError) as caught:
        write_report(sample_report(), target)
    assert isinstance(caught.value, ShipmlError)
    assert str(target) in caught.value.message
    assert list(tmp_path.iterdir()) == []


def test_a_categorical_with_many_buckets_sums_its_smallest_into_one_bar() -> None:
    labels = tuple(f"city {i}" for i in range(50))
    reference = tuple(1 / 50 for _ in range(50))
    current = tuple(range(50, 0, -1))
    many = Distribution("city", "categorical", labels, reference, current)
    s = segment("1", "main", 0.0)
    one = SegmentReport(
        "1", "main", s.rows, s.verdict, (psi_drift("city", 0.3, 1275, "drift", "categorical"),), (many,)
    )
    elements = parse(render_report(DriftReport("churn", T0, T0 + HOUR, T0 + HOUR, (one,))))
    counts = elements.marked("current_count")
    assert len(counts) == 30
    assert counts[-1]["bucket"] == "… 21 more buckets"
    assert sum(int(c["value"]) for c in counts) == sum(current)  # nothing lost, only grouped
    assert [c["bucket"] for c in counts[:3]] == ["city 0", "city 1", "city 2"]  # the largest first
