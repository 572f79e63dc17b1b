"""Drift statistics: no false alarms on reference-like data, real shifts caught, every edge case finite."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from shipml.core.binning import (
    NULL,
    PREDICTION,
    UNSEEN,
    Binning,
    ProfileBinnings,
    categorical_counts,
    counts_of,
    numeric_counts,
)
from shipml.core.domain_drift import domain_classifier_drift
from shipml.core.drift import (
    MULTIVARIATE,
    DriftThresholds,
    FeatureDrift,
    chi_square_pvalue,
    drift_of,
    feature_drift,
    js_distance,
    psi,
    total_variation,
)
from shipml.core.profile import (
    CategoricalProfile,
    NumericProfile,
    ReferenceProfile,
    categorical_profile,
    numeric_profile,
)
from shipml.errors import ConfigError, SchemaError

NUMERIC = ("income", "tenure", "visits", "ratio", "is_member", "balance")
CATEGORICAL = ("contract", "region", "payment", "plan")
# The score: a logistic of features standardised by their population mean and spread (so a shift carries through).
SCORE = {"income": (2.0, 50.0, 12.0), "tenure": (-0.5, 24.0, 24.0), "ratio": (0.5, 0.5, 0.29)}


def draw(n: int, rng: np.random.Generator, *, shift: float = 0.0) -> dict[str, np.ndarray]:
    """Ten features of mixed dtypes (float64, float32, int32, bool, nulls, skewed and many categories), and a score."""
    balance = rng.lognormal(3.0, 1.0, n)
    balance[rng.random(n) < 0.05] = np.nan
    cols: dict[str, np.ndarray] = {
        "income": rng.normal(50.0 + shift * 12.0, 12.0, n),
        "tenure": rng.exponential(24.0, n),
        "visits": rng.poisson(3.0, n).astype(np.int32),
        "ratio": rng.uniform(0.0, 1.0, n).astype(np.float32),
        "is_member": rng.random(n) < 0.3,
        "balance": balance,
        "contract": rng.choice(np.array(["monthly", "yearly", "two_year"], dtype=object), n, p=[0.6, 0.25, 0.15]),
        "region": rng.choice(np.array(["north", "south", "east", "west"], dtype=object), n),
        "payment": rng.choice(np.array(["card", "bank", "cash", None], dtype=object), n, p=[0.5, 0.3, 0.17, 0.03]),
        "plan": rng.choice(np.array([f"p{i}" for i in range(12)], dtype=object), n, p=_zipf(12)),
    }
    z = sum(w * (cols[f].astype(np.float64) - mean) / std for f, (w, mean, std) in SCORE.items())
    cols[PREDICTION] = 1.0 / (1.0 + np.exp(-np.asarray(z)))
    return cols


def _zipf(k: int) -> np.ndarray:
    w = 1.0 / np.arange(1, k + 1)
    shares: np.ndarray = w / w.sum()
    return shares


def profile_of(cols: dict[str, np.ndarray]) -> ReferenceProfile:
    return ReferenceProfile(
        rows=len(cols["income"]),
        numeric={f: numeric_profile(cols[f]) for f in NUMERIC},
        categorical={f: categorical_profile(pd.Series(cols[f])) for f in CATEGORICAL},
        prediction=numeric_profile(cols[PREDICTION]),
    )


@pytest.fixture(scope="module")
def profile() -> ReferenceProfile:
    return profile_of(draw(20_000, np.random.default_rng(2024)))


@pytest.fixture(scope="module")
def binnings(profile: ReferenceProfile) -> ProfileBinnings:
    return ProfileBinnings.of(profile)


def counts_by_feature(binnings: ProfileBinnings, cols: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {name: counts_of(b, cols[name]) for name, b in binnings.all.items()}


def decisive(results: list[FeatureDrift]) -> str:
    order = ["drift", "warn", "not_enough_data", "no_drift"]
    return min((r.verdict for r in results if r.decisive), key=order.index)


# --- bins and counts --------------------------------------------------------------------------


def test_counts_of_the_reference_data_reproduce_the_profile() -> None:
    """The same bin rule as the profile: a value equal to an edge goes to the upper bin."""
    values = np.random.default_rng(0).poisson(2.0, 5_000).astype(np.float64)  # many values sit on edges
    prof = numeric_profile(values)
    counts = numeric_counts(Binning.of("x", prof), values)
    assert counts[-1] == 0
    np.testing.assert_allclose(counts[:-1] / len(values), prof.frequencies)


def test_reference_shares_cover_every_bucket(binnings: ProfileBinnings, profile: ReferenceProfile) -> None:
    for b in binnings.all.values():
        assert len(b.labels) == b.buckets
        assert b.reference.sum() == pytest.approx(1.0)
        assert not b.reference.flags.writeable
    payment = binnings.features["payment"]
    assert payment.labels[-2:] == (UNSEEN, NULL)
    assert payment.reference[-2] == 0.0
    assert payment.reference[-1] == pytest.approx(profile.categorical["payment"].null_rate)


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.float32, np.float64, np.bool_])
def test_numeric_dtypes_are_all_numeric(dtype: Any) -> None:
    """int32/float32/bool are numbers (the seed matched dtype strings and missed them)."""
    base = np.random.default_rng(1).integers(0, 2, 1_000)
    binning = Binning.of("x", numeric_profile(base.astype(np.float64)))
    counts = numeric_counts(binning, base.astype(dtype))
    np.testing.assert_array_equal(counts, numeric_counts(binning, base.astype(np.float64)))
    assert counts.sum() == 1_000 and counts[-1] == 0


def test_numeric_nulls_infinities_and_object_arrays() -> None:
    binning = Binning.of("x", numeric_profile(np.arange(100.0)))
    counts = numeric_counts(binning, np.array([np.nan, None, -np.inf, np.inf, 50.0], dtype=object))
    assert counts[-1] == 2  # NaN and None in the null bucket
    assert counts[0] == 1 and counts[-2] == 1  # -inf in the first bin, +inf in the last
    assert counts.sum() == 5


def test_text_given_as_numeric_is_refused_naming_the_feature() -> None:
    binning = Binning.of("age", numeric_profile(np.arange(10.0)))
    with pytest.raises(SchemaError, match="feature 'age': numeric drift needs numbers"):
        numeric_counts(binning, np.array(["a", "b"], dtype=object))
    with pytest.raises(SchemaError, match="'age' is numeric in the profile"):
        categorical_counts(binning, ["a"])


def test_categories_compare_as_text_like_the_profile() -> None:
    """A profile built from ints keeps "1", "2": the ints at serve time land in those buckets, not in unseen."""
    binning = Binning.of("grade", categorical_profile(pd.Series([1, 2, 2, 3])))
    counts = categorical_counts(binning, np.array([1, 2, 2, 7, None, np.nan], dtype=object))
    assert dict(zip(binning.labels, counts.tolist(), strict=True)) == {"1": 1, "2": 2, "3": 0, UNSEEN: 1, NULL: 2}


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-5, 5)), max_size=200),
    st.integers(0, 200),
)
def test_numeric_counts_are_mergeable(values: list[float], cut: int) -> None:
    """The store sums per-minute counts: counts of two halves added are the counts of the whole."""
    binning = Binning.of("x", numeric_profile(np.linspace(-3, 3, 50)))
    x = np.asarray(values, dtype=np.float64)
    whole = numeric_counts(binning, x)
    np.testing.assert_array_equal(numeric_counts(binning, x[:cut]) + numeric_counts(binning, x[cut:]), whole)
    assert whole.sum() == len(x)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(st.sampled_from(["a", "b", "c", "new", "A"]), st.none()), max_size=200), st.integers(0, 200))
def test_categorical_counts_are_mergeable(values: list[str | None], cut: int) -> None:
    binning = Binning.of("c", CategoricalProfile({"a": 0.5, "b": 0.3, "c": 0.2}, 0.1))
    x = np.asarray(values, dtype=object)
    whole = categorical_counts(binning, x)
    np.testing.assert_array_equal(categorical_counts(binning, x[:cut]) + categorical_counts(binning, x[cut:]), whole)
    assert whole.sum() == len(x)
    assert whole[-2] == sum(v in ("new", "A") for v in values)  # case matters: "A" is not "a"
    assert whole[-1] == sum(v is None for v in values)


# --- statistics: invariants -------------------------------------------------------------------

shares_and_counts = st.integers(1, 15).flatmap(
    lambda k: st.tuples(
        st.lists(st.integers(0, 1_000), min_size=k, max_size=k).filter(lambda r: sum(r) > 0),
        st.lists(st.integers(0, 100_000), min_size=k, max_size=k),
    )
)


@settings(max_examples=150, deadline=None)
@given(shares_and_counts)
def test_statistics_are_finite_and_in_range_for_any_counts(pair: tuple[list[int], list[int]]) -> None:
    """Empty buckets on either side (or no rows at all) never give infinity or NaN."""
    reference = np.asarray(pair[0]) / sum(pair[0])
    counts = np.asarray(pair[1], dtype=np.int64)
    value_psi, value_js, value_tvd = (
        psi(reference, counts),
        js_distance(reference, counts),
        total_variation(reference, counts),
    )
    p_value = chi_square_pvalue(reference, counts)
    assert np.isfinite([value_psi, value_js, value_tvd, p_value]).all()
    assert value_psi >= -1e-12
    assert 0.0 <= value_js <= 1.0 and 0.0 <= value_tvd <= 1.0 and 0.0 <= p_value <= 1.0


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 50), min_size=2, max_size=12).filter(lambda r: sum(r) > 0), st.integers(1, 2_000))
def test_a_sample_in_the_reference_proportions_does_not_drift(reference_counts: list[int], scale: int) -> None:
    ref = np.asarray(reference_counts)
    binning = Binning.of("c", CategoricalProfile({f"c{i}": c / ref.sum() for i, c in enumerate(ref)}, 0.0))
    counts = np.r_[ref * scale, 0, 0]
    results = drift_of(binning, counts, DriftThresholds(min_rows=1))
    assert all(r.verdict == "no_drift" for r in results)
    assert psi(binning.reference, counts) == pytest.approx(0.0, abs=1e-12)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(0.05, 1.0), min_size=2, max_size=12), st.integers(1_000, 1_000_000), st.data())
def test_twenty_points_leaving_the_main_category_drift(weights: list[float], rows: int, data: st.DataObject) -> None:
    """Whatever the categories' shares and the sample size, a 20-point move of the main category is drift."""
    shares = np.asarray(weights) / sum(weights)
    shares = 0.5 * shares + 0.5 * (np.arange(len(shares)) == 0)  # a main category of at least 50 %
    target = data.draw(st.integers(1, len(shares)), label="receiving bucket (the last: unseen categories)")
    moved = np.r_[shares, 0.0, 0.0]  # the categories, unseen, null
    moved[0] -= 0.2
    moved[target] += 0.2
    binning = Binning.of("c", CategoricalProfile({f"c{i}": float(s) for i, s in enumerate(shares)}, 0.0))
    counts = np.round(moved * rows).astype(np.int64)
    assert decisive(drift_of(binning, counts)) == "drift"


