"""Compile a fitted shipml Pipeline (ColumnTransformer + estimator) into a FastPredictor."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from scipy.special import expit
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import (
    ExtraTreesClassifier,
    ExtraTreesRegressor,
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.linear_model import ElasticNet, Lasso, LinearRegression, LogisticRegression, Ridge
from sklearn.pipeline import Pipeline
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor
from sklearn.utils.extmath import softmax

from shipml.core.fast.preprocess import Preprocess, Unsupported
from shipml.core.fast.trees import LockstepTrees, TreeKernel
from shipml.core.predictor import Outputs
from shipml.core.records import Value
from shipml.core.schema import FeatureSchema

Model = Callable[[np.ndarray], np.ndarray]


class FastPredictor:
    """Rows (dicts) -> preprocessing in numpy -> the compiled model. No DataFrame anywhere."""

    name = "fast"

    def __init__(
        self, preprocess: Preprocess, model: Model, classes: tuple[Any, ...], kind: str, backend: str = "numpy"
    ) -> None:
        self.preprocess = preprocess
        self.backend = backend
        self.model = model
        self.classes = classes
        self.kind = kind
        self.classification = bool(classes)

    def predict(self, rows: Sequence[Mapping[str, Value]]) -> Outputs:
        out = self.model(self.preprocess.transform(rows))
        if self.classification:
            return Outputs(self.classes, out, None)
        return Outputs((), None, out)


def compile_pipeline(pipeline: Any, schema: FeatureSchema, kernel: TreeKernel | None = None) -> FastPredictor:
    """The fast form of ``pipeline``; ``Unsupported`` says why there is none. Tree ensembles are summed
    by ``kernel`` when one is given (its ``backend`` is then the kernel's name), else in numpy."""
    if not isinstance(pipeline, Pipeline) or len(pipeline.steps) != 2:
        raise Unsupported("not a shipml Pipeline(preprocess, model)")
    pre, est = pipeline.steps[0][1], pipeline.steps[1][1]
    if not isinstance(pre, ColumnTransformer):
        raise Unsupported(f"preprocessing step is {type(pre).__name__}, not a ColumnTransformer")
    preprocess = Preprocess(pre)
    known = set(schema.names)
    if not set(preprocess.columns) <= known:
        raise Unsupported("the preprocessing reads columns outside the schema")
    model, kind, uses_kernel = _compile_model(est, kernel)
    classes = (
        tuple(c.item() if hasattr(c, "item") else c for c in getattr(est, "classes_", ()))
        if schema.target.task != "regression"
        else ()
    )
    backend = kernel.name if (kernel is not None and uses_kernel) else "numpy"
    return FastPredictor(preprocess, model, classes, kind, backend)


def _compile_model(est: Any, kernel: TreeKernel | None) -> tuple[Model, str, bool]:
    """The model as a function of the preprocessed matrix, its kind, and whether ``kernel`` is used."""
    kind = type(est).__name__
    if isinstance(est, RandomForestClassifier | ExtraTreesClassifier):
        trees = LockstepTrees([e.tree_ for e in est.estimators_], est.n_classes_, kernel)
        n = float(len(est.estimators_))
        return (lambda X: trees.summed(X) / n), kind, True
    if isinstance(est, RandomForestRegressor | ExtraTreesRegressor):
        trees = LockstepTrees([e.tree_ for e in est.estimators_], 1, kernel)
        n = float(len(est.estimators_))
        return (lambda X: trees.summed(X)[:, 0] / n), kind, True
    if isinstance(est, DecisionTreeClassifier):
        single = LockstepTrees([est.tree_], est.n_classes_, kernel)
        return (lambda X: single.summed(X)), kind, True
    if isinstance(est, DecisionTreeRegressor):
        single = LockstepTrees([est.tree_], 1, kernel)
        return (lambda X: single.summed(X)[:, 0]), kind, True
    if isinstance(est, GradientBoostingClassifier | GradientBoostingRegressor):
        return _gradient_boosting(est, kernel), kind, True
    if isinstance(est, LogisticRegression):
        return _logistic(est), kind, False
    if isinstance(est, LinearRegression | Ridge | Lasso | ElasticNet):
        coef = np.asarray(est.coef_, dtype=np.float64)
        if coef.ndim != 1:
            raise Unsupported("multi-output linear regression")
        intercept = est.intercept_
        return (lambda X: X @ coef + intercept), kind, False
    raise Unsupported(f"no fast path for {kind}")


def _gradient_boosting(est: Any, kernel: TreeKernel | None) -> Model:
    init = est.init_
    if not (init == "zero" or type(init).__name__ in ("DummyClassifier", "DummyRegressor")):
        raise Unsupported("gradient boosting with a custom init estimator")
    per_iteration = est.estimators_.shape[1]
    stages = [
        LockstepTrees([est.estimators_[i, k].tree_ for i in range(est.estimators_.shape[0])], 1, kernel)
        for k in range(per_iteration)
    ]
    # the init prediction of a prior/zero init is the same for every row
    start = est._raw_predict_init(np.zeros((1, est.n_features_in_), dtype=np.float32))[0]
    lr = float(est.learning_rate)
    classify = hasattr(est, "classes_")

    def raw(X: np.ndarray) -> np.ndarray:
        columns = []
        for k, trees in enumerate(stages):
            first = np.full((X.shape[0], 1), start[k], dtype=np.float64)
            columns.append(trees.summed(X, scale=lr, start=first)[:, 0])
        return np.stack(columns, axis=1)

    if classify:
        return lambda X: est._loss.predict_proba(raw(X).ravel() if per_iteration == 1 else raw(X))
    return lambda X: raw(X)[:, 0]


def _logistic(est: Any) -> Model:
    coef_t = np.asarray(est.coef_, dtype=np.float64).T
    intercept = est.intercept_
    if len(est.classes_) <= 2:

        def binary(X: np.ndarray) -> np.ndarray:
            scores = X @ coef_t + intercept
            p = expit(scores.reshape(-1))
            return np.stack([1 - p, p], axis=1)

        return binary
    return lambda X: softmax(X @ coef_t + intercept, copy=False)
