"""Issue 11, item 5: `shipml ab report` and `ab promote` on a real experiment, served and labelled over HTTP.

The setup makes the verdict certain, not likely: churn/1 is the quickstart's forest (accuracy about 0.75 on fresh
customers) and churn/2 a one-split stump weighted 20:1 towards churn, which calls every customer a churner (accuracy
= the churn rate, about 0.34). churn/2 is put in production and is the champion; churn/1 is the challenger, at 0.5
each. With ~750 labelled predictions a variant the difference (~0.42) is five times the half-width of its
anytime-valid interval (~0.08), and everything (data, keys, routing, models) is seeded, so the report says ship for
the challenger every time, and `ab promote` moves churn/1 to production with churn/2 as `previous`.

The latency guardrail is switched off (a margin of 1): the traffic is three batch requests, so a variant's ~750 rows
share three latencies, which is no evidence about a p99 either way (the forest may well be slower than the stump);
the guardrail itself is tested on a real store in tests/unit/pipelines/test_experiments_job.py.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from shipml.adapters.store import PredictionStore
from shipml.core.routing import shadow_sampled, shadows_from
from shipml.examples.churn import FEATURES, churn_config, generate_churn
from tests.support.cli import one_error_line, shipml
from tests.support.project import train_project
from tests.support.server import start_server

pytestmark = [pytest.mark.integration]

SALT = "ab-report"
N = 1500
EXPERIMENT = f"""
serve:
  salt: {SALT}
  reload_interval_s: 0
  variants:
    - {{name: champion, model: churn/2, weight: WEIGHT_C}}
    - {{name: challenger, model: churn/1, weight: WEIGHT_T}}
  shadow:
    - {{name: candidate, model: churn/2, fraction: 0.5}}
experiments:
  latency_margin: 1.0
"""


def experiment(champion: float, challenger: float) -> str:
    return EXPERIMENT.replace("WEIGHT_C", str(champion)).replace("WEIGHT_T", str(challenger))


@dataclass
class Traffic:
    root: Path
    answers: list[dict[str, Any]]  # per record of the batches, in order
    truth: list[int]
    keys: list[str]


def stump_config() -> str:
    """The example's config with a worse model: one tree of depth 1, its churn class weighted 20:1."""
    config = yaml.safe_load(churn_config())
    config["model"]["params"] = {"n_estimators": 1, "max_depth": 1, "class_weight": {0: 1, 1: 20}, "random_state": 0}
    config["training"] = {"cv_folds": 2, "seed": 42}  # no gates: it is meant to be bad
    return yaml.safe_dump(config)


@pytest.fixture(scope="module")
def traffic(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Traffic]:
    root = tmp_path_factory.mktemp("ab")
    (root / "stump.yaml").write_text(stump_config())
    train_project(root)
    for argv in (["train", "-c", "stump.yaml"], ["models", "promote", "churn", "2"]):
        done = shipml(root, *argv)
        assert done.returncode == 0, (argv, done.stdout, done.stderr)
    (root / "shipml.yaml").write_text(experiment(0.5, 0.5))
    data = generate_churn(N, seed=7)
    features = data[list(FEATURES)].astype(object).where(data[list(FEATURES)].notna(), None)
    records: list[dict[str, Any]] = [
        {str(k): (v.item() if hasattr(v, "item") else v) for k, v in r.items()} for r in features.to_dict("records")
    ]
    keys = [f"customer-{i}" for i in range(N)]
    server = start_server(root, env={"SHIPML_AUTH__ENABLED": "false"})
    try:
        with requests.Session() as session:
            answers: list[dict[str, Any]] = []
            for lo in range(0, N, 500):
                body: dict[str, Any] = {
                    "records": [{"features": records[i], "id": keys[i]} for i in range(lo, lo + 500)]
                }
                answer = session.post(f"{server.url}/predict/batch", json=body, timeout=60)
                assert answer.status_code == 200, answer.text
                answers += answer.json()["predictions"]
        truth = [int(y) for y in data["churn"]]
        with ThreadPoolExecutor(4) as pool:
            codes = list(pool.map(lambda a, y: feedback(server.url, a["prediction_id"], y), answers, truth))
        assert set(codes) == {200}, Counter(codes)
        wait_for_shadow_rows(root, expected=sum(sampled(k) for k in keys))
    finally:
        assert server.stop() == 0
    yield Traffic(root, answers, truth, keys)


_sessions = threading.local()


def feedback(url: str, prediction_id: str, label: int) -> int:
    """One label, on a connection this thread keeps alive, as a client sending many labels does."""
    session = getattr(_sessions, "session", None)
    if session is None:
        session = _sessions.session = requests.Session()
    return session.post(
        f"{url}/feedback", json={"prediction_id": prediction_id, "label": label}, timeout=30
    ).status_code


def sampled(key: str) -> bool:
    (shadow,) = shadows_from([("candidate", 0.5)])
    return shadow_sampled(key, shadow, SALT, random.Random(0))  # noqa: S311 - only unkeyed requests draw