# --- measured behaviour at the defaults --------------------------------------------------------


def test_false_alarm_rate_on_samples_from_the_reference(binnings: ProfileBinnings) -> None:
    """200 seeded samples of 1,000 rows from the reference distribution: drift verdicts are false alarms."""
    draws, rows = 200, 1_000
    rng = np.random.default_rng(7)
    drifted = dict.fromkeys(binnings.all, 0)
    warned = dict.fromkeys(binnings.all, 0)
    reports_drifted = reports_warned = 0
    for _ in range(draws):
        result = feature_drift(binnings, counts_by_feature(binnings, draw(rows, rng)))
        for feature, verdict in result.verdicts.items():
            drifted[feature] += verdict == "drift"
            warned[feature] += verdict == "warn"
        reports_drifted += result.any_drift
        reports_warned += result.verdict == "warn"
    worst_feature = max(drifted.values()) / draws
    print(
        f"FIGURE drift false-alarm: {draws} samples x {rows} rows, {len(drifted)} features (prediction included): "
        f"per feature max {worst_feature:.1%} drift / {max(warned.values()) / draws:.1%} warn, "
        f"per report {reports_drifted / draws:.1%} drift / {reports_warned / draws:.1%} warn"
    )
    assert worst_feature <= 0.01
    assert reports_drifted / draws <= 0.05


