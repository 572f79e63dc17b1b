"""/predict/batch's columnar path: a clean batch is checked a column at a time and given to the model as columns
(``Predictor.predict_columns``), and answers exactly what the record-at-a-time path answers: the same JSON for
any batch of valid records (bar the new ids), the same errors for a batch with refused records, and never
anything but an answer or a 4xx for any JSON values in a batch big enough to take the columnar path.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shipml.adapters.registry import VersionInfo
from shipml.core.fast.compile import compile_pipeline
from shipml.core.model import build_pipeline, make_estimator
from shipml.core.predictor import Columns, Outputs, PipelinePredictor
from shipml.core.records import RecordValidator
from shipml.core.schema import Feature, FeatureSchema
from shipml.examples.churn import generate_churn
from shipml.pipelines.bundle import ModelBundle
from shipml.pipelines.data import feature_frame
from shipml.server import predictions as service_module
from shipml.server.errors import ApiError
from shipml.server.metrics import ServerMetrics
from shipml.server.model_manager import Deployment, Variant
from shipml.server.predictions import VECTOR_MIN_ROWS, PredictionService
from shipml.server.protocols.shipml import predict_batch

PROPERTY = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FRAME = generate_churn(300, seed=2)
SCHEMA = FeatureSchema.infer(FRAME, "churn", id_columns=("customer_id",))
PIPELINE = build_pipeline(SCHEMA, make_estimator("sklearn.ensemble.RandomForestClassifier", {"n_estimators": 5,
                                                 "max_depth": 4, "random_state": 0}, "binary", 0))  # fmt: skip
PIPELINE.fit(feature_frame(FRAME, SCHEMA), FRAME.churn)


class Spy:
    """A predictor that counts its calls by kind, then answers as ``inner``."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.name = inner.name
        self.inline_max_rows = inner.inline_max_rows
        self.batching_pays = inner.batching_pays
        self.classes = inner.classes
        self.calls: list[str] = []

    def predict(self, rows: Any) -> Outputs:
        self.calls.append("rows")
        return self.inner.predict(rows)  # type: ignore[no-any-return]

    def predict_columns(self, columns: Columns) -> Outputs:
        self.calls.append("columns")
        return self.inner.predict_columns(columns)  # type: ignore[no-any-return]


PREDICTORS: dict[str, Callable[[], Any]] = {
    "pipeline": lambda: PipelinePredictor(PIPELINE, SCHEMA),
    "fast": lambda: compile_pipeline(PIPELINE, SCHEMA),
}


def served(kind: str) -> tuple[Deployment, Spy]:
    spy = Spy(PREDICTORS[kind]())
    info = VersionInfo("churn", "1", "run", datetime.now(UTC), (), {})
    bundle = ModelBundle(info, SCHEMA, None, spy, PIPELINE, (), {})  # type: ignore[arg-type]
    return Deployment((Variant(bundle, RecordValidator(SCHEMA)),)), spy  # type: ignore[arg-type]


def answered(kind: str, body: Any, monkeypatch: pytest.MonkeyPatch | None = None) -> tuple[bytes, list[str]]:
    """The /predict/batch answer's JSON for ``body`` without its prediction ids, and how the model was called;
    with ``monkeypatch``, through the record-at-a-time path only (today's, before the columnar one)."""
    dep, spy = served(kind)
    with pytest.MonkeyPatch.context() as mp:
        if monkeypatch is not None:
            mp.setattr(service_module, "VECTOR_MIN_ROWS", 10**9)
        service = PredictionService(None, "async", ServerMetrics())
        answer = orjson.loads(asyncio.run(predict_batch(service, dep, body, 100_000)))
    for entry in answer["predictions"]:
        entry.pop("prediction_id", None)
    return orjson.dumps(answer), spy.calls


def valid_value(f: Feature) -> st.SearchStrategy[Any]:
    """Any value ``f`` accepts as it is, as JSON gives it: bounds included, whole numbers as ints or floats."""
    if f.categories is not None:
        values: st.SearchStrategy[Any] = st.sampled_from(f.categories)
    else:
        lo, hi = f.min if f.min is not None else -1e9, f.max if f.max is not None else 1e9
        whole = st.integers(math.ceil(lo), math.floor(hi))
        if f.kind == "integer":
            values = whole | whole.map(float)
        else:
            values = whole | st.floats(lo, hi, allow_nan=False) | st.sampled_from([lo, hi])
    return values | st.none() if f.nullable else values


