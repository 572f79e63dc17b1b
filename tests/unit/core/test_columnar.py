"""The columnar entry (``predict_columns``) against the row path: the same numbers, to the last bit.

Every model and backend of test_fast.py, on churn rows with missing values in every feature and categories
the model never saw (every block type: numeric with and without an imputer's fill, categorical with a fill).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from shipml.core.fast.compile import compile_pipeline
from shipml.core.fast.model import unpack
from shipml.core.fast.trees import TreeKernel
from shipml.core.predictor import Outputs, PipelinePredictor, columns_from_frame
from shipml.core.schema import FeatureSchema
from shipml.examples.churn import generate_churn
from shipml.pipelines.data import feature_frame
from shipml.pipelines.fast_path import rows_from_frame
from tests.unit.core.test_fast import MODELS, kernels, model


def awkward_frame(schema: FeatureSchema, rows: int = 600) -> pd.DataFrame:
    """Churn rows where every feature is missing somewhere and every categorical has unseen values ('')."""
    df = generate_churn(rows, seed=11)
    rng = np.random.default_rng(3)
    for f in schema.features:
        df.loc[rng.random(rows) < 0.1, f.name] = None
        if not f.is_numeric:
            df[f.name] = df[f.name].astype(object)
            df.loc[rng.random(rows) < 0.05, f.name] = "never-seen"
            df.loc[rng.random(rows) < 0.02, f.name] = ""
    return feature_frame(df, schema)


def assert_same(got: Outputs, want: Outputs) -> None:
    assert got.classes == want.classes
    for a, b in ((got.proba, want.proba), (got.values, want.values)):
        if b is None:
            assert a is None
        else:
            assert a is not None
            assert a.dtype == b.dtype
            np.testing.assert_array_equal(a, b, strict=True)


@pytest.mark.parametrize("kernel", kernels(), indirect=True)
@pytest.mark.parametrize(("task", "estimator"), [(t, e) for t, e, _ in MODELS])
def test_columns_give_the_rows_numbers(task: str, estimator: str, kernel: TreeKernel | None) -> None:
    pipeline, schema = model(task, estimator)
    frame = awkward_frame(schema)
    rows, columns = rows_from_frame(frame, schema), columns_from_frame(frame, schema)
    fast = unpack(compile_pipeline(pipeline, schema).pack(), kernel)[0]
    assert_same(fast.predict_columns(columns), fast.predict(rows))
    reference = PipelinePredictor(pipeline, schema)
    assert_same(reference.predict_columns(columns), reference.predict(rows))
    one: dict[str, Any] = {k: v[:1] for k, v in columns.items()}  # one row: the row path's scalar branch
    assert_same(fast.predict_columns(one), fast.predict(rows[:1]))


def test_every_block_type_is_covered() -> None:
    """The awkward frame reaches numeric blocks with and without a fill and categorical blocks with one."""
    pipeline, schema = model("binary", "sklearn.ensemble.HistGradientBoostingClassifier")
    kinds = {(type(b).__name__, b.fill is not None) for b in compile_pipeline(pipeline, schema).preprocess.blocks}
    assert ("NumericBlock", True) in kinds
    assert ("CategoricalBlock", True) in kinds
    frame = awkward_frame(schema)
    for f in schema.features:
        assert frame[f.name].isna().any(), f.name
        if not f.is_numeric:
            assert (frame[f.name] == "never-seen").any(), f.name