def test_a_half_std_mean_shift_drifts(binnings: ProfileBinnings) -> None:
    rng = np.random.default_rng(11)
    draws, rows = 50, 1_000
    caught = 0
    for _ in range(draws):
        cols = draw(rows, rng, shift=0.5)
        results = drift_of(binnings.features["income"], numeric_counts(binnings.features["income"], cols["income"]))
        caught += decisive(results) == "drift"
        untouched = binnings.features["tenure"]
        assert decisive(drift_of(untouched, numeric_counts(untouched, cols["tenure"]))) != "drift"
    print(f"FIGURE drift power: a 0.5-std mean shift flagged as drift in {caught}/{draws} samples of {rows} rows")
    assert caught / draws >= 0.8
    big = draw(20_000, rng, shift=0.5)["income"]
    assert decisive(drift_of(binnings.features["income"], numeric_counts(binnings.features["income"], big))) == "drift"


def test_a_main_category_moving_twenty_points_drifts_where_kl_misses_it() -> None:
    reference = {"monthly": 0.6, "yearly": 0.25, "two_year": 0.15}
    binning = Binning.of("contract", CategoricalProfile(reference, 0.0))
    rng = np.random.default_rng(3)
    cats = np.array(list(reference), dtype=object)
    current = rng.choice(cats, 5_000, p=[0.4, 0.35, 0.25])
    results = {r.statistic: r for r in drift_of(binning, categorical_counts(binning, current))}
    kl = stats.entropy([0.4, 0.35, 0.25], list(reference.values()))
    assert kl < 0.2  # the seed's KL at 0.2 says nothing happened
    assert results["psi"].verdict in ("warn", "drift")
    assert results["tvd"].verdict == "drift" and results["tvd"].p_value is not None and results["tvd"].p_value < 1e-6
    assert decisive(list(results.values())) == "drift"


