"""Models fitted for the unit tests, once per process and only when a test asks (never at import, so that
collecting the suite costs no fit), and the native tree kernel, built or loaded on first use."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import pandas as pd

from shipml.core.fast.trees import TreeKernel
from shipml.core.model import build_pipeline, make_estimator
from shipml.core.schema import FeatureSchema, Task
from shipml.examples.churn import generate_churn
from shipml.pipelines.data import feature_frame
from shipml.pipelines.fast_path import rows_from_frame

Fitted = tuple[Any, FeatureSchema]  # a fitted pipeline and its schema
Params = tuple[tuple[str, Any], ...]  # estimator parameters, hashable (``tuple(sorted(params.items()))``)

# what each task predicts in the churn example (multiclass: a plan derived from the monthly charges)
TARGETS = {"binary": "churn", "multiclass": "plan", "regression": "total_charges"}


@functools.cache
def with_plan(rows: int, seed: int) -> pd.DataFrame:
    """The churn example with a three-class ``plan`` column (gold, silver, bronze by monthly charges)."""
    data = generate_churn(rows, seed=seed)
    data["plan"] = np.where(data.monthly_charges > 80, "gold", np.where(data.monthly_charges > 45, "silver", "bronze"))
    return data


@functools.cache
def fitted(task: Task, estimator: str, params: Params = (), rows: int = 1_500, seed: int = 5) -> Fitted:
    """``estimator`` fitted on ``rows`` churn rows to predict the task's target of TARGETS."""
    target = TARGETS[task]
    df = with_plan(rows, seed).dropna(subset=[target])
    drop = [c for c in TARGETS.values() if c != target]
    schema = FeatureSchema.infer(df.drop(columns=drop), target, task, ("customer_id",))
    pipeline = build_pipeline(schema, make_estimator(estimator, dict(params), task, 0))
    pipeline.fit(feature_frame(df, schema), df[target])
    return pipeline, schema


def small(estimator: str, params: Params = (), task: Task = "binary") -> Fitted:
    """A model fitted on 400 rows (the size the packing tests use)."""
    return fitted(task, estimator, params, rows=400, seed=3)


def tree() -> Fitted:
    return small("sklearn.tree.DecisionTreeClassifier", (("max_depth", 3),))


def forest() -> Fitted:
    return small("sklearn.ensemble.RandomForestClassifier", (("max_depth", 4), ("n_estimators", 3)))


def boosted() -> Fitted:
    return small("sklearn.ensemble.GradientBoostingRegressor", (("n_estimators", 3),), "regression")


def linear() -> Fitted:
    return small("sklearn.linear_model.LogisticRegression", (("max_iter", 300),))


@functools.cache
def example_rows(n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` fresh churn records in the form the predictors take (the tree's schema: every feature)."""
    schema = tree()[1]
    return rows_from_frame(feature_frame(generate_churn(n, seed=seed), schema), schema)


@functools.cache
def native_kernel() -> tuple[TreeKernel | None, str]:
    """The native tree kernel of this machine (built once, then cached on disk), or None and why not."""
    from shipml.adapters.native import load_kernel
    from shipml.config import NativeSettings

    return load_kernel(NativeSettings())
