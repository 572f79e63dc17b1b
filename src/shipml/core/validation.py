"""Data validation: the FeatureSchema as a pandera schema, plus quality checks on top.

The result is a ``ValidationReport``: every failed check with the column, the
rule, how many rows fail it and up to five example values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
import pandera.pandas as pa

from shipml.core.schema import Feature, FeatureSchema

Severity = Literal["error", "warning"]
MAX_EXAMPLES = 5


@dataclass(frozen=True)
class QualityThresholds:
    """The numbers the quality checks compare against (from ``ValidationSettings``)."""

    max_null_rate: float = 0.2
    max_duplicate_rate: float = 0.05
    min_class_rate: float = 0.01
    allow_constant_columns: bool = False


@dataclass(frozen=True)
class ValidationIssue:
    """One failed check."""

    column: str
    rule: str
    failing: int
    examples: tuple[str, ...] = ()
    severity: Severity = "error"


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
        shown = "; ".join(f"{i.column}: {i.rule} ({i.failing} rows)" for i in self.errors[:3])
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
                    "rule": i.rule,
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
    """Check ``df`` against ``schema`` and the quality thresholds; never raises on bad data."""
    limits = thresholds or QualityThresholds()
    issues = _schema_issues(df, schema)
    issues += _target_issues(df, schema, limits) if require_target else []
    issues += _quality_issues(df, schema, limits)
    issues += _skew_issues(df, schema, ignore_columns)
    return ValidationReport(source=source, rows=len(df), columns=df.shape[1], issues=tuple(issues))


def pandera_schema(schema: FeatureSchema) -> pa.DataFrameSchema:
    """The pandera form of the feature columns (compiled once per schema)."""
    return pa.DataFrameSchema({f.name: _column(f) for f in schema.features}, strict=False)


def _column(f: Feature) -> pa.Column:
    checks: list[pa.Check] = []
    if f.kind == "categorical":
        if f.categories is not None:
            allowed = list(f.categories)
            checks.append(pa.Check(lambda s, a=allowed: s.isna() | s.astype(str).isin(a), name="allowed_categories"))
        return pa.Column(None, checks=checks, nullable=f.nullable, required=True)
    if f.kind == "integer":
        checks.append(pa.Check(lambda s: s.isna() | (s % 1 == 0), name="whole_number"))
    if f.min is not None:
        checks.append(pa.Check.ge(f.min))
    if f.max is not None:
        checks.append(pa.Check.le(f.max))
    if f.kind in ("numeric", "integer"):
        checks.append(pa.Check(lambda s: s.isna() | np.isfinite(s), name="finite"))
    dtype = "bool" if f.kind == "boolean" else "float64"
    return pa.Column(dtype, checks=checks, nullable=f.nullable, coerce=True, required=True)


_RULE_NAMES = {
    "column_in_dataframe": "missing_column",
    "not_nullable": "not_nullable",
    "greater_than_or_equal_to": "min",
    "less_than_or_equal_to": "max",
}


def _rule_name(check: str) -> str:
    head = check.split("(", 1)[0]
    if head == "coerce_dtype":
        return "dtype " + check[len(head) :].strip("()'")
    name = _RULE_NAMES.get(head, head)
    return f"{name} {check[len(head) + 1 : -1]}" if name in ("min", "max") else name


def _schema_issues(df: pd.DataFrame, schema: FeatureSchema) -> list[ValidationIssue]:
    try:
        pandera_schema(schema).validate(df, lazy=True)
    except pa.errors.SchemaErrors as exc:
        cases = exc.failure_cases
    else:
        return []
    cases = cases[~cases["check"].astype(str).str.startswith("dtype(")]  # same as coerce_dtype
    bad_dtype = set(cases.loc[cases["check"].astype(str).str.startswith("coerce_dtype"), "column"])
    issues = []
    for (column, check), group in cases.groupby(["column", "check"], dropna=False, sort=False):
        column_name = str(group["failure_case"].iloc[0]) if pd.isna(column) else str(column)
        rule = _rule_name(str(check))
        if column_name in bad_dtype and not rule.startswith("dtype"):
            continue  # a range check on a column that is not numeric says nothing more
        if rule == "missing_column":
            issues.append(ValidationIssue(column_name, rule, len(df)))
            continue
        examples = _examples(group["failure_case"])
        issues.append(ValidationIssue(column_name, rule, len(group), examples))
    return issues


def _examples(values: pd.Series) -> tuple[str, ...]:
    seen: list[str] = []
    for v in values:
        text = "null" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v)
        if text not in seen:
            seen.append(text)
        if len(seen) == MAX_EXAMPLES:
            break
    return tuple(seen)


def _target_issues(df: pd.DataFrame, schema: FeatureSchema, limits: QualityThresholds) -> list[ValidationIssue]:
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
    labels = values.astype(str)
    distinct = labels.nunique()
    if t.task == "binary" and distinct != 2:
        issues.append(
            ValidationIssue(
                t.name,
                f"binary_target_needs_2_classes_got_{distinct}",
                len(values),
                _examples(labels.drop_duplicates()),
            )
        )
    if t.task == "multiclass" and distinct < 3:
        issues.append(
            ValidationIssue(
                t.name,
                f"multiclass_target_needs_3_classes_got_{distinct}",
                len(values),
                _examples(labels.drop_duplicates()),
            )
        )
    if t.classes is not None:
        unknown = labels[~labels.isin(t.classes)]
        if len(unknown):
            issues.append(ValidationIssue(t.name, "unknown_class", len(unknown), _examples(unknown)))
    if len(labels) and distinct >= 2:
        rates = labels.value_counts(normalize=True)
        if rates.min() < limits.min_class_rate:
            rare = rates.idxmin()
            issues.append(
                ValidationIssue(
                    t.name,
                    f"class_imbalance (rarest < {limits.min_class_rate:g})",
                    int(labels.eq(str(rare)).sum()),
                    (f"{rare}: {rates.min():.2%}",),
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
                ValidationIssue(f.name, f"null_rate > {limits.max_null_rate:g}", nulls, (f"{nulls / n:.1%} null",))
            )
        if not limits.allow_constant_columns and n > 1 and s.nunique(dropna=True) == 1:
            issues.append(ValidationIssue(f.name, "constant", n, (str(s.dropna().iloc[0]),)))
    if n:
        cols = [f.name for f in present] + ([schema.target.name] if schema.target.name in df.columns else [])
        dupes = int(df.duplicated(subset=cols).sum()) if cols else 0
        if dupes / n > limits.max_duplicate_rate:
            issues.append(
                ValidationIssue(
                    "*", f"duplicate_rows > {limits.max_duplicate_rate:g}", dupes, (f"{dupes / n:.1%} duplicated",)
                )
            )
    return issues


def _skew_issues(df: pd.DataFrame, schema: FeatureSchema, ignore: tuple[str, ...]) -> list[ValidationIssue]:
    """Columns the model was not trained on: ignored, but a sign of train/serve skew."""
    known = set(schema.names) | set(schema.id_columns) | {schema.target.name} | set(ignore)
    extra = [str(c) for c in df.columns if c not in known]
    return [ValidationIssue(c, "unexpected_column", len(df), severity="warning") for c in extra]
