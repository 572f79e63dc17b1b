"""Issue 11, item 7: the experiment as Prometheus gauges, read at scrape time from the newest stored report (a real
SQLite prediction store, the report made by the real job), the routing weights of the deployment serving now, and
the service's schedule that stores the report. The registry is the job tests' stand-in that only resolves."""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import sqlalchemy as sa
import yaml
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from shipml.adapters.store import PredictionStore, tables
from shipml.config import Settings
from shipml.core.experiment_report import ExperimentReport
from shipml.core.routing import Split
from shipml.core.window import Window
from shipml.pipelines.experiments import ExperimentJob
from shipml.server.metrics import ServerMetrics
from shipml.server.model_manager import Deployment, Variant
from shipml.server.monitoring import ExperimentCollector, ScheduledMonitor
from tests.unit.pipelines.test_experiments_job import Registry, labelled, log, settings

RULES = Path(__file__).parents[3] / "deploy" / "prometheus" / "rules.yml"
Samples = dict[str, dict[frozenset[tuple[str, str]], float]]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[PredictionStore]:
    s = PredictionStore(f"sqlite:///{tmp_path}/p.db")
    yield s
    s.close()


def scrape(collector: ExperimentCollector) -> Samples:
    """What /metrics says of the experiment after the refresher's next read of the store, parsed back: per metric
    name, each series' labels and value."""
    collector.refresh()
    metrics = ServerMetrics()
    metrics.collectors = [collector]
    found: Samples = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for sample in family.samples:
            if sample.name.startswith(("shipml_experiment_", "shipml_variant_")):
                found.setdefault(sample.name, {})[frozenset(sample.labels.items())] = sample.value
    return found


def series(samples: Samples, name: str, *keys: str) -> dict[tuple[str, ...], float]:
    """The series of ``name`` by the values of the labels ``keys``."""
    return {tuple(dict(labels)[k] for k in keys): value for labels, value in samples.get(name, {}).items()}


def experiment(store: PredictionStore, s: Settings) -> ExperimentReport:
    now = time.time()
    return ExperimentJob(s, store, Registry()).report("churn", Window(now - 3600, now + 1))  # type: ignore[arg-type]


def save(store: PredictionStore, report: ExperimentReport) -> int:
    return store.experiments.save(report)


def variant(name: str, model: str = "churn", version: str = "3") -> Variant:
    """A primary variant as the deployment holds it (the gauge reads only its names)."""
    bundle: Any = SimpleNamespace(info=SimpleNamespace(name=model, version=version))
    return Variant(bundle, validator=None, variant=name)  # type: ignore[arg-type]


def test_the_gauges_are_the_numbers_of_the_stored_report(store: PredictionStore) -> None:
    keys = [f"customer-{i}" for i in range(400)]
    log(store, "champion", labelled(400, 0.9), keys=keys)
    log(store, "challenger", labelled(400, 0.6), keys=[f"other-{i}" for i in range(400)])
    log(store, "challenger", [("1", None)] * 20, status="invalid")
    log(store, "candidate", labelled(400, 0.8), keys=keys, role="shadow")
    s = settings(serve={"shadow": [{"name": "candidate", "model": "churn/3", "fraction": 1.0}]})
    report = experiment(store, s)
    save(store, report)
    assert report.verdict == "rollback"  # the challenger is clearly worse
    assert report.shadows and not report.srm.mismatch

    got = scrape(ExperimentCollector(store, "churn", lambda: None))

    assert series(got, "shipml_experiment_verdict", "model", "verdict") == {
        ("churn", "ship"): 0.0,
        ("churn", "rollback"): 1.0,
        ("churn", "continue"): 0.0,
        ("churn", "unhealthy"): 0.0,
        ("churn", "no_data"): 0.0,
    }
    (challenger,) = report.challengers
    (shadow,) = report.shadows
    d, sd = challenger.primary.difference, shadow.comparison.difference
    assert challenger.primary.metric == "accuracy" and "error_rate" in {g.name for g in challenger.guardrails}
    guardrails = {
        ("churn", "challenger", g.name, bound): value
        for g in challenger.guardrails
        for bound, value in (("lower", g.lower), ("upper", g.upper))
        if value == value  # a NaN bound is left out
    }
    assert series(got, "shipml_experiment_difference", "model", "variant", "metric", "bound") == {
        ("churn", "challenger", "accuracy", "estimate"): d.estimate,
        ("churn", "challenger", "accuracy", "lower"): d.lower,
        ("churn", "challenger", "accuracy", "upper"): d.upper,
        **guardrails,
        ("churn", "candidate", "accuracy", "estimate"): sd.estimate,
        ("churn", "candidate", "accuracy", "lower"): sd.lower,
        ("churn", "candidate", "accuracy", "upper"): sd.upper,
    }
    assert d.estimate == pytest.approx(0.6 - 0.9) and d.upper < 0
    assert series(got, "shipml_experiment_srm_p_value", "model") == {("churn",): report.srm.p_value}
    assert series(got, "shipml_experiment_units", "model", "variant") == {
        ("churn", "champion"): 400.0,
        ("churn", "challenger"): 400.0,  # the refused rows answered nobody: no unit
        ("churn", "candidate"): 400.0,
    }
    assert series(got, "shipml_experiment_report_timestamp_seconds", "model") == {("churn",): report.created}


