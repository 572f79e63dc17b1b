"""Data validation: the FeatureSchema as a pandera schema, plus quality checks on top.

The result is a ``ValidationReport``: every failed check with the column, the
rule, how many rows fail it and up to five example values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import numpy as np
import pandas as pd

from shipml.core.quiet_imports import pyspark_left_out
from shipml.core.schema import Feature, FeatureSchema, Target

with pyspark_left_out():  # pandera sets SPARK_LOCAL_IP and imports pyspark.pandas when pyspark is installed
    import pandera.pandas as pa

Severity = Literal["error", "warning"]
Scope = Literal["record", "dataset"]
RecordRule = Literal[
    # a record breaks these on its own (the server's RecordValidator checks the same on one record)
    "missing_column",
    "not_nullable",
    "dtype",
    "whole_number",
    "finite",
    "min",
    "max",
    "allowed_categories",
    "schema_check",
    "missing_target",
    "target_null",
    "target_not_numeric",
    "unknown_class",
    "unexpected_column",
]
DatasetRule = Literal[
    # properties of the data set as a whole: for training data, not for a batch to score
    "binary_target_classes",
    "multiclass_target_classes",
    "class_imbalance",
    "all_null",
    "null_rate",
    "constant",
    "duplicate_rows",
]
Rule = RecordRule | DatasetRule
DATASET_RULES: frozenset[Rule] = frozenset(get_args(DatasetRule))
MAX_EXAMPLES = 5


@dataclass(frozen=True)
class QualityThresholds:
    """The numbers the data-set checks compare against (from ``ValidationSettings``, which owns the defaults)."""

    max_null_rate: float
    max_duplicate_rate: float
    min_class_rate: float
    allow_constant_columns: bool


@dataclass(frozen=True)
class ValidationIssue:
    """One failed check: ``rule`` by name, and the bound (or expected type) it compares against in ``limit``."""

    column: str
    rule: Rule
    failing: int
    examples: tuple[str, ...] = ()
    severity: Severity = "error"
    limit: float | str | None = None

    @property
    def scope(self) -> Scope:
        """``record``: some rows break it on their own; ``dataset``: a property of the whole data set."""
        return "dataset" if self.rule in DATASET_RULES else "record"

    @property
    def label(self) -> str:
        """The rule as people read it: ``max 120.0``, ``null_rate > 0.2``, ``dtype float64``."""
        if self.limit is None:
            return self.rule
        if isinstance(self.limit, str) or self.rule in ("min", "max"):
            return f"{self.rule} {self.limit}"
        if self.rule == "class_imbalance":
            return f"class_imbalance (rarest < {self.limit:g})"
        op = {"multiclass_target_classes": "<", "binary_target_classes": "!="}.get(self.rule, ">")
        return f"{self.rule} {op} {self.limit:g}"


@dataclass(frozen=True)
class ValidationReport:
    """What validation found in one data set."""

    source: str
    rows: int
    columns: int
    issues: tuple[ValidationIssue, ...] = field(default=())

    @property
    def passed(self) -> bool:
        return not any(i.severity == "error" for i in self.issues)

    @property
    def errors(self) -> list[ValidationIssue]:
        return [i for i in self.issues if i.severity == "error"]

    def summary(self) -> str:
        """One line naming what failed, for the end of a refusal."""
        if self.passed:
            return f"{self.source}: {self.rows} rows passed validation"
        shown = "; ".join(f"{i.column}: {i.label} ({i.failing} rows)" for i in self.errors[:3])
        more = f"; and {len(self.errors) - 3} more" if len(self.errors) > 3 else ""
        return f"{self.source}: {len(self.errors)} check(s) failed: {shown}{more}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "rows": self.rows,
            "columns": self.columns,
            "passed": self.passed,
            "issues": [
                {
                    "column": i.column,
                    "rule": i.label,
                    "failing": i.failing,
                    "examples": list(i.examples),
                    "severity": i.severity,
                }
                for i in self.issues
            ],
        }


def validate_frame(
    df: pd.DataFrame,
    schema: FeatureSchema,
    *,
    source: str,
    thresholds: QualityThresholds | None = None,
    require_target: bool = True,
    ignore_columns: tuple[str, ...] = (),
) -> ValidationReport:
    """Check ``df`` against ``schema`` and the quality thresholds; never raises on bad data.

    Without ``thresholds``, the data-set rules are not checked (a batch to score: its records only).
    """
    issues = _schema_issues(df, schema)
    issues += _target_issues(df, schema, thresholds) if require_target else []
    issues += _quality_issues(df, schema, thresholds) if thresholds is not None else []
    issues += _skew_issues(df, schema, ignore_columns)
    return ValidationReport(source=source, rows=len(df), columns=df.shape[1], issues=tuple(issues))


def pandera_schema(schema: FeatureSchema) -> pa.DataFrameSchema:
    """The pandera form of the feature columns (compiled once per schema)."""
    return pa.DataFrameSchema({f.name: _column(f) for f in schema.features}, strict=False)


def _column(f: Feature) -> pa.Column:
    """The feature's rules, written to agree with ``RecordValidator`` value by value (tested with hypothesis):
    values are type-checked as they are, never coerced first ("5" or true is no number, 1 is no boolean)."""
    if f.kind == "categorical":
        checks = [pa.Check(_texts, name="dtype")]
        if f.categories is not None:
            allowed = list(f.categories)
            checks.append(pa.Check(lambda s, a=allowed: ~_texts(s) | s.astype(str).isin(a), name="allowed_categories"))
        return pa.Column(None, checks=checks, nullable=f.nullable, required=True)
    if f.kind == "boolean":
        return pa.Column(None, checks=[pa.Check(_booleans, name="dtype")], nullable=f.nullable, required=True)
    checks = [pa.Check(_numbers, name="dtype")]
    # the range checks see NaN for what is not a number (its dtype failure says it all)
    if f.kind == "integer":
        checks.append(pa.Check(lambda s: _passing(_as_float(s) % 1 == 0, s), name="whole_number"))
    if f.min is not None:
        checks.append(pa.Check(lambda s, lo=f.min: _passing(_as_float(s) >= lo, s), name="min"))
    if f.max is not None:
        checks.append(pa.Check(lambda s, hi=f.max: _passing(_as_float(s) <= hi, s), name="max"))
    checks.append(pa.Check(lambda s: _passing(np.isfinite(_as_float(s)), s), name="finite"))
    return pa.Column(None, checks=checks, nullable=f.nullable, required=True)


def _null(v: object) -> bool:
    return v is None or v is pd.NA or (isinstance(v, float | np.floating) and bool(np.isnan(v)))


def _is_number(v: object) -> bool:
    return isinstance(v, int | float | np.integer | np.floating) and not isinstance(v, bool | np.bool_)


def _elementwise(s: pd.Series, test: Any) -> pd.Series:
    return s.map(lambda v: _null(v) or test(v)).astype(bool)


def _numbers(s: pd.Series) -> pd.Series:
    if pd.api.types.is_bool_dtype(s):
        return pd.Series(False, index=s.index)
    if pd.api.types.is_numeric_dtype(s):
        return pd.Series(True, index=s.index)
    return _elementwise(s, _is_number)


def _booleans(s: pd.Series) -> pd.Series:
    if pd.api.types.is_bool_dtype(s):
        return pd.Series(True, index=s.index)
    return _elementwise(s, lambda v: isinstance(v, bool | np.bool_))


def _texts(s: pd.Series) -> pd.Series:
    """Strings, or whole numbers (a CSV's codes 1, 2, 3; a JSON client's ints): what the server takes."""
    if isinstance(s.dtype, pd.StringDtype):  # strings or missing by construction: no value to look at
        return pd.Series(True, index=s.index)
    return _elementwise(s, lambda v: isinstance(v, str | int | np.integer) and not isinstance(v, bool | np.bool_))


def _as_float(s: pd.Series) -> pd.Series:
    """The numbers of ``s`` as float64, NaN for anything else (nulls, and values of another type)."""
    if pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s):
        return pd.Series(s.to_numpy(dtype="float64", na_value=np.nan), index=s.index)
    return s.map(lambda v: _float(v) if _is_number(v) and not _null(v) else np.nan).astype("float64")


def _float(v: Any) -> float:
    """``float(v)``; an integer too large for a float is an infinity (not finite: refused, as by the server)."""
    try:
        return float(v)
    except OverflowError:
        return math.inf if v > 0 else -math.inf


def _passing(ok: pd.Series, s: pd.Series) -> pd.Series:
    """A range check passes where the value is null or no number (reported by ``dtype``), else as ``ok``."""
    return ok | _as_float(s).isna()


_RULE_NAMES: dict[str, Rule] = {
    "column_in_dataframe": "missing_column",
    "not_nullable": "not_nullable",
    "dtype": "dtype",
    "min": "min",
    "max": "max",
    "whole_number": "whole_number",
    "finite": "finite",
    "allowed_categories": "allowed_categories",
}
_EXPECTED_TYPE = {"numeric": "number", "integer": "number", "categorical": "text", "boolean": "bool"}


def _rule(check: str, feature: Feature | None) -> tuple[Rule, float | str | None]:
    """A pandera check's name as a rule, and the bound or type it compares against."""
    rule = _RULE_NAMES.get(check)
    if rule is None:
        return "schema_check", check
    if feature is None:
        return rule, None
    if rule == "dtype":
        return rule, _EXPECTED_TYPE[feature.kind]
    return rule, feature.min if rule == "min" else feature.max if rule == "max" else None


