"""Reliability catalogue, bad input (cases 1-17): what a careless or hostile client sends to the real server.

Error codes are shipml's own (the catalogue's names are illustrative): ``invalid_json`` for a body that is
not JSON, ``validation_error`` with one detail per record/feature/rule, ``body_too_large``,
``batch_too_large``.
"""

from __future__ import annotations

import contextlib
import json
import select
import socket
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from shipml.adapters.registry import MlflowRegistry
from shipml.config import load_settings
from shipml.pipelines.promote import promote
from shipml.pipelines.train import train_and_register
from tests.reliability.conftest import (
    GOOD_ROW,
    MAX_BATCH,
    MAX_BODY_BYTES,
    Project,
    assert_clean,
    bearer,
    dumps,
    error_of,
    host_port,
    metric,
    post_raw,
    raw_exchange,
    read_response,
    still_serving,
    stored,
    vm_rss_kib,
)
from tests.support.cli import shipml
from tests.support.server import Server, start_server

pytestmark = pytest.mark.integration

CHURN_FEATURES = tuple(GOOD_ROW)
NULLABLE = ("total_charges",)
PREDICTED = "shipml_predictions_total"


def row(**changes: object) -> dict[str, object]:
    return {**GOOD_ROW, **changes}


def predict(server: Server, key: str, features: Any) -> requests.Response:
    return requests.post(f"{server.url}/predict", json={"features": features}, headers=bearer(key), timeout=30)


def batch(server: Server, key: str, records: list[Any]) -> requests.Response:
    return requests.post(f"{server.url}/predict/batch", json={"records": records}, headers=bearer(key), timeout=30)


def details_of(error: dict[str, object]) -> list[tuple[int, str, str]]:
    return [(d["record"], d["feature"], d["rule"]) for d in error.get("details", [])]  # type: ignore[attr-defined,index]


# -- 1 ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/predict", "/predict/batch", "/invocations"])
def test_case_01_truncated_or_invalid_json_is_400_and_the_server_keeps_serving(
    rel_server: Server, rel_project: Project, path: str
) -> None:
    key = rel_project.keys.predict
    good = json.dumps({"features": GOOD_ROW})
    for body in (b'{"a":', b'{"features": {"tenure": 1,}}', good[:-7].encode(), b"{'features': {}}", b"[1, 2,]"):
        r = post_raw(rel_server, path, body, key)
        assert r.status_code == 400, (body, r.status_code, r.text)
        assert r.json()["error"]["code"] == "invalid_json", r.text
        assert_clean(r.text)
        if path != "/invocations":  # MLflow's protocol adds its own two keys beside shipml's error object
            error_of(r)
    still_serving(rel_server, key)


# -- 2 ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/predict", "/predict/batch", "/invocations"])
def test_case_02_wrong_content_type_is_415(rel_server: Server, rel_project: Project, path: str) -> None:
    body = dumps({"features": GOOD_ROW} if path == "/predict" else {"records": [GOOD_ROW]})
    if path == "/invocations":
        body = dumps({"dataframe_records": [GOOD_ROW]})
    for content_type in ("text/plain", "application/x-www-form-urlencoded", None):
        r = post_raw(rel_server, path, body, rel_project.keys.predict, content_type=content_type)
        assert r.status_code == 415, (content_type, r.status_code, r.text)
        assert r.json()["error"]["code"] == "unsupported_media_type", r.text
        assert_clean(r.text)


# -- 3 ----------------------------------------------------------------------------------------------