def test_a_report_without_labels_shows_its_verdict_and_units_and_leaves_out_the_nan_bounds(
    store: PredictionStore,
) -> None:
    log(store, "champion", [("1", None)] * 30)
    log(store, "challenger", [("1", None)] * 30)
    report = experiment(store, settings())
    save(store, report)
    d = report.challengers[0].primary.difference
    assert report.verdict == "no_data" and d.estimate != d.estimate  # NaN: nothing to compare

    got = scrape(ExperimentCollector(store, "churn", lambda: None))

    assert series(got, "shipml_experiment_verdict", "verdict")[("no_data",)] == 1.0
    assert ("challenger", "accuracy") not in {
        (v, m) for v, m, _ in series(got, "shipml_experiment_difference", "variant", "metric", "bound")
    }
    assert series(got, "shipml_experiment_units", "variant") == {("champion",): 30.0, ("challenger",): 30.0}


def test_the_newest_report_of_the_served_model_is_shown(store: PredictionStore) -> None:
    log(store, "champion", labelled(200, 0.9))
    log(store, "challenger", labelled(200, 0.9))
    first = experiment(store, settings())
    save(store, first)
    store.experiments.save(dataclasses.replace(first, model="fraud"))
    log(store, "challenger", labelled(100, 0.9))
    second = experiment(store, settings())
    save(store, second)
    store.experiments.save(dataclasses.replace(first, model="fraud"))

    got = scrape(ExperimentCollector(store, "churn", lambda: None))

    assert series(got, "shipml_experiment_units", "model", "variant") == {
        ("churn", "champion"): 200.0,
        ("churn", "challenger"): 300.0,
    }
    assert series(got, "shipml_experiment_report_timestamp_seconds", "model") == {("churn",): second.created}


def test_no_stored_report_or_an_unreadable_one_leaves_the_experiment_gauges_out(store: PredictionStore) -> None:
    deployment = Deployment((variant("main"),))
    assert set(scrape(ExperimentCollector(store, "churn", lambda: deployment))) == {"shipml_variant_weight"}
    with store.database.engine.begin() as conn:
        conn.execute(sa.insert(tables.experiment_reports).values(
            model="churn", created_at=1.0, since=0.0, until=1.0, verdict="ship", report="{not json"
        ))  # fmt: skip
    with capture_logs() as logs:
        got = scrape(ExperimentCollector(store, "churn", lambda: deployment))
    assert set(got) == {"shipml_variant_weight"}  # the scrape still answers
    assert [e["event"] for e in logs] == ["experiment_report_unreadable"]


def test_the_weight_gauge_follows_the_deployment_serving_at_scrape_time(store: PredictionStore) -> None:
    manager = SimpleNamespace(current=None)
    collector = ExperimentCollector(store, "churn", lambda: manager.current)
    assert "shipml_variant_weight" not in scrape(collector)  # nothing loaded yet

    champion, challenger = variant("champion"), variant("challenger", model="churn-gbm", version="1")
    manager.current = Deployment((champion, challenger), Split([("champion", 0.9), ("challenger", 0.1)], "s"))
    assert series(scrape(collector), "shipml_variant_weight", "model", "variant") == {
        ("churn", "champion"): 0.9,
        ("churn-gbm", "challenger"): 0.1,
    }
    # a canary controller rebuilds the deployment with a new split: the next scrape shows it
    manager.current = Deployment((champion, challenger), Split([("champion", 0.5), ("challenger", 0.5)], "s"))
    assert series(scrape(collector), "shipml_variant_weight", "variant") == {("champion",): 0.5, ("challenger",): 0.5}
    # a candidate taking all the traffic: the champion stays deployed, out of the split
    canary = variant("canary", version="4")
    manager.current = Deployment((champion, canary), Split([("canary", 1.0)], "s"))
    assert series(scrape(collector), "shipml_variant_weight", "variant") == {("champion",): 0.0, ("canary",): 1.0}
    # a single model: the variant main, all the traffic
    manager.current = Deployment((variant("main"),))
    assert series(scrape(collector), "shipml_variant_weight", "model", "variant") == {("churn", "main"): 1.0}


