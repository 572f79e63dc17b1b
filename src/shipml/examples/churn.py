"""A seeded, deterministic synthetic customer-churn data set with a real signal."""

from __future__ import annotations

from importlib import resources

import numpy as np
import pandas as pd

CONTRACTS = ("month-to-month", "one-year", "two-year")
PAYMENTS = ("electronic-check", "mailed-check", "bank-transfer", "credit-card")
INTERNET = ("dsl", "fiber", "none")
GENDERS = ("female", "male")
# The model inputs: every column but the id and the target.
FEATURES = (
    "tenure", "monthly_charges", "total_charges", "age", "support_calls",
    "data_gb", "contract", "payment", "internet", "gender",
)  # fmt: skip


def generate_churn(rows: int = 10_000, seed: int = 42) -> pd.DataFrame:
    """``rows`` customers; the same ``rows`` and ``seed`` give the same frame, byte for byte."""
    rng = np.random.default_rng(seed)
    contract = rng.choice(CONTRACTS, size=rows, p=[0.55, 0.25, 0.20])
    tenure_scale = np.select([contract == "month-to-month", contract == "one-year"], [14.0, 30.0], 45.0)
    tenure = np.minimum(np.floor(rng.exponential(tenure_scale)), 72).astype(np.int64)
    internet = rng.choice(INTERNET, size=rows, p=[0.35, 0.45, 0.20])
    base = np.select([internet == "fiber", internet == "dsl"], [75.0, 50.0], 22.0)
    monthly = np.round(np.clip(base + rng.normal(0, 12, rows), 18.0, 120.0), 2)
    total = np.round(monthly * tenure * rng.uniform(0.95, 1.05, rows), 2)
    total_charges = np.where(tenure == 0, np.nan, total)  # new customers: not billed yet
    age = np.clip(np.round(rng.normal(45, 15, rows)), 18, 85).astype(np.int64)
    support_calls = np.minimum(rng.poisson(1.2 + 0.8 * (internet == "fiber"), rows), 15).astype(np.int64)
    data_gb = np.round(np.where(internet == "none", 0.0, rng.gamma(2.0, 40.0, rows)), 1)
    payment = rng.choice(PAYMENTS, size=rows, p=[0.35, 0.2, 0.22, 0.23])
    gender = rng.choice(GENDERS, size=rows)

    logit = (
        -1.6
        + 1.4 * (contract == "month-to-month")
        - 0.9 * (contract == "two-year")
        - 0.045 * tenure
        + 0.018 * (monthly - 60.0)
        + 0.35 * support_calls
        + 0.5 * (internet == "fiber")
        + 0.55 * (payment == "electronic-check")
        - 0.01 * (age - 45)
    )
    churn = (rng.uniform(size=rows) < 1.0 / (1.0 + np.exp(-logit))).astype(np.int64)
    return pd.DataFrame(
        {
            "customer_id": [f"C{seed:04d}-{i:07d}" for i in range(rows)],
            "tenure": tenure,
            "monthly_charges": monthly,
            "total_charges": total_charges,
            "age": age,
            "support_calls": support_calls,
            "data_gb": data_gb,
            "contract": contract,
            "payment": payment,
            "internet": internet,
            "gender": gender,
            "churn": churn,
        }
    )


def churn_config() -> str:
    """The example's ``shipml.yaml`` (also at ``examples/churn/shipml.yaml`` in the repository)."""
    return resources.files("shipml.examples").joinpath("churn.yaml").read_text(encoding="utf-8")