RECORD = st.fixed_dictionaries({f.name: valid_value(f) for f in SCHEMA.features})
CLEAN_BATCH = st.lists(RECORD, min_size=VECTOR_MIN_ROWS, max_size=200)


@pytest.mark.parametrize("kind", sorted(PREDICTORS))
@PROPERTY
@given(batch=CLEAN_BATCH, wrapped=st.booleans())
def test_a_clean_batch_goes_to_the_model_as_columns_and_answers_as_the_row_path(
    kind: str, batch: list[dict[str, Any]], wrapped: bool
) -> None:
    body: Any = [{"features": r, "id": f"k{i}"} for i, r in enumerate(batch)] if wrapped else {"records": batch}
    body = orjson.loads(orjson.dumps(body))  # as the server gets it: JSON's numbers, not hypothesis's
    columnar, calls = answered(kind, body)
    rows, row_calls = answered(kind, body, pytest.MonkeyPatch())
    assert calls == ["columns"] and row_calls == ["rows"]
    assert columnar == rows


WRONG = st.sampled_from([None, "x", True, -1, 10**400, 1e308, 0.5, [], {}, "month-to-month", float("inf")])


@pytest.mark.parametrize("kind", sorted(PREDICTORS))
@PROPERTY
@given(batch=CLEAN_BATCH, where=st.integers(0, 10**6), feature=st.sampled_from(SCHEMA.names), wrong=WRONG,
       extra=st.booleans())  # fmt: skip
def test_a_batch_with_a_refused_record_answers_as_the_row_path(
    kind: str, batch: list[dict[str, Any]], where: int, feature: str, wrong: Any, extra: bool
) -> None:
    record = dict(batch[where % len(batch)])
    if extra:
        record["no_such_feature"] = 1
    else:
        record[feature] = wrong
    batch[where % len(batch)] = record
    columnar, _ = answered(kind, batch)
    rows, _ = answered(kind, batch, pytest.MonkeyPatch())
    assert columnar == rows


JSON_VALUE = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=5,
)


@PROPERTY
@given(batch=CLEAN_BATCH, values=st.lists(st.tuples(st.integers(0, 10**6), st.sampled_from(SCHEMA.names),
                                                    JSON_VALUE), max_size=5))  # fmt: skip
def test_any_json_values_in_a_big_batch_are_answered_or_a_4xx(
    batch: list[dict[str, Any]], values: list[tuple[int, str, Any]]
) -> None:
    for where, feature, value in values:
        batch[where % len(batch)] = {**batch[where % len(batch)], feature: value}
    body = orjson.loads(orjson.dumps(batch))
    try:
        out = orjson.loads(answered("fast", body)[0])
    except ApiError as err:
        assert 400 <= err.status < 500
    else:
        assert len(out["predictions"]) == len(batch)
        assert [p["index"] for p in out["predictions"]] == list(range(len(batch)))


def test_the_columns_hold_what_a_frame_of_the_records_holds() -> None:
    batch = [
        {**r, "total_charges": None if i % 3 == 0 else r["total_charges"], "tenure": int(r["tenure"])}
        for i, r in enumerate(FRAME[list(SCHEMA.names)].to_dict(orient="records"))
    ]
    columns = RecordValidator(SCHEMA).columns(batch)
    assert columns is not None
    want = feature_frame(pd.DataFrame(batch), SCHEMA)
    for f in SCHEMA.features:
        got, expected = columns[f.name], want[f.name].to_numpy()
        if f.is_numeric:
            assert got.dtype.kind == "f"
            assert [None if v != v else v for v in got.tolist()] == [None if v != v else v for v in expected.tolist()]
        else:
            assert got.dtype == object and got.tolist() == expected.tolist()
    assert RecordValidator(SCHEMA).columns([*batch[:5], {**batch[5], "tenure": 1.5}]) is None