def test_case_03_wrong_types_report_every_error_with_record_and_feature(
    rel_server: Server, rel_project: Project
) -> None:
    key = rel_project.keys.predict
    wrong = row(tenure="12", monthly_charges={"x": 1}, age=True, data_gb=[1.0], contract=["one-year"], gender=False)
    expected = {
        ("tenure", "type"),
        ("monthly_charges", "type"),
        ("age", "type"),
        ("data_gb", "type"),
        ("contract", "type"),
        ("gender", "type"),
    }
    r = predict(rel_server, key, wrong)
    assert r.status_code == 422, r.text
    error = error_of(r)
    assert error["code"] == "validation_error"
    assert sorted(details_of(error)) == sorted((0, f, rule) for f, rule in expected)
    # in a batch: each record answered at its index, with all of its errors
    r = batch(rel_server, key, [GOOD_ROW, wrong, GOOD_ROW, row(support_calls="1")])
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["failed"] == 2
    answers = body["predictions"]
    assert [a["index"] for a in answers] == [0, 1, 2, 3]
    assert sorted(details_of(answers[1]["error"])) == sorted((1, f, rule) for f, rule in expected)
    assert details_of(answers[3]["error"]) == [(3, "support_calls", "type")]
    assert "prediction_id" in answers[0] and "prediction_id" in answers[2]


# -- 4 ----------------------------------------------------------------------------------------------


NON_FINITE = (b"NaN", b"Infinity", b"-Infinity", b"1e999")


def _features_with(feature: str, token: bytes) -> bytes:
    placeholder = "__TOKEN__"
    return json.dumps({"features": row(**{feature: placeholder})}).replace(f'"{placeholder}"', token.decode()).encode()


def test_case_04_non_finite_numbers_are_422_naming_the_feature_and_nan_is_missing(
    rel_server: Server, rel_project: Project
) -> None:
    """shipml's rule: NaN is a missing value (as in pandas, and as the pipeline reads it), so it is accepted
    for a nullable feature and refused as `not_nullable` otherwise; an infinity (Infinity, -Infinity, 1e999)
    is never a value: 422 `finite`, naming the record and the feature, nullable or not."""
    key = rel_project.keys.predict
    for feature, nullable in (("monthly_charges", False), ("total_charges", True)):
        for token in NON_FINITE:
            r = post_raw(rel_server, "/predict", _features_with(feature, token), key)
            if token == b"NaN" and nullable:
                assert r.status_code == 200, (feature, token, r.status_code, r.text)
                logged = stored(rel_project.root, r.json()["prediction_id"])
                assert logged is not None and logged.features[feature] is None, logged
                continue
            assert r.status_code == 422, (feature, token, r.status_code, r.text)
            rule = "not_nullable" if token == b"NaN" else "finite"
            assert details_of(error_of(r)) == [(0, feature, rule)], r.text


def test_case_04_an_infinity_never_reaches_the_model(rel_server: Server, rel_project: Project) -> None:
    key = rel_project.keys.predict
    before = metric(rel_server, PREDICTED, status="ok")
    for feature in ("monthly_charges", "total_charges"):
        for token in NON_FINITE[1:]:
            r = post_raw(rel_server, "/predict", _features_with(feature, token), key)
            assert r.status_code == 422, (feature, token, r.status_code, r.text)
            assert "prediction_id" not in r.text
    assert metric(rel_server, PREDICTED, status="ok") == before
    still_serving(rel_server, key)


# -- 5 ----------------------------------------------------------------------------------------------

REGRESSION_CONFIG = """\
model:
  name: tenure
  task: regression
  estimator: sklearn.linear_model.PoissonRegressor
  params: {alpha: 0.0001, max_iter: 300}
data:
  path: .shipml/data/churn.csv
  target: tenure
  id_columns: [customer_id]
  drop_columns: [churn, support_calls, data_gb, payment, internet, gender]
  features:
    - {name: monthly_charges, kind: numeric, min: 0, max: 1000}
    - {name: total_charges, kind: numeric, nullable: true, min: 0}
    - {name: age, kind: integer, min: 16, max: 120}
    - {name: contract, kind: categorical, categories: [month-to-month, one-year, two-year]}
training:
  cv_folds: 2
"""


@pytest.fixture(scope="module")
def overflowing_model(tmp_path_factory: pytest.TempPathFactory, rel_project: Project) -> Iterator[Server]:
    """A Poisson regression of tenure on total charges: exp() of a huge (in-range) total overflows to inf."""
    root = tmp_path_factory.mktemp("model-emits-inf")
    (root / ".shipml" / "data").mkdir(parents=True)
    (root / ".shipml" / "data" / "churn.csv").write_bytes(rel_project.data.read_bytes())
    (root / "shipml.yaml").write_text(REGRESSION_CONFIG + rel_project.auth_yaml)
    with contextlib.chdir(root):  # trained and promoted as `shipml train` and `models promote` would, in-process
        settings = load_settings("shipml.yaml")
        registry = MlflowRegistry(settings.registry)
        assert train_and_register(settings, registry).version.version == "1"
        promote(registry, "tenure", "1", "production", "case 5")
    server = start_server(root)
    yield server
    assert server.stop() == 0