def wait_for_shadow_rows(root: Path, expected: int) -> None:
    """The shadow's copies are logged after the answers, off the response path."""
    store = PredictionStore(f"sqlite:///{root}/.shipml/predictions.db")
    try:
        deadline = time.monotonic() + 30
        while store.predictions.count("churn", role="shadow") < expected and time.monotonic() < deadline:
            time.sleep(0.2)
        assert store.predictions.count("churn", role="shadow") == expected
    finally:
        store.close()


def report(root: Path, *args: str) -> tuple[int, dict[str, Any]]:
    done = shipml(root, "ab", "report", "--window", "1h", "--json", *args)
    assert done.returncode != 2, done.stderr
    return done.returncode, json.loads(done.stdout)


def test_the_report_ships_the_better_challenger_with_the_right_counts(traffic: Traffic) -> None:
    code, r = report(traffic.root)
    assert (code, r["verdict"], r["winner"], r["champion"], r["metric"]) == (
        0,
        "ship",
        "challenger",
        "champion",
        "accuracy",
    )
    served = Counter(a["variant"] for a in traffic.answers)
    correct = Counter(
        a["variant"] for a, y in zip(traffic.answers, traffic.truth, strict=True) if a["predicted_class"] == y
    )
    assert set(served) == {"champion", "challenger"}
    for name in ("champion", "challenger"):
        v = next(v for v in r["variants"] if v["name"] == name)
        n = served[name]
        assert (v["requests"], v["errors"], v["units"], v["keyed"], v["matured"], v["labelled"]) == (n, 0, n, n, n, n)
        assert v["metric"]["n"] == n and v["metric"]["mean"] == pytest.approx(correct[name] / n, abs=1e-12)
    assert r["srm"]["mismatch"] is False and r["srm"]["observed"] == [served["champion"], served["challenger"]]
    (challenger,) = r["challengers"]
    assert challenger["primary"]["better"] is True and challenger["primary"]["difference"]["lower"] > 0.25
    # no monitoring report in this project: drift and performance are not judged, and said so
    assert [(g["name"], g["status"]) for g in challenger["guardrails"]] == [
        ("error_rate", "holds"),
        ("latency_p99", "holds"),
    ]
    assert any(n.startswith("guardrails drift and performance of challenger: not judged") for n in r["notes"])
    assert all(v["p99_ms"] > 0 for v in r["variants"])
    assert challenger["decision"]["verdict"] == "ship"
    # the shadow runs the champion's version on half of the keys: joined to the feedback by key, in full agreement
    (shadow,) = r["shadows"]
    copies = sum(sampled(k) for k in traffic.keys)
    candidate = next(v for v in r["variants"] if v["name"] == "candidate")
    assert (candidate["role"], candidate["requests"], candidate["labelled"], shadow["joined"]) == (
        "shadow",
        copies,
        copies,
        copies,
    )
    assert shadow["agreement"] == 1.0 and shadow["compared"] == sum(
        sampled(k) for k, a in zip(traffic.keys, traffic.answers, strict=True) if a["variant"] == "champion"
    )


def test_promote_moves_the_winner_to_production_and_keeps_previous(traffic: Traffic) -> None:
    done = shipml(traffic.root, "ab", "promote", "--window", "1h", "--reason", "challenger won")
    assert done.returncode == 0, done.stderr
    assert "promoted variant challenger: churn/1" in done.stdout
    assert "churn@production: 2 -> 1" in done.stdout and "churn@previous: - -> 2" in done.stdout
    # the loser only with --force
    refused = shipml(traffic.root, "ab", "promote", "-w", "1h", "--variant", "champion")
    assert refused.returncode == 1 and "champion is not the experiment's winner" in refused.stderr, refused.stderr
    forced = shipml(traffic.root, "ab", "promote", "-w", "1h", "--variant", "champion", "--force")
    assert forced.returncode == 0, forced.stderr
    assert "promoted variant champion: churn/2 (forced)" in forced.stdout
    aliases = shipml(traffic.root, "models", "list").stdout
    assert "│ churn │ 2      │ 2          │ 2       │ 1        │" in aliases  # latest, production, staging, previous


def test_a_sample_ratio_mismatch_is_unhealthy_and_never_ships(traffic: Traffic) -> None:
    # the traffic was split 0.5/0.5; a config that now says 0.9/0.1 no longer matches what was served
    (traffic.root / "srm.yaml").write_text(experiment(0.9, 0.1))
    code, r = report(traffic.root, "-c", "srm.yaml")
    assert (code, r["verdict"], r["winner"]) == (4, "unhealthy", None)
    assert r["srm"]["mismatch"] is True and r["srm"]["p_value"] < 0.001
    assert all(c["decision"]["verdict"] == "unhealthy" for c in r["challengers"])
    refused = shipml(traffic.root, "ab", "promote", "-c", "srm.yaml", "--window", "1h")
    assert refused.returncode == 1 and "verdict is unhealthy, not ship" in refused.stderr, refused.stderr


def test_a_bad_window_is_one_error_line(traffic: Traffic) -> None:
    line = one_error_line(shipml(traffic.root, "ab", "report", "--window", "5x"))
    assert line == "error: --window: expected a positive duration such as 30m, 24h or 7d, got '5x'"
