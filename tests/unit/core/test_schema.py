from __future__ import annotations

import pandas as pd
import pytest

from shipml.core.schema import FeatureSchema
from shipml.errors import SchemaError


def test_infer_reads_kinds_ranges_categories_and_task(churn_df: pd.DataFrame) -> None:
    schema = FeatureSchema.infer(churn_df, "churn", id_columns=("customer_id",))
    assert schema.target.task == "binary"
    assert schema.target.classes == ("0", "1")
    assert "customer_id" not in schema.names
    tenure = schema.feature("tenure")
    assert tenure.kind == "integer" and tenure.min == churn_df.tenure.min() and tenure.max == churn_df.tenure.max()
    assert schema.feature("monthly_charges").kind == "numeric"
    assert schema.feature("total_charges").nullable
    assert schema.feature("contract").categories == ("month-to-month", "one-year", "two-year")


def test_round_trip_and_stable_digest(churn_df: pd.DataFrame) -> None:
    schema = FeatureSchema.infer(churn_df, "churn", id_columns=("customer_id",))
    again = FeatureSchema.from_dict(schema.to_dict())
    assert again == schema
    assert again.sha256() == schema.sha256()
    changed = FeatureSchema.infer(churn_df.drop(columns=["gender"]), "churn", id_columns=("customer_id",))
    assert changed.sha256() != schema.sha256()


def test_regression_and_multiclass_targets_are_inferred() -> None:
    df = pd.DataFrame({"x": range(30), "y": [i * 0.37 for i in range(30)], "c": ["a", "b", "c"] * 10})
    assert FeatureSchema.infer(df, "y").target.task == "regression"
    assert FeatureSchema.infer(df, "c").target.task == "multiclass"


def test_missing_target_is_named() -> None:
    with pytest.raises(SchemaError, match="target column 'nope' not found"):
        FeatureSchema.infer(pd.DataFrame({"a": [1]}), "nope")


def test_malformed_schema_file_names_the_key() -> None:
    with pytest.raises(SchemaError, match=r"s.features\[0\].kind: must be one of"):
        FeatureSchema.from_dict(
            {"target": {"name": "y", "task": "binary"}, "features": [{"name": "a", "kind": "text"}]}, where="s"
        )
