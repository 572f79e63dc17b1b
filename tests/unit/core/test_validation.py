from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from shipml.config import ValidationSettings
from shipml.core.schema import FeatureSchema
from shipml.core.validation import ValidationIssue, validate_frame
from shipml.pipelines.data import thresholds

DEFAULTS = thresholds(ValidationSettings())


@pytest.fixture
def schema(churn_df: pd.DataFrame) -> FeatureSchema:
    return FeatureSchema.infer(churn_df, "churn", id_columns=("customer_id",))


def issue(report_issues: tuple[ValidationIssue, ...], column: str, rule: str) -> ValidationIssue:
    found = [i for i in report_issues if i.column == column and i.rule == rule]
    assert found, f"no {rule} issue on {column}: {report_issues}"
    return found[0]


def test_clean_data_passes(churn_df: pd.DataFrame, schema: FeatureSchema) -> None:
    report = validate_frame(churn_df, schema, source="d.csv", thresholds=DEFAULTS)
    assert report.passed and report.issues == ()
    assert report.rows == len(churn_df)


def test_schema_rules_report_column_rule_count_and_examples(churn_df: pd.DataFrame, schema: FeatureSchema) -> None:
    df = churn_df.copy()
    df["tenure"] = df["tenure"].astype(object)
    df.loc[0:6, "tenure"] = ["x", "y", "x", "z", "w", "v", "u"]
    df.loc[10:12, "age"] = [500, 600, 700]
    df.loc[20:21, "contract"] = ["lifetime", "weekly"]
    df.loc[30, "gender"] = None
    df.loc[40, "data_gb"] = np.inf
    report = validate_frame(df, schema, source="d.csv")
    assert not report.passed
    dtype = issue(report.issues, "tenure", "dtype")
    assert dtype.failing == 7 and dtype.examples == ("x", "y", "z", "w", "v")  # five distinct examples
    age = issue(report.issues, "age", "max")
    assert age.failing == 3 and age.examples == ("500.0", "600.0", "700.0")
    assert issue(report.issues, "contract", "allowed_categories").examples == ("lifetime", "weekly")
    assert issue(report.issues, "gender", "not_nullable").failing == 1
    assert issue(report.issues, "data_gb", "finite").failing == 1
    # the range check of the non-numeric column is not reported on top of its dtype problem
    assert not [i for i in report.issues if i.column == "tenure" and i.rule != "dtype"]


def test_missing_feature_and_missing_target(churn_df: pd.DataFrame, schema: FeatureSchema) -> None:
    report = validate_frame(churn_df.drop(columns=["age", "churn"]), schema, source="d.csv")
    assert issue(report.issues, "age", "missing_column").failing == len(churn_df)
    assert issue(report.issues, "churn", "missing_target")


def test_quality_checks(churn_df: pd.DataFrame, schema: FeatureSchema) -> None:
    df = churn_df.copy()
    df["total_charges"] = np.nan
    df["gender"] = "female"
    df = pd.concat([df, df.iloc[:300]], ignore_index=True)
    report = validate_frame(df, schema, source="d.csv", thresholds=DEFAULTS)
    assert issue(report.issues, "total_charges", "all_null").failing == len(df)
    assert issue(report.issues, "gender", "constant").examples == ("female",)
    assert issue(report.issues, "*", "duplicate_rows").failing == 300


def test_null_rate_threshold(churn_df: pd.DataFrame, schema: FeatureSchema) -> None:
    # total_charges is nullable and ~5% null in the example
    rate = churn_df.total_charges.isna().mean()
    strict = validate_frame(churn_df, schema, source="d", thresholds=replace(DEFAULTS, max_null_rate=rate / 2))
    null_rate = issue(strict.issues, "total_charges", "null_rate")
    assert null_rate.failing == churn_df.total_charges.isna().sum()
    assert null_rate.limit == rate / 2 and null_rate.scope == "dataset"
    assert validate_frame(churn_df, schema, source="d", thresholds=replace(DEFAULTS, max_null_rate=rate * 2)).passed


def test_class_imbalance_and_wrong_class_count(churn_df: pd.DataFrame, schema: FeatureSchema) -> None:
    df = churn_df.copy()
    df["churn"] = 0
    df.loc[:4, "churn"] = 1
    report = validate_frame(df, schema, source="d", thresholds=DEFAULTS)
    assert issue(report.issues, "churn", "class_imbalance").failing == 5
    df.loc[10:20, "churn"] = 2
    report = validate_frame(df, schema, source="d", thresholds=DEFAULTS)
    classes = issue(report.issues, "churn", "binary_target_classes")
    assert (classes.limit, classes.scope, classes.label) == (2, "dataset", "binary_target_classes != 2")
    assert sorted(classes.examples) == ["0", "1", "2"]
    assert issue(report.issues, "churn", "unknown_class").examples == ("2",)


def test_unexpected_column_is_a_warning_only(churn_df: pd.DataFrame, schema: FeatureSchema) -> None:
    report = validate_frame(churn_df.assign(extra=1), schema, source="d")
    assert report.passed
    assert issue(report.issues, "extra", "unexpected_column").severity == "warning"


def test_report_serialises_what_the_table_shows(churn_df: pd.DataFrame, schema: FeatureSchema) -> None:
    report = validate_frame(churn_df.drop(columns=["age"]), schema, source="d.csv")
    data = report.to_dict()
    assert data["passed"] is False
    assert {
        "column": "age",
        "rule": "missing_column",
        "failing": len(churn_df),
        "examples": [],
        "severity": "error",
    } in data["issues"]
    assert "age: missing_column" in report.summary()


def test_rules_are_names_with_their_limit_and_scope_and_the_report_reads_as_before(
    churn_df: pd.DataFrame, schema: FeatureSchema
) -> None:
    df = churn_df.copy()
    df.loc[10:12, "age"] = [500, 600, 700]
    df["gender"] = "female"
    report = validate_frame(df, schema, source="d.csv", thresholds=DEFAULTS)
    age = issue(report.issues, "age", "max")
    assert (age.limit, age.scope) == (schema.feature("age").max, "record")
    assert issue(report.issues, "gender", "constant").scope == "dataset"
    row = next(i for i in report.to_dict()["issues"] if i["column"] == "age")
    assert row == {
        "column": "age",
        "rule": f"max {schema.feature('age').max}",
        "failing": 3,
        "examples": ["500.0", "600.0", "700.0"],
        "severity": "error",
    }
    assert f"age: max {schema.feature('age').max} (3 rows)" in report.summary()


def test_without_thresholds_only_record_rules_are_checked(churn_df: pd.DataFrame, schema: FeatureSchema) -> None:
    """A batch to score: a one-row file whose nullable feature is null is accepted, as the server accepts it."""
    one = churn_df[churn_df.total_charges.isna()].head(1)
    report = validate_frame(one, schema, source="one.csv", require_target=False)
    assert report.passed and report.issues == ()
    with_limits = validate_frame(one, schema, source="one.csv", require_target=False, thresholds=DEFAULTS)
    assert issue(with_limits.issues, "total_charges", "all_null").scope == "dataset"


def test_refused_data_is_bad_input_with_its_report(churn_df: pd.DataFrame, schema: FeatureSchema) -> None:
    from shipml.errors import DataValidationError

    report = validate_frame(churn_df.drop(columns=["age"]), schema, source="d.csv")
    refused = DataValidationError(report.summary(), report)
    assert refused.exit_code == 2  # `shipml train` / `predict` refusing data: bad input, as the README says
    assert refused.report.errors[0].rule == "missing_column"