def test_case_05_model_emitting_inf_is_flagged_and_counted(overflowing_model: Server, rel_project: Project) -> None:
    key = rel_project.keys.predict
    features = {"monthly_charges": 50.0, "total_charges": 1e308, "age": 30, "contract": "one-year"}
    fine = predict(overflowing_model, key, features | {"total_charges": 100.0})
    assert fine.status_code == 200 and isinstance(fine.json()["value"], float), fine.text
    before = metric(overflowing_model, "shipml_model_output_invalid_total")
    r = predict(overflowing_model, key, features)
    assert r.status_code != 500, r.text
    body = json.loads(r.text)  # strict JSON: no bare NaN/Infinity
    flagged = body.get("error", {}).get("code") == "model_output_invalid" or (
        body.get("value") is None and body.get("output_invalid") is True
    )
    assert flagged, r.text
    assert metric(overflowing_model, "shipml_model_output_invalid_total") == before + 1


# -- 6 ----------------------------------------------------------------------------------------------


def test_case_06_missing_required_features_are_all_listed(rel_server: Server, rel_project: Project) -> None:
    r = predict(rel_server, rel_project.keys.predict, {"tenure": 3})
    assert r.status_code == 422, r.text
    required = [f for f in CHURN_FEATURES if f not in NULLABLE and f != "tenure"]
    assert sorted(details_of(error_of(r))) == sorted((0, f, "missing") for f in required)
    r = predict(rel_server, rel_project.keys.predict, {})
    assert sorted(details_of(error_of(r))) == sorted((0, f, "missing") for f in CHURN_FEATURES if f not in NULLABLE)


# -- 7 ----------------------------------------------------------------------------------------------


def test_case_07_unknown_feature_is_refused_with_422_naming_it(rel_server: Server, rel_project: Project) -> None:
    """shipml's policy (no setting changes it): a feature the model does not have refuses the record."""
    key = rel_project.keys.predict
    before = metric(rel_server, PREDICTED, status="ok")
    r = predict(rel_server, key, row(promo_code="X1"))
    assert r.status_code == 422, r.text
    assert details_of(error_of(r)) == [(0, "promo_code", "unknown_feature")]
    r = batch(rel_server, key, [GOOD_ROW, row(promo_code="X1")])
    assert r.json()["predictions"][1]["error"]["details"][0]["feature"] == "promo_code"
    assert metric(rel_server, PREDICTED, status="ok") == before + 1  # only the good record was predicted


# -- 8 ----------------------------------------------------------------------------------------------

MASS: dict[str, Any] = {"variant": "b", "model_version": "99", "prediction_id": "chosen-by-client", "role": "admin", "alias": "staging",
        "model": {"name": "other", "version": "99"}}  # fmt: skip


def test_case_08_mass_assignment_fields_change_nothing(rel_server: Server, rel_project: Project) -> None:
    key = rel_project.keys.predict
    r = requests.post(f"{rel_server.url}/predict", json={"features": GOOD_ROW, **MASS}, headers=bearer(key), timeout=10)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == {"name": "churn", "version": "1", "variant": "main"}
    assert body["prediction_id"] != MASS["prediction_id"]
    logged = stored(rel_project.root, body["prediction_id"])
    assert logged is not None
    s = logged.served
    assert (s.model, s.version, s.variant, s.role) == ("churn", "1", "main", "primary")
    assert stored(rel_project.root, "chosen-by-client") is None
    r = requests.post(
        f"{rel_server.url}/predict/batch", json={"records": [GOOD_ROW], **MASS}, headers=bearer(key), timeout=10
    )
    assert r.status_code == 200 and r.json()["model"]["variant"] == "main", r.text
    # the same names inside the features are features the model does not have
    r = predict(rel_server, key, row(variant="b", model_version="99"))
    assert sorted(details_of(error_of(r))) == [
        (0, "model_version", "unknown_feature"),
        (0, "variant", "unknown_feature"),
    ]
    # a body cannot grant a role
    r = requests.post(f"{rel_server.url}/admin/reload", json={"role": "admin"}, headers=bearer(key), timeout=10)
    assert r.status_code == 403, r.text