def test_a_tiny_difference_at_a_million_rows_is_significant_but_not_drift() -> None:
    binning = Binning.of("c", CategoricalProfile({"a": 0.5, "b": 0.5}, 0.0))
    results = {r.statistic: r for r in drift_of(binning, np.array([505_000, 495_000, 0, 0]))}
    assert results["tvd"].p_value is not None and results["tvd"].p_value < 1e-10
    assert decisive(list(results.values())) == "no_drift"


def test_a_small_samples_noise_does_not_pass_the_chi_square_gate() -> None:
    """240 rows over 12 equal categories, each 5 rows off: TVD 0.125 (above 0.1), but p = 0.18: not drift."""
    binning = Binning.of("plan", CategoricalProfile({f"p{i:02d}": 1 / 12 for i in range(12)}, 0.0))
    counts = np.r_[[25, 15] * 6, 0, 0]
    results = {r.statistic: r for r in drift_of(binning, counts)}
    assert results["tvd"].value == pytest.approx(0.125, abs=1e-3)  # the smoothing moves it a little
    assert results["tvd"].p_value == pytest.approx(stats.chi2.sf(15.0, 11), rel=1e-2)
    assert results["tvd"].verdict == "no_drift" and decisive(list(results.values())) == "no_drift"


def test_unseen_categories_are_their_own_bucket_and_drift() -> None:
    binning = Binning.of("region", CategoricalProfile({"north": 0.5, "south": 0.5}, 0.0))
    rng = np.random.default_rng(5)
    current = np.where(rng.random(2_000) < 0.3, "atlantis", rng.choice(["north", "south"], 2_000)).astype(object)
    counts = categorical_counts(binning, current)
    assert counts[-2] == np.count_nonzero(current == "atlantis")
    results = drift_of(binning, counts)
    assert all(np.isfinite(r.value) for r in results)
    assert {r.statistic: r.verdict for r in results} == {"psi": "drift", "js": "drift", "tvd": "drift"}
    few = categorical_counts(binning, np.r_[current[current != "atlantis"][:998], ["atlantis", "atlantis"]])
    assert decisive(drift_of(binning, few)) == "no_drift"  # two unseen rows in a thousand are not drift


