"""Fast predictors against the pipeline they were compiled from: the same numbers, to the last bit."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shipml.core.fast.compile import compile_pipeline
from shipml.core.fast.model import unpack
from shipml.core.fast.preprocess import Unsupported
from shipml.core.fast.trees import TreeKernel
from shipml.core.fast.verify import Verdict, verify
from shipml.core.predictor import PipelinePredictor
from shipml.core.schema import Task
from shipml.examples.churn import generate_churn
from shipml.pipelines.data import feature_frame
from shipml.pipelines.fast_path import build_and_verify, rows_from_frame
from tests.support.fitted import Fitted, fitted, native_kernel, with_plan

MODELS = [
    ("binary", "sklearn.ensemble.RandomForestClassifier", {"n_estimators": 15, "max_depth": 6}),
    ("binary", "sklearn.ensemble.ExtraTreesClassifier", {"n_estimators": 10}),
    ("binary", "sklearn.tree.DecisionTreeClassifier", {"max_depth": 5}),
    ("binary", "sklearn.ensemble.GradientBoostingClassifier", {"n_estimators": 15}),
    ("binary", "sklearn.ensemble.HistGradientBoostingClassifier", {"max_iter": 20}),
    ("binary", "sklearn.linear_model.LogisticRegression", {"max_iter": 300}),
    ("multiclass", "sklearn.ensemble.RandomForestClassifier", {"n_estimators": 10}),
    ("multiclass", "sklearn.ensemble.GradientBoostingClassifier", {"n_estimators": 10}),
    ("multiclass", "sklearn.ensemble.HistGradientBoostingClassifier", {"max_iter": 10}),
    ("multiclass", "sklearn.linear_model.LogisticRegression", {"max_iter": 300}),
    ("regression", "sklearn.ensemble.RandomForestRegressor", {"n_estimators": 10, "max_depth": 6}),
    ("regression", "sklearn.ensemble.GradientBoostingRegressor", {"n_estimators": 15}),
    ("regression", "sklearn.ensemble.HistGradientBoostingRegressor", {"max_iter": 20}),
    ("regression", "sklearn.tree.DecisionTreeRegressor", {"max_depth": 6}),
    ("regression", "sklearn.linear_model.Ridge", {}),
    ("regression", "sklearn.linear_model.LinearRegression", {}),
]

TREES = ("Forest", "Trees", "Tree", "Gradient")
PARAMS = {(t, e): tuple(sorted(p.items())) for t, e, p in MODELS}


def model(task: Task, estimator: str) -> Fitted:
    """One of MODELS, fitted on first use (then cached for the session)."""
    return fitted(task, estimator, PARAMS[(task, estimator)])


@functools.cache
def served(task: Task, estimator: str) -> tuple[Any, ...]:
    """The model's fast predictor in its packed form, as the server unpacks it (the packed form is what serves):
    with numpy, and with the native kernel when this machine has it. Made once per model, not per example."""
    pipeline, schema = model(task, estimator)
    packed = compile_pipeline(pipeline, schema).pack()
    native = native_kernel()[0]
    return tuple(unpack(packed, kernel)[0] for kernel in ((None,) if native is None else (None, native)))


def kernels() -> list[Any]:
    """numpy always; the native kernel when this machine could build it (else a skip that says why)."""
    return [pytest.param("numpy", id="numpy"), pytest.param("native", id="native")]


@pytest.mark.parametrize("kernel", kernels(), indirect=True)
@pytest.mark.parametrize(("task", "estimator"), [(t, e) for t, e, _ in MODELS])
def test_fast_path_is_exact_on_data_and_edge_cases(task: str, estimator: str, kernel: TreeKernel | None) -> None:
    pipeline, schema = model(task, estimator)
    rows = rows_from_frame(feature_frame(generate_churn(400, seed=6), schema), schema)
    fast, verdict = build_and_verify(pipeline, schema, rows, kernel)
    assert fast is not None, verdict.reason
    assert verdict.tag().startswith("verified: exact on ")
    assert verdict.max_abs_diff == 0.0
    tree_model = any(word in estimator for word in TREES)
    expected = ("numpy", "native") if kernel is not None and tree_model else ("numpy",)
    assert verdict.backends == expected
    assert Verdict.from_json(verdict.to_json()) == verdict  # what the server reads back is what was found
    assert fast.backend == expected[-1]


record = st.fixed_dictionaries(
    {
        "tenure": st.one_of(st.none(), st.integers(0, 200).map(float)),
        "monthly_charges": st.one_of(st.none(), st.floats(-1e6, 1e6, allow_nan=False)),
        "total_charges": st.one_of(st.none(), st.floats(0, 1e7, allow_nan=False)),
        "age": st.one_of(st.none(), st.integers(0, 130).map(float)),
        "support_calls": st.one_of(st.none(), st.integers(0, 50).map(float)),
        "data_gb": st.one_of(st.none(), st.floats(0, 1e4, allow_nan=False)),
        "contract": st.one_of(st.none(), st.sampled_from(["month-to-month", "one-year", "two-year", "weekly", ""])),
        "payment": st.one_of(st.none(), st.sampled_from(["electronic-check", "credit-card", "cash"])),
        "internet": st.one_of(st.none(), st.sampled_from(["dsl", "fiber", "none", "satellite"])),
        "gender": st.one_of(st.none(), st.sampled_from(["female", "male", "other"])),
    }
)


@pytest.mark.parametrize(("task", "estimator"), [(t, e) for t, e, _ in MODELS])
@settings(max_examples=25, deadline=None)
@given(rows=st.lists(record, min_size=1, max_size=30))
def test_fast_equals_pipeline_on_random_records(task: str, estimator: str, rows: list[dict[str, Any]]) -> None:
    """Each example against the pipeline once, with every backend this machine has (numpy, and the native kernel
    when it could be built: test_fast_path_is_exact_on_data_and_edge_cases says why when it could not)."""
    pipeline, schema = model(task, estimator)
    rows = [{k: v for k, v in r.items() if k in schema.names} for r in rows]
    want = PipelinePredictor(pipeline, schema).predict(rows)
    for fast in served(task, estimator):
        got = fast.predict(rows)
        if want.proba is not None:
            assert got.proba is not None
            np.testing.assert_array_equal(got.proba, want.proba)
            assert got.labels() == want.labels()
        else:
            np.testing.assert_array_equal(got.values, want.values)


def test_unsupported_models_fall_back_with_the_reason() -> None:
    pipeline, schema = fitted("binary", "sklearn.neighbors.KNeighborsClassifier", (("n_neighbors", 5),))
    with pytest.raises(Unsupported, match="no fast path for KNeighborsClassifier"):
        compile_pipeline(pipeline, schema)
    fast, verdict = build_and_verify(
        pipeline, schema, rows_from_frame(feature_frame(with_plan(1_500, 5).head(50), schema), schema)
    )
    assert fast is None
    assert verdict.tag() == "not verified: unsupported: no fast path for KNeighborsClassifier"


def test_a_wrong_fast_path_is_not_verified() -> None:
    pipeline, schema = model("binary", "sklearn.linear_model.LogisticRegression")
    fast = compile_pipeline(pipeline, schema)
    fast.preprocess.blocks[0].mean = fast.preprocess.blocks[0].mean + 1e-9  # type: ignore[union-attr, operator]
    rows = rows_from_frame(feature_frame(with_plan(1_500, 5).head(300), schema), schema)
    verdict = verify(fast, pipeline, schema, rows)
    assert not verdict.verified
    assert verdict.tag().startswith("not verified: max |diff|")


@pytest.mark.parametrize("kernel", kernels(), indirect=True)
@pytest.mark.parametrize("task", ["binary", "regression"])
def test_big_batches_give_the_same_numbers(task: str, kernel: TreeKernel | None) -> None:
    estimator = (
        "sklearn.ensemble.GradientBoostingRegressor"
        if task == "regression"
        else "sklearn.ensemble.RandomForestClassifier"
    )
    pipeline, schema = model(task, estimator)
    rows = rows_from_frame(feature_frame(pd.concat([with_plan(1_500, 5)] * 3), schema), schema)
    got, want = (
        compile_pipeline(pipeline, schema, kernel).predict(rows),
        PipelinePredictor(pipeline, schema).predict(rows),
    )
    if task == "regression":
        np.testing.assert_array_equal(got.values, want.values)
    else:
        np.testing.assert_array_equal(got.proba, want.proba)


def test_a_damaged_pack_is_refused_with_the_reason() -> None:
    pipeline, schema = model("binary", "sklearn.ensemble.RandomForestClassifier")
    packed = compile_pipeline(pipeline, schema).pack()
    with pytest.raises(ValueError, match="not a packed fast predictor"):
        unpack(packed[: len(packed) // 2])
    with pytest.raises(ValueError, match="not a packed fast predictor"):
        unpack(b"not an npz")


def test_versions_registered_before_the_verdict_file_are_read_from_their_tag() -> None:
    legacy = Verdict.from_legacy_tag("verified: exact on 10 rows (max |diff| 0.0e+00); backends: numpy, native")
    assert (legacy.verified, legacy.mode, legacy.backends) == (True, "exact", ("numpy", "native"))
    before_backends = Verdict.from_legacy_tag("verified: within 1e-12 on 10 rows (max |diff| 1.0e-15)")
    assert (before_backends.mode, before_backends.backends) == ("within 1e-12", ("numpy",))
    refused = Verdict.from_legacy_tag("not verified: unsupported: no fast path for SVC")
    assert (refused.verified, refused.reason) == (False, "unsupported: no fast path for SVC")


def test_the_verdict_file_round_trips_and_refuses_what_it_cannot_vouch_for() -> None:
    refused = Verdict(False, "not verified", 0, float("nan"), "unsupported: no fast path for SVC")
    back = Verdict.from_json(refused.to_json())
    assert (back.verified, back.reason, back.rows, back.backends) == (False, refused.reason, 0, ("numpy",))
    assert np.isnan(back.max_abs_diff)  # JSON has no NaN: written as null, read back as NaN
    good = Verdict(True, "exact", 412, 0.0, backends=("numpy", "native"))
    text = good.to_json()
    with pytest.raises(ValueError, match=r"fast_path.json: mode: expected one of .* matching verified, got 'exact'"):
        Verdict.from_json(text.replace('"verified": true', '"verified": false'))
    with pytest.raises(ValueError, match=r"fast_path.json: rows: expected a row count, got '412'"):
        Verdict.from_json(text.replace('"rows": 412', '"rows": "412"'))
    with pytest.raises(ValueError, match=r"fast_path.json: format: expected 'shipml.fast_path/1', got None"):
        Verdict.from_json("{}")
    with pytest.raises(ValueError, match=r"fast_path.json: expected JSON"):
        Verdict.from_json("verified: exact")