# -- 9 ----------------------------------------------------------------------------------------------

TOLERATED = "shipml_tolerated_inputs_total"


def test_case_09_unknown_category_follows_the_configured_policy(
    rel_server: Server, rel_lenient: Server, rel_project: Project
) -> None:
    key = rel_project.keys.predict
    # serve.unknown_categories: reject (the default)
    r = predict(rel_server, key, row(contract="lifetime"))
    assert r.status_code == 422, r.text
    assert details_of(error_of(r)) == [(0, "contract", "unknown_category")]
    # serve.unknown_categories: accept -> predicted (the encoder ignores it, never a 500) and counted
    before = metric(rel_lenient, TOLERATED, feature="contract", rule="unknown_category")
    r = predict(rel_lenient, key, row(contract="lifetime"))
    assert r.status_code == 200, r.text
    assert metric(rel_lenient, TOLERATED, feature="contract", rule="unknown_category") == before + 1
    r = batch(rel_lenient, key, [row(contract="lifetime"), row(payment="crypto", internet="5g")])
    assert r.status_code == 200 and r.json()["failed"] == 0, r.text
    assert metric(rel_lenient, TOLERATED, feature="payment", rule="unknown_category") >= 1


# -- 10 ---------------------------------------------------------------------------------------------


def test_case_10_out_of_range_follows_the_policy_and_training_applies_the_same_bound(
    rel_server: Server, rel_lenient: Server, rel_project: Project, tmp_path: Path
) -> None:
    key = rel_project.keys.predict
    r = predict(rel_server, key, row(tenure=121))
    assert r.status_code == 422, r.text
    assert details_of(error_of(r)) == [(0, "tenure", "max")]
    assert predict(rel_server, key, row(tenure=120)).status_code == 200  # the bound itself is inside
    before = metric(rel_lenient, TOLERATED, feature="tenure", rule="max")
    r = predict(rel_lenient, key, row(tenure=121))
    assert r.status_code == 200, r.text
    assert metric(rel_lenient, TOLERATED, feature="tenure", rule="max") == before + 1
    # training-side validation (`shipml validate` against the served model's schema): the same bound
    source = rel_project.data.read_text().splitlines()
    header = source[0].split(",")
    at = header.index('"tenure"')
    rows = [line.split(",") for line in source[1:21]]
    rows[3][at], rows[4][at] = "121", "120"
    data = tmp_path / "new.csv"
    data.write_text("\n".join([source[0], *(",".join(r) for r in rows)]) + "\n")
    report = tmp_path / "report.json"
    checked = shipml(rel_project.root, "validate", str(data), "--model", "churn@production", "--json", str(report))
    assert checked.returncode == 1, checked.stdout + checked.stderr
    issues = [i for i in json.loads(report.read_text())["issues"] if i["column"] == "tenure"]
    assert len(issues) == 1 and issues[0]["rule"].startswith("max") and issues[0]["failing"] == 1, issues
    assert issues[0]["examples"] == ["121.0"]


# -- 11 ---------------------------------------------------------------------------------------------


def test_case_11_empty_object_is_422(rel_server: Server, rel_project: Project) -> None:
    key = rel_project.keys.predict
    for path in ("/predict", "/predict/batch"):
        r = post_raw(rel_server, path, b"{}", key)
        assert r.status_code == 422, (path, r.text)
        assert error_of(r)["code"] == "validation_error"


