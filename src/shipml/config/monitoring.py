"""The sections of monitoring (the drift job, its thresholds and alerts) and of experiments (how `ab report` and the
canary judge)."""

from __future__ import annotations

from pydantic import Field, field_validator

from shipml.config.section import Section
from shipml.core.window import duration_problem


class DriftSettings(Section):
    """The drift verdict's test level, floors and sample size (core/drift.py says what each measures and which
    decide; docs/statistics.md what the defaults cost and buy)."""

    psi_warn: float = Field(default=0.1, ge=0.0, description="population stability index: warn at or above")
    psi_drift: float = Field(default=0.2, ge=0.0, description="population stability index: drift at or above")
    js_warn: float = Field(default=0.13, ge=0.0, le=1.0, description="Jensen-Shannon distance (reported): warn")
    js_drift: float = Field(default=0.19, ge=0.0, le=1.0, description="Jensen-Shannon distance (reported): drift")
    chi2_alpha: float = Field(
        default=0.005,
        gt=0.0,
        lt=1.0,
        description="level of the two-sample chi-square test (window against training): no statistic warns or "
        "drifts unless its p-value is under this",
    )
    tvd_warn: float = Field(default=0.05, ge=0.0, le=1.0, description="categoricals: total variation distance: warn")
    tvd_drift: float = Field(default=0.1, ge=0.0, le=1.0, description="categoricals: total variation distance: drift")
    wasserstein_warn: float = Field(
        default=0.05, ge=0.0, description="numeric: Wasserstein distance in training standard deviations: warn"
    )
    wasserstein_drift: float = Field(
        default=0.1, ge=0.0, description="numeric: Wasserstein distance in training standard deviations: drift"
    )
    domain_alpha: float = Field(
        default=0.05, gt=0.0, lt=1.0, description="domain classifier: permutation p-value under which AUC is judged"
    )
    domain_auc_warn: float = Field(default=0.53, ge=0.5, le=1.0, description="domain classifier AUC: warn")
    domain_auc_drift: float = Field(default=0.55, ge=0.5, le=1.0, description="domain classifier AUC: drift")
    min_rows: int = Field(
        default=200,
        ge=1,
        description="fewer rows than this in a window: the verdict is not_enough_data (the test merges sparse "
        "buckets itself, so this bounds power, not validity)",
    )
    rows_per_unit: float = Field(
        default=1.0,
        ge=1.0,
        description="rows per independent unit in a window (each customer scored m times a window: m); the "
        "drift test counts rows divided by this",
    )


class MonitorSettings(Section):
    """The monitoring job (`shipml monitor drift`, and its schedule inside `shipml serve`)."""

    window: str = Field(default="24h", description="the window a run judges, ending now (e.g. 30m, 24h, 7d)")
    interval_s: float = Field(
        default=0.0, ge=0.0, description="shipml serve runs the job this often (one runner across workers); 0: never"
    )
    drift: DriftSettings = DriftSettings()
    multivariate: bool = Field(
        default=True, description="also run the domain classifier (a multivariate check) on a sample of the rows"
    )
    label_delay_s: float = Field(
        default=0.0, ge=0.0, description="predictions younger than this are not yet expected to have feedback"
    )
    performance_tolerance: float = Field(
        default=0.05, ge=0.0, description="flag a drop when a metric is worse than holdout by more than this"
    )
    min_labelled: int = Field(default=100, ge=1, description="labelled rows a realised metric needs to be judged")
    max_calibration_error: float = Field(
        default=0.05,
        ge=0.0,
        le=1.0,
        description="estimated performance is refused above this holdout calibration error (of the scores "
        "recalibrated at training, for versions that recorded a recalibration)",
    )
    recompute_chunk_rows: int = Field(
        default=50_000,
        ge=100,
        description="`monitor drift --recompute` reads the window's stored rows this many at a time (its memory "
        "grows with this, not with the window)",
    )
    webhook_url: str | None = Field(
        default=None, description="POST a JSON (Slack-compatible) message here when a verdict changes"
    )
    webhook_cooldown_s: float = Field(
        default=3600.0, ge=0.0, description="at most one message per model and verdict in this long"
    )

    @field_validator("window")
    @classmethod
    def _a_duration(cls, window: str) -> str:
        problem = duration_problem(window)
        if problem is not None:
            raise ValueError(problem)
        return window


class ExperimentSettings(Section):
    """How `shipml ab report` judges an experiment (core/experiments.py says what each number does)."""

    min_count: int = Field(
        default=100,
        ge=1,
        description="units (routing keys with labelled predictions) each variant needs before a verdict other than "
        "continue",
    )
    min_events: int = Field(
        default=10,
        ge=0,
        description="a 0/1 primary metric decides only once each variant expects this many of its rarer outcome "
        "at the pooled rate",
    )
    error_rate_margin: float = Field(
        default=0.01,
        ge=0.0,
        le=1.0,
        description="a challenger's error rate may exceed the champion's by at most this (absolute) to ship",
    )
    latency_margin: float = Field(
        default=0.01,
        ge=0.0,
        le=1.0,
        description="a challenger may have at most this share of its requests over the champion's p99 latency "
        "beyond the champion's own 1 % (0.01: 2 %, i.e. its p98 no slower than the champion's p99) to ship",
    )
    expected_n: int = Field(
        default=10_000,
        ge=1,
        description="units (routing keys with labelled predictions, all variants) the experiment plans for: the "
        "anytime-valid intervals are tightest there, and valid at every size",
    )
    mde: float = Field(
        default=0.02,
        gt=0.0,
        description="minimum detectable effect, relative to the champion's metric (0.02: 2 %), for the sample "
        "size still needed",
    )
    alpha: float = Field(default=0.05, gt=0.0, lt=1.0, description="1 - the confidence of every interval and test")
    canary_settle_s: float = Field(
        default=15.0,
        ge=0.0,
        le=3600.0,
        description="a canary step's first seconds (at most half its interval) are not judged: the service's "
        "workers take up to a poll and a load to serve the step's weight",
    )