def test_all_null_current_data_is_finite_and_drifts() -> None:
    numeric = Binning.of("x", numeric_profile(np.arange(1_000.0)))
    categorical = Binning.of("c", CategoricalProfile({"a": 1.0}, 0.0))
    for binning, values in ((numeric, np.full(500, np.nan)), (categorical, np.full(500, None, dtype=object))):
        counts = counts_of(binning, values)
        assert counts[-1] == 500
        results = drift_of(binning, counts)
        assert all(np.isfinite(r.value) for r in results)
        assert decisive(results) == "drift"


def test_empty_bins_and_an_all_null_reference_stay_finite() -> None:
    binning = Binning.of("x", numeric_profile(np.arange(1_000.0)))
    one_bin = numeric_counts(binning, np.full(1_000, -5.0))  # every other bin empty
    assert all(np.isfinite(r.value) for r in drift_of(binning, one_bin))
    all_null = Binning.of("y", numeric_profile(np.full(100, np.nan)))
    results = drift_of(all_null, numeric_counts(all_null, np.full(300, np.nan)))
    assert decisive(results) == "no_drift" and all(r.value == pytest.approx(0.0, abs=1e-9) for r in results)


def test_under_min_rows_the_verdict_is_not_enough_data(binnings: ProfileBinnings) -> None:
    income = binnings.features["income"]
    shifted = numeric_counts(income, np.full(199, 1_000.0))  # would be drift with enough rows
    results = drift_of(income, shifted, DriftThresholds(min_rows=200))
    assert {r.verdict for r in results} == {"not_enough_data"} and {r.rows for r in results} == {199}
    assert decisive(drift_of(income, numeric_counts(income, np.full(200, 1_000.0)))) == "drift"
    nothing = drift_of(binnings.features["plan"], np.zeros(binnings.features["plan"].buckets, dtype=np.int64))
    assert {r.verdict for r in nothing} == {"not_enough_data"} and all(r.value == 0.0 for r in nothing)


def test_a_report_with_a_starved_feature_never_says_no_drift(binnings: ProfileBinnings) -> None:
    counts = counts_by_feature(binnings, draw(1_000, np.random.default_rng(9)))
    full = feature_drift(binnings, counts)
    assert full.verdict in ("no_drift", "warn") and not full.any_drift
    del counts["region"]
    partial = feature_drift(binnings, counts)
    assert partial.verdicts["region"] == "not_enough_data"
    assert partial.verdict != "no_drift"


# --- the report and the prediction --------------------------------------------------------------


def test_feature_drift_reports_every_feature_and_the_prediction(profile: ReferenceProfile) -> None:
    rng = np.random.default_rng(12)
    cols = draw(3_000, rng, shift=1.0)
    cols["region"] = np.where(rng.random(3_000) < 0.3, "mars", cols["region"]).astype(object)
    result = feature_drift(profile, counts_by_feature(ProfileBinnings.of(profile), cols))
    assert set(result.verdicts) == {*NUMERIC, *CATEGORICAL, PREDICTION}
    statistics = {(r.feature, r.statistic) for r in result.results}
    assert ("region", "tvd") in statistics and ("income", "tvd") not in statistics
    assert set(result.drifted) == {"income", "region", PREDICTION}  # the score follows income
    assert result.any_drift and result.verdict == "drift"
    assert all(r.rows == 3_000 for r in result.results)