def test_case_11_empty_body_is_422_and_an_empty_batch_is_an_empty_answer(
    rel_server: Server, rel_project: Project
) -> None:
    """The README documents it: an empty body is 422; an empty batch answers 200 with no predictions."""
    key = rel_project.keys.predict
    for path in ("/predict", "/predict/batch"):
        r = post_raw(rel_server, path, b"", key)
        assert r.status_code == 422, (path, r.status_code, r.text)
        assert error_of(r)["code"] == "validation_error"
    r = post_raw(rel_server, "/invocations", b"", key)  # MLflow's shape: its keys beside shipml's error object
    assert r.status_code == 422 and r.json()["error_code"] == "BAD_REQUEST"
    for body in (b"[]", b'{"records": []}'):
        r = post_raw(rel_server, "/predict/batch", body, key)
        assert r.status_code == 200, (body, r.status_code, r.text)
        assert r.json()["predictions"] == [] and r.json()["failed"] == 0


# -- 12 ---------------------------------------------------------------------------------------------


def _chunked_upload(server: Server, path: str, key: str, total: int) -> tuple[int, bytes, int]:
    """Stream a chunked body of up to ``total`` bytes, stopping as soon as the server answers; the status,
    body and how many body bytes were sent."""
    host, port = host_port(server)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {key}\r\nTransfer-Encoding: chunked\r\n\r\n"
    ).encode()
    piece = b'{"features": ' + b" " * (64 * 1024 - 14)
    frame = f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    sent = 0
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(head)
        while sent < total:
            try:
                sock.sendall(frame)
            except (BrokenPipeError, ConnectionResetError, TimeoutError):
                break
            sent += len(piece)
            if select.select([sock], [], [], 0)[0]:
                break
        status, _, body = read_response(sock)
    return status, body, sent


@pytest.mark.parametrize("path", ["/predict", "/predict/batch"])
def test_case_12_oversized_bodies_are_413_before_or_while_read_and_rss_stays_flat(
    rel_server: Server, rel_project: Project, path: str
) -> None:
    key = rel_project.keys.predict
    pid = rel_server.proc.pid
    # declared: the answer comes although the body is never sent
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {key}\r\nContent-Length: {MAX_BODY_BYTES + 1}\r\n\r\n"
    ).encode()
    status, _, body = raw_exchange(rel_server, head)
    assert status == 413, body
    assert json.loads(body)["error"]["code"] == "body_too_large"
    assert str(MAX_BODY_BYTES) in json.loads(body)["error"]["message"]
    status, _, body = raw_exchange(rel_server, head + b"{" * 4096)
    assert status == 413, body
    # chunked: refused mid-stream, long before the 32 MiB a client could push
    _chunked_upload(rel_server, path, key, 4 * MAX_BODY_BYTES)  # warm: first allocations are not growth
    rss_before = vm_rss_kib(pid)
    for _ in range(5):
        status, body, sent = _chunked_upload(rel_server, path, key, 32 * MAX_BODY_BYTES)
        assert status == 413, body
        assert json.loads(body)["error"]["code"] == "body_too_large"
        assert sent < 32 * MAX_BODY_BYTES, "the server kept reading a body past its limit"
    grown = vm_rss_kib(pid) - rss_before
    print(f"FIGURE case 12: path={path} rss_growth_kib={grown} after 5 chunked uploads of up to 32 MiB")
    assert grown < 8 * 1024, f"RSS grew by {grown} KiB while refusing oversized bodies"
    still_serving(rel_server, key)


# -- 13 ---------------------------------------------------------------------------------------------


def test_case_13_batch_over_max_batch_is_413_stating_the_limit_and_the_model_is_not_called(
    rel_server: Server, rel_project: Project
) -> None:
    key = rel_project.keys.predict
    before = metric(rel_server, PREDICTED)
    for body in ({"records": [GOOD_ROW] * (MAX_BATCH + 1)}, [GOOD_ROW] * (MAX_BATCH + 1)):
        r = requests.post(f"{rel_server.url}/predict/batch", json=body, headers=bearer(key), timeout=30)
        assert r.status_code == 413, r.text
        error = error_of(r)
        assert error["code"] == "batch_too_large"
        assert str(MAX_BATCH) in error["message"] and str(MAX_BATCH + 1) in error["message"]
    assert metric(rel_server, PREDICTED) == before
    r = batch(rel_server, key, [GOOD_ROW] * MAX_BATCH)
    assert r.status_code == 200 and r.json()["failed"] == 0


