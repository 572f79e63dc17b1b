"""Compile a fitted shipml Pipeline (ColumnTransformer + estimator) into a FastPredictor.

This is the only module of the fast path that reads sklearn objects; what it
produces (``model.py``) holds plain arrays.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import (
    ExtraTreesClassifier,
    ExtraTreesRegressor,
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.impute import SimpleImputer
from sklearn.linear_model import ElasticNet, Lasso, LinearRegression, LogisticRegression, Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

from shipml.core.fast.model import Boosting, FastPredictor, Linear, Spec, TreeMean
from shipml.core.fast.preprocess import CategoricalBlock, NumericBlock, Preprocess, Unsupported
from shipml.core.fast.trees import TreeArrays, TreeKernel
from shipml.core.schema import FeatureSchema


def compile_pipeline(pipeline: Any, schema: FeatureSchema, kernel: TreeKernel | None = None) -> FastPredictor:
    """The fast form of ``pipeline``; ``Unsupported`` says why there is none. Tree ensembles are summed
    by ``kernel`` when one is given (its ``backend`` is then the kernel's name), else in numpy."""
    if not isinstance(pipeline, Pipeline) or len(pipeline.steps) != 2:
        raise Unsupported("not a shipml Pipeline(preprocess, model)")
    pre, est = pipeline.steps[0][1], pipeline.steps[1][1]
    if not isinstance(pre, ColumnTransformer):
        raise Unsupported(f"preprocessing step is {type(pre).__name__}, not a ColumnTransformer")
    preprocess = _preprocess(pre)
    if not set(preprocess.columns) <= set(schema.names):
        raise Unsupported("the preprocessing reads columns outside the schema")
    spec = _model_spec(est, preprocess)
    classes = (
        tuple(c.item() if hasattr(c, "item") else c for c in getattr(est, "classes_", ()))
        if schema.target.task != "regression"
        else ()
    )
    return FastPredictor(preprocess, spec, classes, type(est).__name__, kernel)


def _preprocess(transformer: ColumnTransformer) -> Preprocess:
    if transformer.remainder != "drop" and not _all_columns_used(transformer):
        raise Unsupported("ColumnTransformer remainder other than drop")
    blocks: list[NumericBlock | CategoricalBlock] = []
    for name, step, columns in transformer.transformers_:
        if name == "remainder" or step == "drop":
            continue
        steps = list(step.named_steps.values()) if isinstance(step, Pipeline) else [step]
        cols = [str(c) for c in columns]
        if any(isinstance(s, OneHotEncoder) for s in steps):
            blocks.append(_categorical(cols, steps))
        else:
            blocks.append(_numeric(cols, steps))
    return Preprocess(blocks)


def _numeric(columns: list[str], steps: list[Any]) -> NumericBlock:
    fill = mean = scale = None
    for step in steps:
        if isinstance(step, SimpleImputer):
            if step.add_indicator or not np.all(np.isfinite(step.statistics_.astype(np.float64))):
                raise Unsupported("numeric SimpleImputer with indicators or undefined statistics")
            if len(step.statistics_) != len(columns):
                raise Unsupported("numeric SimpleImputer dropped an all-missing column")
            fill = step.statistics_.astype(np.float64)
        elif isinstance(step, StandardScaler):
            mean = step.mean_ if step.with_mean else None
            scale = step.scale_ if step.with_std else None
        else:
            raise Unsupported(f"numeric step {type(step).__name__}")
    return NumericBlock(columns, fill, mean, scale)


def _categorical(columns: list[str], steps: list[Any]) -> CategoricalBlock:
    fill = None
    encoder = None
    for step in steps:
        if isinstance(step, SimpleImputer):
            if step.add_indicator:
                raise Unsupported("categorical SimpleImputer with indicators")
            fill = [_plain(v) for v in step.statistics_]
        elif isinstance(step, OneHotEncoder):
            encoder = step
        else:
            raise Unsupported(f"categorical step {type(step).__name__}")
    if encoder is None:
        raise Unsupported("categorical columns without a OneHotEncoder")
    if encoder.handle_unknown != "ignore" or encoder.drop is not None:
        raise Unsupported("OneHotEncoder must have handle_unknown='ignore' and no drop")
    if getattr(encoder, "_infrequent_enabled", False):
        raise Unsupported("OneHotEncoder with infrequent categories")
    categories = []
    for cats in encoder.categories_:
        if any(isinstance(c, float) and np.isnan(c) for c in cats):
            raise Unsupported("OneHotEncoder with NaN as a category")
        categories.append([_plain(c) for c in cats])
    return CategoricalBlock(columns, fill, categories)


def _plain(value: Any) -> Any:
    """A numpy scalar as the Python value a JSON record carries (the packed form is JSON)."""
    return value.item() if hasattr(value, "item") else value


def _model_spec(est: Any, preprocess: Preprocess) -> Spec:
    if isinstance(est, RandomForestClassifier | ExtraTreesClassifier):
        return TreeMean([e.tree_ for e in est.estimators_], int(est.n_classes_), float(len(est.estimators_)), False)
    if isinstance(est, RandomForestRegressor | ExtraTreesRegressor):
        return TreeMean([e.tree_ for e in est.estimators_], 1, float(len(est.estimators_)), True)
    if isinstance(est, DecisionTreeClassifier):
        return TreeMean([est.tree_], int(est.n_classes_), 1.0, False)
    if isinstance(est, DecisionTreeRegressor):
        return TreeMean([est.tree_], 1, 1.0, True)
    if isinstance(est, GradientBoostingClassifier | GradientBoostingRegressor):
        return _gradient_boosting(est)
    if isinstance(est, HistGradientBoostingClassifier | HistGradientBoostingRegressor):
        return _hist_gradient_boosting(est, preprocess)
    if isinstance(est, LogisticRegression):
        coef_t = np.asarray(est.coef_, dtype=np.float64).T
        return Linear(coef_t, np.asarray(est.intercept_), "binary" if len(est.classes_) <= 2 else "softmax")
    if isinstance(est, LinearRegression | Ridge | Lasso | ElasticNet):
        coef = np.asarray(est.coef_, dtype=np.float64)
        if coef.ndim != 1:
            raise Unsupported("multi-output linear regression")
        return Linear(coef, np.asarray(est.intercept_), "identity")
    raise Unsupported(f"no fast path for {type(est).__name__}")


def _gradient_boosting(est: Any) -> Boosting:
    init = est.init_
    if not (init == "zero" or type(init).__name__ in ("DummyClassifier", "DummyRegressor")):
        raise Unsupported("gradient boosting with a custom init estimator")
    n_stages, per_iteration = est.estimators_.shape
    stages = [[est.estimators_[i, k].tree_ for i in range(n_stages)] for k in range(per_iteration)]
    # the init prediction of a prior/zero init is the same for every row
    start = np.asarray(est._raw_predict_init(np.zeros((1, est.n_features_in_), dtype=np.float32))[0])
    link = "identity" if not hasattr(est, "classes_") else ("binary" if per_iteration == 1 else "softmax")
    return Boosting(stages, start, float(est.learning_rate), link)


def _hist_gradient_boosting(est: Any, preprocess: Preprocess) -> Boosting:
    """sklearn adds each tree's value to the baseline, comparing float64 rows with ``num_threshold``;
    a missing value follows ``missing_go_to_left``, which the walk here does not do, so every numeric
    column must be imputed before the model (shipml's pipelines always are)."""
    if any(isinstance(b, NumericBlock) and b.fill is None for b in preprocess.blocks):
        raise Unsupported("HistGradientBoosting behind numeric columns without an imputer")
    link_name = type(est._loss.link).__name__
    classify = hasattr(est, "classes_")
    if not classify and link_name != "IdentityLink":
        raise Unsupported(f"HistGradientBoostingRegressor with the {est.loss!r} loss")
    per_iteration = est.n_trees_per_iteration_
    stages: list[list[TreeArrays]] = [[] for _ in range(per_iteration)]
    for iteration in est._predictors:
        for k, predictor in enumerate(iteration):
            nodes = predictor.nodes
            if np.any(nodes["is_categorical"]):
                raise Unsupported("HistGradientBoosting with categorical splits")
            leaf = nodes["is_leaf"].astype(bool)
            stages[k].append(
                TreeArrays(
                    np.where(leaf, -1, nodes["left"].astype(np.int64)),
                    np.where(leaf, -1, nodes["right"].astype(np.int64)),
                    np.where(leaf, 0, nodes["feature_idx"].astype(np.int64)),
                    nodes["num_threshold"].astype(np.float64),
                    nodes["value"].astype(np.float64)[:, None, None],
                )
            )
    start = 0.0 + np.asarray(est._baseline_prediction, dtype=np.float64).reshape(-1)  # zeros + baseline, as sklearn
    link = "identity" if not classify else ("binary" if per_iteration == 1 else "softmax")
    return Boosting(stages, start, None, link, round32=False)


def _all_columns_used(transformer: ColumnTransformer) -> bool:
    return all(name != "remainder" or len(cols) == 0 for name, _, cols in transformer.transformers_)
