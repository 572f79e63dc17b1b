from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from shipml.core.profile import ReferenceProfile, build_profile, numeric_profile
from shipml.core.schema import FeatureSchema


@given(st.lists(st.one_of(st.floats(-1e6, 1e6), st.just(float("nan"))), min_size=1, max_size=300))
def test_numeric_profile_is_a_distribution(values: list[float]) -> None:
    p = numeric_profile(np.asarray(values))
    assert abs(sum(p.frequencies) - 1.0) < 1e-9
    assert len(p.frequencies) == len(p.edges) + 1
    assert list(p.edges) == sorted(set(p.edges))
    assert 0.0 <= p.null_rate <= 1.0


def test_profile_of_the_example_round_trips(churn_df) -> None:  # type: ignore[no-untyped-def]
    schema = FeatureSchema.infer(churn_df, "churn", id_columns=("customer_id",))
    profile = build_profile(churn_df, schema, np.linspace(0, 1, len(churn_df)))
    assert set(profile.categorical) == {"contract", "payment", "internet", "gender"}
    assert abs(sum(profile.categorical["contract"].frequencies.values()) - 1) < 1e-9
    assert profile.numeric["total_charges"].null_rate == churn_df.total_charges.isna().mean()
    import json

    assert ReferenceProfile.from_dict(json.loads(profile.to_json())) == profile
