from __future__ import annotations

import math

import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from shipml.core.records import Accepted, FieldError, RecordValidator, frame_from_rows
from shipml.core.schema import FeatureSchema


@pytest.fixture
def schema(churn_df: pd.DataFrame) -> FeatureSchema:
    return FeatureSchema.infer(churn_df, "churn", id_columns=("customer_id",))


def good(churn_df: pd.DataFrame) -> dict[str, object]:
    row = churn_df.iloc[0].drop(["customer_id", "churn"]).to_dict()
    return {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}


def rules(result: Accepted | list[FieldError]) -> set[tuple[str, str]]:
    assert isinstance(result, list), result
    return {(e.feature, e.rule) for e in result}


def test_a_training_row_is_accepted_and_normalised(schema: FeatureSchema, churn_df: pd.DataFrame) -> None:
    result = RecordValidator(schema).check(good(churn_df), 0)
    assert isinstance(result, Accepted)
    assert isinstance(result.values["tenure"], float) and isinstance(result.values["contract"], str)


def test_each_rule_names_record_feature_and_rule(schema: FeatureSchema, churn_df: pd.DataFrame) -> None:
    rec = good(churn_df)
    rec.update(tenure=-1, age=30.5, monthly_charges="12", data_gb=math.inf, contract="lifetime", gender=None, extra=1)
    del rec["payment"]
    found = rules(RecordValidator(schema).check(rec, 7))
    assert found == {
        ("tenure", "min"), ("age", "whole_number"), ("monthly_charges", "type"), ("data_gb", "finite"),
        ("contract", "unknown_category"), ("gender", "not_nullable"), ("payment", "missing"), ("extra", "unknown_feature"),
    }  # fmt: skip
    assert all(e.record == 7 for e in RecordValidator(schema).check(rec, 7))  # type: ignore[union-attr]


def test_booleans_are_not_numbers_and_objects_are_not_records(schema: FeatureSchema, churn_df: pd.DataFrame) -> None:
    rec = good(churn_df) | {"tenure": True, "contract": {"nested": [1]}}
    assert rules(RecordValidator(schema).check(rec, 0)) == {("tenure", "type"), ("contract", "type")}
    assert rules(RecordValidator(schema).check([1, 2], 3)) == {("*", "type")}


def test_accept_policies_let_values_through_and_say_so(schema: FeatureSchema, churn_df: pd.DataFrame) -> None:
    validator = RecordValidator(schema, unknown_categories="accept", out_of_range="accept")
    result = validator.check(good(churn_df) | {"contract": "lifetime", "age": 500}, 0)
    assert isinstance(result, Accepted)
    assert set(result.tolerated) == {("contract", "unknown_category"), ("age", "max")}


def test_nullable_feature_may_be_missing_or_null(schema: FeatureSchema, churn_df: pd.DataFrame) -> None:
    rec = good(churn_df)
    del rec["total_charges"]
    result = RecordValidator(schema).check(rec, 0)
    assert isinstance(result, Accepted) and result.values["total_charges"] is None
    frame = frame_from_rows(schema, [result.values])
    assert math.isnan(frame.loc[0, "total_charges"])
    assert frame.dtypes["tenure"] == "float64" and str(frame.dtypes["contract"]) == "object"


@given(
    st.dictionaries(
        st.text(max_size=8),
        st.one_of(st.none(), st.integers(), st.floats(), st.text(max_size=5), st.booleans()),
        max_size=12,
    )
)
def test_arbitrary_records_never_raise(record: dict[str, object]) -> None:
    schema = FeatureSchema.from_dict(
        {
            "target": {"name": "y", "task": "binary"},
            "features": [
                {"name": "a", "kind": "numeric", "min": 0, "max": 1},
                {"name": "b", "kind": "categorical", "categories": ["x"]},
                {"name": "c", "kind": "integer", "nullable": True},
                {"name": "d", "kind": "boolean"},
            ],
        }
    )
    validator = RecordValidator(schema)
    result = validator.check(record, 0)
    assert isinstance(result, Accepted | list)
    assert result == validator._check(record, 0)  # the fast path agrees with the full check


NO_BOOL = FeatureSchema.from_dict(
    {
        "target": {"name": "y", "task": "binary"},
        "features": [
            {"name": "a", "kind": "numeric", "min": 0, "max": 1},
            {"name": "b", "kind": "categorical", "categories": ["x", "y"]},
            {"name": "c", "kind": "integer", "nullable": True, "min": -2},
            {"name": "e", "kind": "numeric"},
        ],
    }
)
value = st.one_of(
    st.none(), st.integers(-3, 3), st.floats(-3, 3), st.floats(), st.sampled_from(["x", "y", "z", ""]), st.booleans()
)


@given(
    st.one_of(
        st.fixed_dictionaries({"a": value, "b": value, "c": value, "e": value}),
        st.fixed_dictionaries({"a": value, "b": value, "e": value}),
        st.dictionaries(st.sampled_from(["a", "b", "c", "e", "f"]), value),
    )
)
def test_fast_path_agrees_with_the_full_check(record: dict[str, object]) -> None:
    for policy in ("reject", "accept"):
        validator = RecordValidator(NO_BOOL, unknown_categories=policy, out_of_range=policy)  # type: ignore[arg-type]
        assert validator.check(record, 0) == validator._check(record, 0)


def _many(churn_df: pd.DataFrame, n: int = 200) -> list[dict[str, object]]:
    rows = churn_df.drop(columns=["customer_id", "churn"]).head(n).to_dict(orient="records")
    return [
        {
            k: (None if isinstance(v, float) and math.isnan(v) else getattr(v, "item", lambda v=v: v)())
            for k, v in r.items()
        }
        for r in rows
    ]


def test_a_clean_batch_is_cleared_at_once_and_its_records_are_their_own_values(
    schema: FeatureSchema, churn_df: pd.DataFrame
) -> None:
    """The column-at-a-time check accepts only what the per-record check accepts, with the same values."""
    v = RecordValidator(schema)
    batch = _many(churn_df)
    assert v.all_clean(batch)
    for i, record in enumerate(batch):
        checked = v.check(record, i)
        assert isinstance(checked, Accepted)
        assert checked.values == {
            k: (None if x is None else float(x) if isinstance(x, int) else x) for k, x in record.items()
        }


@pytest.mark.parametrize(
    "change",
    [
        {"tenure": -1}, {"age": 30.5}, {"monthly_charges": "12"}, {"data_gb": math.inf}, {"contract": "lifetime"},
        {"gender": None}, {"tenure": True}, {"age": 10**400}, {"extra": 1}, {"contract": 3},
    ],
)  # fmt: skip
def test_one_bad_record_sends_the_whole_batch_to_the_per_record_check(
    schema: FeatureSchema, churn_df: pd.DataFrame, change: dict[str, object]
) -> None:
    v = RecordValidator(schema)
    batch = _many(churn_df)
    batch[137] = {**batch[137], **change}
    assert not v.all_clean(batch)
    assert not isinstance(v.check(batch[137], 137), Accepted)
    missing = _many(churn_df)
    del missing[5]["payment"]
    assert not v.all_clean(missing) and not v.all_clean([*batch[:3], "not a record"]) and not v.all_clean([])