def scheduled(store: PredictionStore, s: Settings, model: str = "churn") -> ScheduledMonitor:
    return ScheduledMonitor(s, store, Registry(), model)  # type: ignore[arg-type]


def test_the_lease_holder_runs_the_monitoring_job_then_stores_the_experiment_report(
    store: PredictionStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log(store, "champion", labelled(400, 0.9))
    log(store, "challenger", labelled(400, 0.6))
    s = settings(monitor={"interval_s": 60, "window": "1h"}, home=str(tmp_path))
    holder, other = scheduled(store, s), scheduled(store, s)
    # the monitoring job itself needs a registered model's profile (tests/integration/test_monitoring_e2e.py runs
    # it on the service's schedule); here it only has to be called, once, by the lease holder
    monitored: list[tuple[str, float]] = []

    def run_monitoring(workspace: object, model: str, window: Window, job: object) -> tuple[object, int]:
        monitored.append((model, window.until - window.since))
        return SimpleNamespace(verdict="ok", performance_drop=False), len(monitored)

    monkeypatch.setattr("shipml.pipelines.monitor.run_monitoring", run_monitoring)
    monkeypatch.setattr(ScheduledMonitor, "job", None)

    with capture_logs() as logs:
        assert holder.tick() is True
        assert other.tick() is False  # the lease is held: one runner across workers and replicas

    assert [e["event"] for e in logs] == ["monitor_run", "experiment_run"]
    assert monitored == [("churn", 3600.0)]  # monitor.window
    (stored,) = store.experiments.recent("churn", limit=10)
    assert (stored.verdict, stored.model) == ("rollback", "churn")
    assert stored.until - stored.since == pytest.approx(3600)  # monitor.window
    assert [(v.name, v.requests) for v in stored.variants] == [("champion", 400), ("challenger", 400)]
    assert logs[1]["created"] == stored.created


def test_without_an_experiment_in_the_config_no_experiment_report_is_stored(
    store: PredictionStore, tmp_path: Path
) -> None:
    from shipml.config import settings_from_mapping

    s = settings_from_mapping(
        {"serve": {"model": "churn@production"}, "monitor": {"interval_s": 60}, "home": str(tmp_path)}
    )
    with capture_logs() as logs:
        scheduled(store, s).tick()
    assert "experiment_run" not in [e["event"] for e in logs]
    assert store.experiments.latest_per_model() == []


def test_a_failing_experiment_report_is_logged_and_the_service_goes_on(store: PredictionStore, tmp_path: Path) -> None:
    s = settings(monitor={"interval_s": 60}, home=str(tmp_path))
    with capture_logs() as logs:
        scheduled(store, s, model="fraud").tick()  # no variant of the experiment serves fraud
    (failed,) = [e for e in logs if e["event"] == "experiment_run_failed"]
    assert "fraud" in failed["error"] and failed["error"].startswith("ConfigError")
    assert store.experiments.latest_per_model() == []


def test_every_experiment_metric_the_rules_use_is_exported(store: PredictionStore) -> None:
    log(store, "champion", labelled(200, 0.9))
    log(store, "challenger", labelled(200, 0.8))
    save(store, experiment(store, settings()))
    deployment = Deployment((variant("main"),))
    exported = set(scrape(ExperimentCollector(store, "churn", lambda: deployment)))
    rules = yaml.safe_load(RULES.read_text())
    used = {
        name
        for group in rules["groups"]
        for rule in group["rules"]
        for name in re.findall(r"\bshipml_(?:experiment|variant)_\w+", rule["expr"])
    }
    assert used == {"shipml_experiment_srm_p_value", "shipml_variant_weight"}
    assert used <= exported