# -- 14 ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/predict", "/predict/batch", "/invocations", "/v2/models/churn/infer"])
def test_case_14_deeply_nested_json_is_400_without_recursion_error(
    rel_server: Server, rel_project: Project, path: str
) -> None:
    key = rel_project.keys.predict
    depth = 100_000
    for body in (b"[" * depth, b"[" * depth + b"]" * depth, b'{"records": ' + b"[" * depth + b"]" * depth + b"}",
                 b'{"a":' * depth + b"1" + b"}" * depth):  # fmt: skip
        assert len(body) < MAX_BODY_BYTES
        r = post_raw(rel_server, path, body, key)
        assert r.status_code == 400, (path, r.status_code, r.text[:300])
        assert_clean(r.text)
        assert "depth" in r.text or "invalid_json" in r.text
    assert rel_server.proc.poll() is None
    still_serving(rel_server, key)


# -- 15 ---------------------------------------------------------------------------------------------


def test_case_15_huge_numbers_are_422_naming_the_feature(rel_server: Server, rel_project: Project) -> None:
    key = rel_project.keys.predict
    for token in (b"9" * 5000, b"-" + b"9" * 5000, b"1e400"):
        r = post_raw(rel_server, "/predict", _features_with("tenure", token), key)
        assert r.status_code == 422, (token[:10], r.status_code, r.text)
        assert details_of(error_of(r)) in ([(0, "tenure", "finite")], [(0, "tenure", "max")], [(0, "tenure", "min")])


def test_case_15_huge_numbers_are_refused_naming_the_feature_and_the_server_survives(
    rel_server: Server, rel_project: Project
) -> None:
    """No 500, no ValueError of Python's 4300-digit limit: read as an infinity, refused as not finite."""
    key = rel_project.keys.predict
    for token in (b"9" * 5000, b"1e400", b"9" * 100_000):
        for path, body in (("/predict", _features_with("tenure", token)),
                           ("/predict/batch", b'{"records": [' + _features_with("tenure", token)[13:-1] + b"]}")):  # fmt: skip
            r = post_raw(rel_server, path, body, key)
            if path == "/predict":
                assert r.status_code == 422, (path, r.status_code, r.text[:300])
                assert details_of(error_of(r)) == [(0, "tenure", "finite")], r.text[:300]
            else:  # a batch answers each record: this one refused, naming the feature
                assert r.status_code == 200 and r.json()["failed"] == 1, (path, r.status_code, r.text[:300])
                assert details_of(r.json()["predictions"][0]["error"]) == [(0, "tenure", "finite")]
    still_serving(rel_server, key)


# -- 16 ---------------------------------------------------------------------------------------------


def test_case_16_invalid_utf8_and_lone_surrogates_are_400(rel_server: Server, rel_project: Project) -> None:
    key = rel_project.keys.predict
    good = json.dumps({"features": GOOD_ROW}).encode()
    for body in (good.replace(b'"male"', b'"m\xffale"'), good.replace(b'"male"', b'"\\ud800"'),
                 good.replace(b'"male"', b'"\xed\xa0\x80"'), b"\xff\xfe{}"):  # fmt: skip
        r = post_raw(rel_server, "/predict", body, key)
        assert r.status_code == 400, (body[-40:], r.status_code, r.text)
        assert error_of(r)["code"] == "invalid_json"
    still_serving(rel_server, key)


ODD_TEXT = ("male\x00", "\u202emale", "male\U0001f600", "m\u0101le", unicodedata.normalize("NFD", "m\u00e1le"))


