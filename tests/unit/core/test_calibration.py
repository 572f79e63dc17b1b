"""The recalibration recorded at training: it recovers a miscalibration of the log-odds, is judged out of sample,
and reads back from its record."""

from __future__ import annotations

import numpy as np
import pytest

from shipml.core.calibration import Recalibration, calibration_error, fit_recalibration


def _holdout(n: int, scale: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels from the true probability; the model's log-odds are the truth's times ``scale``."""
    rng = np.random.default_rng(seed)
    logit = -1.0 + 1.5 * rng.standard_normal(n)
    y = rng.random(n) < 1 / (1 + np.exp(-logit))
    return y, 1 / (1 + np.exp(-scale * logit))


def test_an_over_confident_models_map_undoes_its_slope() -> None:
    y, score = _holdout(20_000, 1.3)
    recalibration = fit_recalibration(y, score)
    assert recalibration is not None
    assert recalibration.slope == pytest.approx(1 / 1.3, abs=0.03)
    assert recalibration.intercept == pytest.approx(0.0, abs=0.05)
    assert calibration_error(y, score) > 0.03  # the raw scores are off
    assert recalibration.calibration_error < 0.01  # the mapped ones, judged on rows the map was not fitted on
    assert calibration_error(y, recalibration.apply(score)) < 0.01


def test_a_calibrated_models_map_is_about_the_identity() -> None:
    y, score = _holdout(20_000, 1.0, seed=1)
    recalibration = fit_recalibration(y, score)
    assert recalibration is not None
    assert (recalibration.slope, recalibration.intercept) == pytest.approx((1.0, 0.0), abs=0.05)
    np.testing.assert_allclose(recalibration.apply(score), score, atol=0.02)


def test_too_few_rows_of_an_outcome_fit_no_map_and_the_record_reads_back() -> None:
    y, score = _holdout(400, 1.0)
    assert fit_recalibration(np.zeros(400, dtype=bool) | (np.arange(400) < 5), score) is None
    recalibration = fit_recalibration(y, score)
    assert recalibration is not None
    assert Recalibration.from_dict(recalibration.to_dict()) == recalibration
    assert Recalibration.from_dict(None) is None  # a version trained before
    assert np.isnan(recalibration.apply(np.array([np.nan, 0.5]))[0])