def test_class_prediction_drift() -> None:
    """A multiclass model's profile keeps class shares: a class taking over is prediction drift."""
    prediction = CategoricalProfile({"gold": 0.2, "silver": 0.3, "bronze": 0.5}, 0.0)
    profile = ReferenceProfile(1_000, {}, {}, prediction)
    binning = ProfileBinnings.of(profile).prediction
    steady = categorical_counts(binning, np.repeat(["gold", "silver", "bronze"], [200, 300, 500]).astype(object))
    moved = categorical_counts(binning, np.repeat(["gold", "silver", "bronze"], [500, 300, 200]).astype(object))
    assert feature_drift(profile, {PREDICTION: steady}).verdicts[PREDICTION] == "no_drift"
    assert feature_drift(profile, {PREDICTION: moved}).verdicts[PREDICTION] == "drift"


def test_counts_that_do_not_fit_the_profile_are_refused(binnings: ProfileBinnings) -> None:
    with pytest.raises(SchemaError, match="does not have: salary"):
        feature_drift(binnings, {"salary": np.zeros(3, dtype=np.int64)})
    with pytest.raises(
        SchemaError, match=r"feature 'income': counts must have one entry per bucket of the profile \(11\)"
    ):
        feature_drift(binnings, {"income": np.zeros(5, dtype=np.int64)})
    with pytest.raises(SchemaError, match="non-negative integers"):
        drift_of(binnings.features["income"], np.full(11, -1))


def test_thresholds_are_checked() -> None:
    with pytest.raises(ConfigError, match=r"psi_warn: must be <= psi_drift \(0.2\), got 0.3"):
        DriftThresholds(psi_warn=0.3)
    with pytest.raises(ConfigError, match="min_rows: must be >= 1"):
        DriftThresholds(min_rows=0)
    with pytest.raises(ConfigError, match="chi2_alpha: must be between 0 and 1"):
        DriftThresholds(chi2_alpha=1.5)
    with pytest.raises(ConfigError, match="rows_per_unit: must be >= 1"):
        DriftThresholds(rows_per_unit=0.5)


def test_a_profile_feature_may_not_take_the_prediction_name() -> None:
    profile = ReferenceProfile(
        10, {PREDICTION: NumericProfile((), (1.0,), 0.0, 0.0, 0.0)}, {}, CategoricalProfile({}, 0.0)
    )
    with pytest.raises(SchemaError, match="may not be called"):
        ProfileBinnings.of(profile)


# --- multivariate --------------------------------------------------------------------------------


def correlated(n: int, rho: float, rng: np.random.Generator) -> dict[str, np.ndarray]:
    xy = rng.multivariate_normal([0.0, 0.0], [[1.0, rho], [rho, 1.0]], size=n)
    return {
        "a": xy[:, 0],
        "b": xy[:, 1].astype(np.float32),
        "noise": rng.poisson(3.0, n).astype(np.int32),
        "colour": rng.choice(np.array(["red", "blue", None], dtype=object), n, p=[0.5, 0.45, 0.05]),
    }


def test_the_domain_classifier_catches_a_correlation_change_that_psi_misses() -> None:
    rng = np.random.default_rng(21)
    reference, current = correlated(4_000, 0.8, rng), correlated(2_000, 0.0, rng)
    profile = ReferenceProfile(
        4_000,
        {f: numeric_profile(reference[f]) for f in ("a", "b", "noise")},
        {"colour": categorical_profile(pd.Series(reference["colour"]))},
        CategoricalProfile({"x": 1.0}, 0.0),
    )
    binnings = ProfileBinnings.of(profile)
    per_feature = feature_drift(binnings, {f: counts_of(b, current[f]) for f, b in binnings.features.items()})
    assert all(per_feature.verdicts[f] == "no_drift" for f in binnings.features)  # both marginals unchanged
    result = domain_classifier_drift(reference, current, max_rows=2_000)
    assert (result.feature, result.statistic, result.verdict) == (MULTIVARIATE, "domain_auc", "drift")
    assert result.value > 0.6 and result.p_value == pytest.approx(1 / 21)
    assert result.rows == 2_000