def _schema_issues(df: pd.DataFrame, schema: FeatureSchema) -> list[ValidationIssue]:
    try:
        pandera_schema(schema).validate(df, lazy=True)
    except pa.errors.SchemaErrors as exc:
        cases = exc.failure_cases
    else:
        return []
    bad_dtype = set(cases.loc[cases["check"].astype(str) == "dtype", "column"])
    features = {f.name: f for f in schema.features}
    issues = []
    for (column, check), group in cases.groupby(["column", "check"], dropna=False, sort=False):
        column_name = str(group["failure_case"].iloc[0]) if pd.isna(column) else str(column)
        feature = features.get(column_name)
        rule, limit = _rule(str(check), feature)
        if column_name in bad_dtype and rule != "dtype":
            continue  # a range check on a column that is not numeric says nothing more
        if rule == "missing_column":
            issues.append(ValidationIssue(column_name, rule, len(df)))
            continue
        numeric = feature is not None and feature.kind in ("numeric", "integer")
        examples = _examples(group["failure_case"], numeric)
        issues.append(ValidationIssue(column_name, rule, len(group), examples, limit=limit))
    return issues


def _examples(values: pd.Series, numeric: bool = False) -> tuple[str, ...]:
    """Up to five distinct values as text; the numbers of a numeric feature as floats (``400.0``), as the
    model reads them."""
    seen: list[str] = []
    for v in values:
        text = "null" if _null(v) else str(_float(v)) if numeric and _is_number(v) else str(v)
        if text not in seen:
            seen.append(text)
        if len(seen) == MAX_EXAMPLES:
            break
    return tuple(seen)