def test_case_16_categoricals_match_exactly_by_code_point(rel_server: Server, rel_project: Project) -> None:
    """shipml's matching rule (observed; not documented): a category matches only the exact same code
    points, no Unicode normalisation, no stripping of NUL or direction marks."""
    key = rel_project.keys.predict
    for text in ODD_TEXT:
        r = predict(rel_server, key, row(gender=text))
        assert r.status_code == 422, (text, r.text)
        assert details_of(error_of(r)) == [(0, "gender", "unknown_category")]
    nfc, nfd = unicodedata.normalize("NFC", "fe\u0301male"), "fe\u0301male"
    assert nfc != nfd
    assert predict(rel_server, key, row(gender=nfd)).status_code == 422


def test_case_16_duplicate_keys_last_one_wins_for_validator_and_log(rel_server: Server, rel_project: Project) -> None:
    """shipml's rule (observed; not documented): the last of duplicate keys wins, and the validator and
    the prediction log see that same value."""
    key = rel_project.keys.predict
    inner = json.dumps(row(tenure=12))[1:-1]
    last_good = b'{"features": {"tenure": 500, ' + inner.encode() + b"}}"
    r = post_raw(rel_server, "/predict", last_good, key)
    assert r.status_code == 200, r.text
    logged = stored(rel_project.root, r.json()["prediction_id"])
    assert logged is not None and logged.features["tenure"] == 12
    last_bad = b'{"features": {' + inner.encode() + b', "tenure": 500}}'
    r = post_raw(rel_server, "/predict", last_bad, key)
    assert r.status_code == 422 and details_of(error_of(r)) == [(0, "tenure", "max")], r.text
    outer = b'{"features": {"tenure": 500}, "features": ' + json.dumps(GOOD_ROW).encode() + b"}"
    assert post_raw(rel_server, "/predict", outer, key).status_code == 200


def test_case_16_the_prediction_log_stores_odd_text_round_trip(rel_lenient: Server, rel_project: Project) -> None:
    key = rel_project.keys.predict
    for text in ODD_TEXT:
        r = predict(rel_lenient, key, row(gender=text, contract=text))
        assert r.status_code == 200, (text, r.text)
        logged = stored(rel_project.root, r.json()["prediction_id"], f"sqlite:///{rel_project.root}/lenient.db")
        assert logged is not None
        assert (logged.features["gender"], logged.features["contract"]) == (text, text)


# -- 17 ---------------------------------------------------------------------------------------------


def _batch_with_one_bad(n: int, bad: int) -> list[dict[str, object]]:
    records = [row(tenure=i % 100, support_calls=i % 7) for i in range(n)]
    records[bad] = row(age=7)
    return records


def test_case_17_one_bad_row_among_99_good_gives_99_predictions_and_one_indexed_error(
    rel_server: Server, rel_project: Project
) -> None:
    r = batch(rel_server, rel_project.keys.predict, _batch_with_one_bad(MAX_BATCH, 37))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["failed"] == 1
    answers = body["predictions"]
    assert [a["index"] for a in answers] == list(range(MAX_BATCH))
    assert answers[37]["error"]["details"] == [
        {"record": 37, "feature": "age", "rule": "min", "message": "must be >= 16, got 7"}
    ]
    ids = [a["prediction_id"] for i, a in enumerate(answers) if i != 37]
    assert len(set(ids)) == MAX_BATCH - 1
    assert all(stored(rel_project.root, pid) is not None for pid in ids[::10] + ids[-1:])


def test_case_17_all_100_rows_are_logged_with_their_status(rel_server: Server, rel_project: Project) -> None:
    from shipml.adapters.store import PredictionStore

    store = PredictionStore(f"sqlite:///{rel_project.root}/.shipml/predictions.db")
    try:
        before, before_ok = store.predictions.count(status=None), store.predictions.count()
        r = batch(rel_server, rel_project.keys.predict, _batch_with_one_bad(MAX_BATCH, 37))
        assert r.status_code == 200
        assert store.predictions.count(status=None) == before + MAX_BATCH  # every record answered has its row
        assert store.predictions.count() == before_ok + MAX_BATCH - 1  # monitoring reads the predictions only
        ids = [p["prediction_id"] for p in r.json()["predictions"] if "prediction_id" in p]
        assert len(ids) == MAX_BATCH - 1 and all(store.predictions.get(i).status == "ok" for i in ids[:5])  # type: ignore[union-attr]
    finally:
        store.close()