def test_the_domain_classifier_does_not_flag_the_same_distribution() -> None:
    rng = np.random.default_rng(22)
    result = domain_classifier_drift(correlated(2_000, 0.8, rng), correlated(2_000, 0.8, rng), max_rows=2_000)
    assert result.verdict == "no_drift"
    assert result.value < 0.55
    again = domain_classifier_drift(correlated(2_000, 0.8, rng), correlated(2_000, 0.8, rng), max_rows=2_000, seed=1)
    assert again.verdict == "no_drift"


def test_the_domain_classifier_needs_rows_and_matching_columns() -> None:
    rng = np.random.default_rng(23)
    small = domain_classifier_drift(correlated(1_000, 0.8, rng), correlated(150, 0.0, rng))
    assert small.verdict == "not_enough_data" and small.rows == 150
    with pytest.raises(SchemaError, match="same columns"):
        domain_classifier_drift({"a": np.zeros(300)}, {"b": np.zeros(300)})
    with pytest.raises(SchemaError, match="different lengths"):
        domain_classifier_drift({"a": np.zeros(300), "b": np.zeros(299)}, {"a": np.zeros(300), "b": np.zeros(300)})


# --- sample-size-aware verdicts (issue 17: S4, S5, S13, the TVD nit) --------------------------------


def test_the_test_weighs_the_reference_by_its_rows() -> None:
    """S13: the same window against the same shares is significant against an exact reference and not against
    one counted on 500 rows, whose own noise is that large."""
    shares = np.array([0.4, 0.3, 0.2, 0.1])
    window = np.array([4_200, 2_900, 1_900, 1_000])  # 2 points off on 10,000 rows
    assert chi_square_pvalue(shares, window) < 0.005
    assert chi_square_pvalue(shares, window, reference_rows=500) > 0.5
    exact_again = chi_square_pvalue(shares, window, reference_rows=10_000_000)
    assert exact_again == pytest.approx(chi_square_pvalue(shares, window), rel=0.05)


def test_sparse_buckets_are_merged_until_each_group_expects_five_rows() -> None:
    """100 equal categories in a window of 200 rows (2 expected rows each): groups of 3 (the last of 4); a table
    left with one group tests its largest bucket against the rest."""
    from shipml.core.drift import groups_of

    pooled = np.full(100, 0.01)
    groups = groups_of(pooled, 200)
    sizes = np.bincount(groups, weights=pooled) * 200
    assert sizes.min() >= 5 and len(sizes) == 33
    assert set(groups_of(np.array([0.999, 0.001]), 200).tolist()) == {0, 1}  # one group left: largest vs rest
    bins = groups_of(np.full(10, 0.1), 40, ordered=True)  # a numeric feature's bins: neighbours, never by counts
    assert bins.tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]


def test_a_shift_is_measured_in_reference_standard_deviations() -> None:
    """The numeric effect size: a +0.5 sd mean shift of a normal feature measures about 0.45 (the bins' means span
    the central 90 % of the mass); the same values measure 0; a constant reference has no such statistic."""
    rng = np.random.default_rng(31)
    binning = Binning.of("x", numeric_profile(rng.normal(0.0, 2.0, 50_000)))
    moved = {r.statistic: r for r in drift_of(binning, numeric_counts(binning, rng.normal(1.0, 2.0, 50_000)))}
    assert moved["wasserstein"].value == pytest.approx(0.45, abs=0.03)
    assert moved["wasserstein"].verdict == "drift" and moved["wasserstein"].decisive
    same = {r.statistic: r for r in drift_of(binning, numeric_counts(binning, rng.normal(0.0, 2.0, 50_000)))}
    assert same["wasserstein"].value < 0.02 and same["wasserstein"].verdict == "no_drift"
    constant = Binning.of("c", numeric_profile(np.full(1_000, 3.0)))
    assert constant.scale is None
    assert "wasserstein" not in {r.statistic for r in drift_of(constant, numeric_counts(constant, np.full(500, 3.0)))}