def _target_issues(df: pd.DataFrame, schema: FeatureSchema, limits: QualityThresholds | None) -> list[ValidationIssue]:
    t = schema.target
    if t.name not in df.columns:
        return [ValidationIssue(t.name, "missing_target", len(df))]
    y = df[t.name]
    issues = []
    nulls = int(y.isna().sum())
    if nulls:
        issues.append(ValidationIssue(t.name, "target_null", nulls, ("null",)))
    values = y.dropna()
    if t.task == "regression":
        numeric = pd.to_numeric(values, errors="coerce")
        bad = values[numeric.isna()]
        if len(bad):
            issues.append(ValidationIssue(t.name, "target_not_numeric", len(bad), _examples(bad)))
        return issues
    return issues + _class_issues(values.astype(str), t, limits)


def _class_issues(labels: pd.Series, t: Target, limits: QualityThresholds | None) -> list[ValidationIssue]:
    """The checks of a classification target's labels (as text): class count, known classes, balance."""
    issues: list[ValidationIssue] = []
    distinct = labels.nunique()
    if t.task == "binary" and distinct != 2:
        issues.append(
            ValidationIssue(t.name, "binary_target_classes", len(labels), _examples(labels.drop_duplicates()), limit=2)
        )
    if t.task == "multiclass" and distinct < 3:
        issues.append(
            ValidationIssue(
                t.name, "multiclass_target_classes", len(labels), _examples(labels.drop_duplicates()), limit=3
            )
        )
    if t.classes is not None:
        unknown = labels[~labels.isin(t.classes)]
        if len(unknown):
            issues.append(ValidationIssue(t.name, "unknown_class", len(unknown), _examples(unknown)))
    if limits is not None and len(labels) and distinct >= 2:
        rates = labels.value_counts(normalize=True)
        if rates.min() < limits.min_class_rate:
            rare = rates.idxmin()
            issues.append(
                ValidationIssue(
                    t.name,
                    "class_imbalance",
                    int(labels.eq(str(rare)).sum()),
                    (f"{rare}: {rates.min():.2%}",),
                    limit=limits.min_class_rate,
                )
            )
    return issues


def _quality_issues(df: pd.DataFrame, schema: FeatureSchema, limits: QualityThresholds) -> list[ValidationIssue]:
    issues = []
    n = len(df)
    present = [f for f in schema.features if f.name in df.columns]
    for f in present:
        s = df[f.name]
        nulls = int(s.isna().sum())
        if n and nulls == n:
            issues.append(ValidationIssue(f.name, "all_null", nulls, ("null",)))
            continue
        if n and nulls / n > limits.max_null_rate:
            issues.append(
                ValidationIssue(f.name, "null_rate", nulls, (f"{nulls / n:.1%} null",), limit=limits.max_null_rate)
            )
        if not limits.allow_constant_columns and n > 1 and s.nunique(dropna=True) == 1:
            issues.append(ValidationIssue(f.name, "constant", n, (str(s.dropna().iloc[0]),)))
    if n:
        cols = [f.name for f in present] + ([schema.target.name] if schema.target.name in df.columns else [])
        dupes = int(df.duplicated(subset=cols).sum()) if cols else 0
        if dupes / n > limits.max_duplicate_rate:
            issues.append(
                ValidationIssue(
                    "*", "duplicate_rows", dupes, (f"{dupes / n:.1%} duplicated",), limit=limits.max_duplicate_rate
                )
            )
    return issues


def _skew_issues(df: pd.DataFrame, schema: FeatureSchema, ignore: tuple[str, ...]) -> list[ValidationIssue]:
    """Columns the model was not trained on: ignored, but a sign of train/serve skew."""
    known = set(schema.names) | set(schema.id_columns) | {schema.target.name} | set(ignore)
    extra = [str(c) for c in df.columns if c not in known]
    return [ValidationIssue(c, "unexpected_column", len(df), severity="warning") for c in extra]
