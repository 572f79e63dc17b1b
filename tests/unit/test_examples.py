from __future__ import annotations

import pandas as pd

from shipml.examples.churn import generate_churn


def test_generator_is_deterministic_per_seed() -> None:
    pd.testing.assert_frame_equal(generate_churn(500, 3), generate_churn(500, 3))
    assert not generate_churn(500, 3).equals(generate_churn(500, 4))


def test_default_size_and_columns() -> None:
    df = generate_churn()
    assert len(df) == 10_000
    assert list(df.columns) == [
        "customer_id", "tenure", "monthly_charges", "total_charges", "age", "support_calls",
        "data_gb", "contract", "payment", "internet", "gender", "churn",
    ]  # fmt: skip
    assert 0.15 < df.churn.mean() < 0.5


def test_the_target_carries_a_real_signal() -> None:
    df = generate_churn(4_000, 1)
    month_to_month = df[df.contract == "month-to-month"].churn.mean()
    two_year = df[df.contract == "two-year"].churn.mean()
    assert month_to_month > 2 * two_year
    assert df[df.support_calls >= 3].churn.mean() > df[df.support_calls == 0].churn.mean()
