"""The sklearn Pipeline a config describes: preprocessing by feature kind, then the estimator."""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from sklearn.base import BaseEstimator, is_classifier, is_regressor
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from shipml.core.schema import FeatureSchema, Task
from shipml.errors import TrainingError


def import_estimator(path: str, where: str = "model.estimator") -> type[BaseEstimator]:
    """The estimator class named by ``package.module.ClassName``."""
    module_name, _, class_name = path.rpartition(".")
    if not module_name:
        raise TrainingError(
            f"{where}: expected an import path like sklearn.ensemble.RandomForestClassifier, got {path!r}"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        hint = ""
        if module_name.split(".")[0] in ("lightgbm", "xgboost"):
            hint = f" (install the extra: pip install 'shipml[{module_name.split('.')[0]}]')"
        raise TrainingError(f"{where}: cannot import {module_name!r}: {exc.msg}{hint}") from None
    cls = getattr(module, class_name, None)
    if not inspect.isclass(cls) or not hasattr(cls, "fit"):
        raise TrainingError(f"{where}: {module_name!r} has no estimator class {class_name!r}")
    return cls


def make_estimator(path: str, params: dict[str, Any], task: Task, seed: int) -> BaseEstimator:
    """An unfitted estimator, seeded when it takes a ``random_state``, checked against the task."""
    cls = import_estimator(path)
    accepted = inspect.signature(cls.__init__).parameters
    unknown = sorted(p for p in params if p not in accepted)
    if unknown and not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values()):
        raise TrainingError(f"model.params: {cls.__name__} has no parameter(s) {', '.join(unknown)}")
    kwargs = dict(params)
    if "random_state" in accepted and "random_state" not in kwargs:
        kwargs["random_state"] = seed
    try:
        estimator = cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise TrainingError(f"model.params: {cls.__name__} refused the parameters: {exc}") from None
    if task == "regression" and not is_regressor(estimator):
        raise TrainingError(f"model.estimator: {path} is not a regressor, but model.task is regression")
    if task != "regression" and not is_classifier(estimator):
        raise TrainingError(f"model.estimator: {path} is not a classifier, but model.task is {task}")
    return estimator


def build_pipeline(schema: FeatureSchema, estimator: BaseEstimator) -> Pipeline:
    """Numeric: median imputer + scaler; categorical: constant imputer + one-hot (unknown ignored)."""
    transformers: list[tuple[str, Any, list[str]]] = []
    if schema.numeric_names:
        numeric = Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())])
        transformers.append(("numeric", numeric, schema.numeric_names))
    if schema.categorical_names:
        categorical = Pipeline(
            [
                ("impute", SimpleImputer(strategy="constant", fill_value="__missing__")),
                ("onehot", OneHotEncoder(handle_unknown="ignore", sparse_output=False)),
            ]
        )
        transformers.append(("categorical", categorical, schema.categorical_names))
    preprocess = ColumnTransformer(transformers, remainder="drop", verbose_feature_names_out=False)
    return Pipeline([("preprocess", preprocess), ("model", estimator)])
