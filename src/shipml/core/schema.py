"""FeatureSchema: the columns a model takes, their kinds, ranges, categories and the target."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from shipml.errors import SchemaError

FeatureKind = Literal["numeric", "integer", "categorical", "boolean"]
Task = Literal["binary", "multiclass", "regression"]
_KINDS = ("numeric", "integer", "categorical", "boolean")
_TASKS = ("binary", "multiclass", "regression")
# A numeric target with at most this many distinct integer values is taken as classes.
_MAX_INFERRED_CLASSES = 20


@dataclass(frozen=True)
class Feature:
    """One input column of the model."""

    name: str
    kind: FeatureKind
    nullable: bool = False
    min: float | None = None
    max: float | None = None
    categories: tuple[str, ...] | None = None

    @property
    def is_numeric(self) -> bool:
        """Numeric, integer and boolean features go through the numeric branch."""
        return self.kind != "categorical"


@dataclass(frozen=True)
class Target:
    """The column to predict and the task it defines."""

    name: str
    task: Task
    classes: tuple[str, ...] | None = None


@dataclass(frozen=True)
class FeatureSchema:
    """Everything validation, training and serving need to know about the columns."""

    features: tuple[Feature, ...]
    target: Target
    id_columns: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        names = [f.name for f in self.features]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise SchemaError(f"schema: feature names must be unique, repeated: {', '.join(dupes)}")
        if not self.features:
            raise SchemaError("schema: needs at least one feature")
        if self.target.name in names:
            raise SchemaError(f"schema: target {self.target.name!r} is also listed as a feature")

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def numeric_names(self) -> list[str]:
        return [f.name for f in self.features if f.is_numeric]

    @property
    def categorical_names(self) -> list[str]:
        return [f.name for f in self.features if not f.is_numeric]

    def feature(self, name: str) -> Feature:
        for f in self.features:
            if f.name == name:
                return f
        raise SchemaError(f"schema: no feature named {name!r}")

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for f in out["features"]:
            if f["categories"] is not None:
                f["categories"] = list(f["categories"])
        if out["target"]["classes"] is not None:
            out["target"]["classes"] = list(out["target"]["classes"])
        out["id_columns"] = list(out["id_columns"])
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def sha256(self) -> str:
        """Identity of the schema: same columns and rules give the same digest."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "schema") -> FeatureSchema:
        """Parse the dict form (as written by ``to_dict`` or a user's YAML)."""
        try:
            target_d = data["target"]
            target = Target(
                name=str(target_d["name"]),
                task=_check_choice(target_d["task"], _TASKS, f"{where}.target.task"),
                classes=_opt_tuple(target_d.get("classes")),
            )
            features = tuple(_feature_from_dict(f, f"{where}.features[{i}]") for i, f in enumerate(data["features"]))
            ids = tuple(str(c) for c in data.get("id_columns") or ())
        except KeyError as exc:
            raise SchemaError(f"{where}: required key missing: {exc.args[0]}") from None
        except (TypeError, AttributeError):
            raise SchemaError(f"{where}: malformed schema (expected mapping with features and target)") from None
        return cls(features=features, target=target, id_columns=ids)

    @classmethod
    def infer(
        cls,
        df: pd.DataFrame,
        target: str,
        task: Task | None = None,
        id_columns: tuple[str, ...] = (),
        drop_columns: tuple[str, ...] = (),
    ) -> FeatureSchema:
        """A schema read off ``df``: kinds from dtypes, observed ranges and categories."""
        if target not in df.columns:
            raise SchemaError(f"target column {target!r} not found; columns are: {', '.join(map(str, df.columns))}")
        features = []
        for name in df.columns:
            if name == target or name in id_columns or name in drop_columns:
                continue
            features.append(_infer_feature(str(name), df[name]))
        y = df[target]
        task = task or _infer_task(y)
        classes = None if task == "regression" else tuple(sorted(str(v) for v in y.dropna().unique()))
        return cls(features=tuple(features), target=Target(target, task, classes), id_columns=tuple(id_columns))


def _infer_feature(name: str, s: pd.Series) -> Feature:
    nullable = bool(s.isna().any())
    if pd.api.types.is_bool_dtype(s):
        return Feature(name, "boolean", nullable)
    if pd.api.types.is_numeric_dtype(s):
        values = s.dropna()
        whole = bool(len(values) and np.all(np.equal(np.mod(values, 1), 0)))
        lo = float(values.min()) if len(values) else None
        hi = float(values.max()) if len(values) else None
        return Feature(name, "integer" if whole else "numeric", nullable, lo, hi)
    cats = tuple(sorted(str(v) for v in s.dropna().unique()))
    return Feature(name, "categorical", nullable, categories=cats)


def _infer_task(y: pd.Series) -> Task:
    values = y.dropna()
    distinct = values.nunique()
    if distinct == 2:
        return "binary"
    if pd.api.types.is_float_dtype(values) and not np.all(np.equal(np.mod(values, 1), 0)):
        return "regression"
    if pd.api.types.is_numeric_dtype(values) and distinct > _MAX_INFERRED_CLASSES:
        return "regression"
    return "multiclass"


def _feature_from_dict(d: dict[str, Any], where: str) -> Feature:
    kind = _check_choice(d["kind"], _KINDS, f"{where}.kind")
    cats = _opt_tuple(d.get("categories"))
    if kind == "categorical" and cats is not None and not cats:
        raise SchemaError(f"{where}.categories: must not be empty")
    lo, hi = d.get("min"), d.get("max")
    if lo is not None and hi is not None and float(lo) > float(hi):
        raise SchemaError(f"{where}: min must be <= max, got min={lo} max={hi}")
    return Feature(
        name=str(d["name"]),
        kind=kind,
        nullable=bool(d.get("nullable", False)),
        min=None if lo is None else float(lo),
        max=None if hi is None else float(hi),
        categories=cats,
    )


def _check_choice(value: Any, choices: tuple[str, ...], where: str) -> Any:
    if value not in choices:
        raise SchemaError(f"{where}: must be one of {', '.join(choices)}, got {value!r}")
    return value


def _opt_tuple(value: Any) -> tuple[str, ...] | None:
    return None if value is None else tuple(str(v) for v in value)