def test_ten_points_moved_is_exactly_on_the_drift_floor() -> None:
    """The nit: TVD compares the raw shares, so a category moving from 30 % to exactly 40 % is drift (smoothed shares
    made it 0.0999 and a coin flip between warn and drift)."""
    binning = Binning.of("c", CategoricalProfile({"a": 0.3, "b": 0.7}, 0.0, rows=10_000))
    results = {r.statistic: r for r in drift_of(binning, np.array([4_000, 6_000, 0, 0]))}
    assert results["tvd"].value == pytest.approx(0.1, abs=1e-12)
    assert results["tvd"].verdict == "drift"


def test_a_long_tail_expects_the_categories_training_missed() -> None:
    """S5: the unseen bucket expects Good-Turing's share (training rows whose category was seen once); a long tail
    profiled on 500 rows judged on a million clean rows is not drift, and a new category taking 30 % still is."""
    rng = np.random.default_rng(41)
    categories = np.array([f"c{i}" for i in range(100)], dtype=object)
    shares = _zipf(100)
    training = rng.choice(categories, 500, p=shares)
    binning = Binning.of("tail", categorical_profile(pd.Series(training)))
    _, seen_counts = np.unique(training, return_counts=True)
    assert binning.reference[-2] == pytest.approx(np.count_nonzero(seen_counts == 1) / 500)
    assert binning.reference.sum() == pytest.approx(1.0)
    clean = categorical_counts(binning, rng.choice(categories, 1_000_000, p=shares))
    assert decisive(drift_of(binning, clean)) == "no_drift"
    new = categorical_counts(
        binning, np.where(rng.random(1_000_000) < 0.3, "new", rng.choice(categories, 1_000_000, p=shares))
    )
    assert decisive(drift_of(binning, new)) == "drift"


def test_a_profile_registered_before_the_new_fields_keeps_loading() -> None:
    """A profile without a feature's rows or bin centres: the profile's rows hold for every feature, and each inner
    bin sits at its midpoint, each open outer bin half its neighbour's width beyond its edge."""
    old = {
        "rows": 1_000,
        "numeric": {
            "x": {"edges": [1.0, 2.0, 4.0], "frequencies": [0.25, 0.25, 0.25, 0.25], "null_rate": 0.0,
                  "mean": 2.5, "std": 1.5},
        },
        "categorical": {"c": {"frequencies": {"a": 0.999, "b": 0.001}, "null_rate": 0.0}},
        "prediction": {"edges": [0.5], "frequencies": [0.5, 0.5], "null_rate": 0.0, "mean": 0.5, "std": 0.3},
    }  # fmt: skip
    profile = ReferenceProfile.from_dict(old)
    assert profile.numeric["x"].rows == 1_000 and profile.numeric["x"].centres is None
    binnings = ProfileBinnings.of(profile)
    x = binnings.features["x"]
    assert x.rows == 1_000 and x.scale == 1.5
    np.testing.assert_allclose(x.centres, [0.5, 1.5, 3.0, 5.0])
    np.testing.assert_allclose(binnings.prediction.centres, [0.2, 0.8])  # one edge: one sd beyond it
    c = binnings.features["c"]
    assert c.rows == 1_000 and c.reference[-2] == pytest.approx(0.001)  # "b" was seen once
    assert ReferenceProfile.from_dict(json.loads(profile.to_json())) == profile


def test_new_profiles_record_rows_and_bin_means() -> None:
    values = np.r_[np.arange(100.0), [np.nan] * 10]
    p = numeric_profile(values)
    assert p.rows == 110 and p.centres is not None and len(p.centres) == len(p.edges) + 1
    assert p.centres[0] == pytest.approx(np.arange(100.0)[:10].mean())
    assert categorical_profile(pd.Series(["a", "b", None])).rows == 3
