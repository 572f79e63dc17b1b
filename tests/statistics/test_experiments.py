"""Experiments and guardrails (issue 17, items 2-4 and S11 for `ab report`): seeded simulations through shipml's own
functions, each printing its figure and asserting it within its Monte-Carlo error (``mc_margin``).

- the sample-ratio test under a correct split, read at 1,000 looks: P(ever flagged) <= its level;
- the latency guardrail in an A/A test where some requests are batches: one latency per request (what
  ``read_latencies`` returns, tests/unit/pipelines/test_experiments_job.py) keeps its false "violated" <= alpha;
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import chdtrc

from shipml.core.experiments import SRM_THRESHOLD, latency_guardrail, sample_ratio_mismatch
from shipml.core.sequential import multinomial_log_evidence
from tests.statistics.conftest import figure, mc_margin, replicates

SRM_LOOKS = 1_000  # `ab report` every hour for six weeks
SRM_UNITS_PER_LOOK = 100


def _srm_paths(rng: np.random.Generator, runs: int, shares: np.ndarray, served: np.ndarray) -> np.ndarray:
    """Cumulative units per variant at each look: (runs, looks, variants), units assigned with ``served``."""
    new = rng.multinomial(SRM_UNITS_PER_LOOK, served / served.sum(), size=(runs, SRM_LOOKS))
    return np.cumsum(new, axis=1).astype(np.float64)


def _chi_square_p(paths: np.ndarray, shares: np.ndarray) -> np.ndarray:
    """The fixed-horizon chi-square p-value at each look (what `ab report` ran before)."""
    expected = paths.sum(axis=-1, keepdims=True) * shares
    return np.asarray(chdtrc(len(shares) - 1, ((paths - expected) ** 2 / expected).sum(axis=-1)))


def test_srm_under_a_correct_split_is_flagged_at_most_at_its_level_over_1000_looks(rng: np.random.Generator) -> None:
    """S11: a correct split (50/50, 90/10, three variants 80/10/10), read after every 100 units to 100,000: the
    fixed chi-square re-run at each look flags 1-3 % of correct splits at its level 0.1 %; the sequential test
    keeps P(ever flagged) under its level, at 0.1 % and at 5 %."""
    runs = replicates(1_000)
    for shares in (np.array([0.5, 0.5]), np.array([0.9, 0.1]), np.array([0.8, 0.1, 0.1])):
        paths = _srm_paths(rng, runs, shares, shares)
        log_e = multinomial_log_evidence(paths, shares)
        sequential = {level: float(np.mean((log_e >= np.log(1.0 / level)).any(axis=1))) for level in (0.001, 0.05)}
        fixed = float(np.mean((_chi_square_p(paths, shares) < SRM_THRESHOLD).any(axis=1)))
        names = "abc"[: len(shares)]
        last = sample_ratio_mismatch(
            dict(zip(names, paths[0, -1].astype(int).tolist(), strict=True)),
            dict(zip(names, shares.tolist(), strict=True)),
        )
        assert last.p_value == pytest.approx(min(1.0, float(np.exp(-log_e[0, -1]))))  # the report's p-value
        figure(
            f"srm correct split {'/'.join(f'{s:.0%}' for s in shares)}", runs=runs, looks=SRM_LOOKS,
            ever_flagged_at_0_1pct=sequential[0.001], ever_flagged_at_5pct=sequential[0.05],
            chi_square_before_at_0_1pct=fixed,
        )  # fmt: skip
        for level, rate in sequential.items():
            assert rate <= level + mc_margin(level, runs), (shares, level, rate)


def test_srm_catches_a_lost_share_of_units(rng: np.random.Generator) -> None:
    """Power, at the default level 0.1 %: a variant that loses 5 % of its units (50/50), or one that is served
    nothing at all, is flagged; what the guarantee costs against the chi-square read once is in the figure."""
    runs = replicates(200)
    shares = np.array([0.5, 0.5])
    paths = _srm_paths(rng, runs, shares, np.array([0.5, 0.5 * 0.95]))
    flagged = multinomial_log_evidence(paths, shares) >= np.log(1.0 / SRM_THRESHOLD)
    by_10k, by_100k = float(np.mean(flagged[:, :100].any(axis=1))), float(np.mean(flagged.any(axis=1)))
    once = float(np.mean(_chi_square_p(paths[:, 99], shares) < SRM_THRESHOLD))
    empty = sample_ratio_mismatch({"a": 50, "b": 0}, {"a": 0.5, "b": 0.5})
    figure("srm power 5% loss", runs=runs, flagged_by_10k_units=by_10k, flagged_by_100k_units=by_100k,
           chi_square_once_at_10k=once, empty_variant_p_after_50_units=empty.p_value)  # fmt: skip
    assert by_100k >= 0.9 and empty.mismatch


def _arm_requests(rng: np.random.Generator, rows: int, batch_rows: int, batch_share: float) -> list[np.ndarray]:
    """One arm's requests in arrival order: (latency, rows) each; ``batch_share`` of the rows in batches of
    ``batch_rows`` rows, slower (one model call for all of them) than single requests."""
    singles = rng.lognormal(np.log(20.0), 0.4, size=rows)
    batches = rng.poisson(rows * batch_share / batch_rows)
    where = rng.integers(0, rows, size=batches)
    latency = np.r_[singles, rng.lognormal(np.log(80.0), 0.3, size=batches)]
    size = np.r_[np.ones(rows, dtype=np.int64), np.full(batches, batch_rows, dtype=np.int64)]
    order = np.argsort(np.r_[np.arange(rows), where], kind="stable")
    return [latency[order], size[order]]


def test_latency_guardrail_counts_a_batch_once_in_an_a_a_test(rng: np.random.Generator) -> None:
    """S7: A/A, 10 % of the rows in batches of 200 (each one slow request): counted once per row, one batch over
    the champion's p99 is 200 slow "requests", and identical variants are rolled back; counted once per request
    (the store's read), P(ever violated) stays <= alpha over 30 looks."""
    runs, looks, per_look, alpha = replicates(100), 30, 1_000, 0.05
    violated = {"per_request": 0, "per_row": 0}
    for _ in range(runs):
        arms = [_arm_requests(rng, looks * per_look, 200, 0.1) for _ in range(2)]
        ever = {"per_request": False, "per_row": False}
        for look in range(1, looks + 1):
            seen = []
            for latency, size in arms:
                rows_so_far = np.cumsum(size)
                upto = int(np.searchsorted(rows_so_far, look * per_look, side="right"))
                seen.append((latency[:upto], size[:upto]))
            (lc, sc), (lt, st) = seen
            for how, (c, t) in (("per_request", (lc, lt)), ("per_row", (np.repeat(lc, sc), np.repeat(lt, st)))):
                if not ever[how]:
                    ever[how] = latency_guardrail(c, t, 0.01, alpha=alpha).status == "violated"
        for how, flagged in ever.items():
            violated[how] += flagged
    per_request, per_row = violated["per_request"] / runs, violated["per_row"] / runs
    figure("latency A/A with 200-row batches", runs=runs, looks=looks, ever_violated=per_request,
           ever_violated_before_per_row=per_row)  # fmt: skip
    assert per_request <= alpha + mc_margin(alpha, runs)
