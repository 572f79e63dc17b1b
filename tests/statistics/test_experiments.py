"""Experiments and guardrails (issue 17, items 2-4 and S11 for `ab report`): seeded simulations through shipml's own
functions, each printing its figure and asserting it within its Monte-Carlo error (``mc_margin``).

- the sample-ratio test under a correct split, read at 1,000 looks: P(ever flagged) <= its level;
- the latency guardrail in an A/A test where some requests are batches: one latency per request (what
  ``read_latencies`` returns, tests/unit/pipelines/test_experiments_job.py) keeps its false "violated" <= alpha,
  and so it does when a key's requests are all slower than others';
- the primary metric in A/A tests read at every look: per routing key (5 requests a key, within-key correlation
  0.1 and 0.3), and at the edges (50/50, 10 % and 1 % shares at rates 0.5, 0.98, 0.995, 0.02, 0.005);
- the error-rate guardrail at its margin at 1-50 % shares (false "holds", what a canary step needs), and in an A/A
  test whose errors cluster within keys (false "violated").

Each figure also shows the method it replaced on the same draws ("before"), computed with the formulas the
report used until then: one unit per prediction with the plug-in variance p(1 - p); the error rate's normal
interval with Agresti-Caffo's variance.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from scipy.special import chdtrc

from shipml.core.experiments import (
    SRM_THRESHOLD,
    Guardrail,
    VariantStats,
    compare,
    decide,
    latency_guardrail,
    rate_guardrail,
    sample_ratio_mismatch,
    unit_stats,
)
from shipml.core.sequential import multinomial_log_evidence
from shipml.core.units import UnitSums
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


def test_latency_guardrail_with_latencies_clustered_by_key(rng: np.random.Generator) -> None:
    """The latency's unit is the request. Keys whose requests are all slower (5 requests a key, each key's latency
    scaled by its own lognormal factor, sd 0.5 on the log scale: a customer with heavy records), A/A at 50/50
    and 10 %, read every 1,000 requests to 30,000: P(ever violated) stays <= alpha."""
    runs, looks, alpha = replicates(100), np.arange(1_000, 30_001, 1_000), 0.05
    rows = {}
    for share in (0.5, 0.1):
        violated = 0
        for _ in range(runs):
            keys = looks[-1] // 5
            arm = np.repeat(rng.random(keys) < share, 5)
            latency = np.repeat(rng.lognormal(0.0, 0.5, size=keys), 5) * rng.lognormal(np.log(20.0), 0.4, keys * 5)
            for look in looks:
                a, lat = arm[:look], latency[:look]
                if latency_guardrail(lat[~a], lat[a], 0.01, alpha=alpha).status == "violated":
                    violated += 1
                    break
        rows[f"share{share:g}"] = violated / runs
    figure("latency A/A clustered by key", runs=runs, looks=len(looks), **rows)
    assert max(rows.values()) <= alpha + mc_margin(alpha, runs)


# --- the primary metric: units and the edges ----------------------------------------------------------------------

ALPHA = 0.05


def _cumulative_units(sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Running sums of S, N, S^2, N^2 and S N over units in arrival order: (units, 5)."""
    return np.cumsum(np.c_[sums, counts, sums * sums, counts * counts, sums * counts], axis=0)


def _sums_at(running: np.ndarray, units: int) -> UnitSums:
    total, n, total_sq, n_sq, cross = running[units - 1].tolist()
    return UnitSums(units, n, total, total_sq, n_sq, cross)


def _plug_in(name: str, successes: float, n: float) -> VariantStats:
    """The analysis before: every prediction a unit, variance p (1 - p) (0 while an arm has no failure)."""
    p = successes / n
    return VariantStats(name, round(n), p, p, p, "proportion", p * (1.0 - p))


def _significant(control: UnitSums, treatment: UnitSums) -> tuple[bool, bool]:
    """(now, before): whether the report calls the primary metric significant (ship or rollback on it alone)."""
    now = decide(compare(unit_stats("a", control, "proportion"), unit_stats("b", treatment, "proportion")))
    old = compare(_plug_in("a", control.total, control.observations),
                  _plug_in("b", treatment.total, treatment.observations))  # fmt: skip
    before = decide(old, min_count=100, min_events=0)
    return now.verdict in ("ship", "rollback"), before.verdict in ("ship", "rollback")


def _a_a(
    rng: np.random.Generator,
    runs: int,
    looks: np.ndarray,
    share: float,
    draw_units: Callable[[int], tuple[np.ndarray, np.ndarray]],
) -> tuple[float, float]:
    """P(ever significant) in A/A tests read at ``looks`` (units in all), now and before."""
    ever = np.zeros((runs, 2), dtype=bool)
    for run in range(runs):
        total = int(looks[-1])
        arm = rng.random(total) < share
        sums, counts = draw_units(total)
        running = [_cumulative_units(sums[arm == side], counts[arm == side]) for side in (False, True)]
        seen = [np.cumsum(arm == side) for side in (False, True)]
        for look in looks:
            nc, nt = int(seen[0][look - 1]), int(seen[1][look - 1])
            if nc < 2 or nt < 2:
                continue
            ever[run] |= _significant(_sums_at(running[0], nc), _sums_at(running[1], nt))
            if ever[run].all():
                break
    return float(ever[:, 0].mean()), float(ever[:, 1].mean())


def test_identical_variants_analysed_per_key_are_significant_at_most_alpha(rng: np.random.Generator) -> None:
    """S2: 4,000 keys of 1 + Poisson(4) requests each, every key with its own accuracy (mean 0.85, within-key
    correlation 0.1 or 0.3), 50/50, read every 200 keys: one unit per prediction calls identical variants
    different far more often than alpha; one per key (the delta method) does not."""
    runs, looks = replicates(300), np.arange(200, 4_001, 200)
    for icc in (0.1, 0.3):
        size = (1.0 - icc) / icc  # Beta(a, b) with a + b = size has intra-class correlation 1 / (size + 1)

        def draw(n: int, size: float = size) -> tuple[np.ndarray, np.ndarray]:
            counts = 1 + rng.poisson(4, size=n)
            return rng.binomial(counts, rng.beta(0.85 * size, 0.15 * size, size=n)).astype(float), counts.astype(float)

        now, before = _a_a(rng, runs, looks, 0.5, draw)
        figure(f"experiments A/A per key, icc {icc}", runs=runs, looks=len(looks), requests_per_key=5,
               ever_significant=now, ever_significant_before_per_prediction=before)  # fmt: skip
        assert now <= ALPHA + mc_margin(ALPHA, runs)


def test_identical_variants_at_the_edges_are_significant_at_most_alpha(rng: np.random.Generator) -> None:
    """S3: A/A at 50/50, 10 % and 1 % treatment shares, rates 0.5, 0.98, 0.995, 0.02 and 0.005, one request a key,
    read every 500 units to 40,000: the plug-in variance (0 while the small arm has no failure) is fooled up to
    60 % of the time; the Agresti-Caffo floor and the minimum of expected rare outcomes keep it under alpha."""
    runs, looks = replicates(120), np.arange(500, 40_001, 500)
    worst = 0.0
    for share in (0.5, 0.1, 0.01):
        rows = {}
        for rate in (0.5, 0.98, 0.995, 0.02, 0.005):

            def draw(n: int, rate: float = rate) -> tuple[np.ndarray, np.ndarray]:
                return (rng.random(n) < rate).astype(float), np.ones(n)

            now, before = _a_a(rng, runs, looks, share, draw)
            rows[f"p{rate:g}"] = f"{now:.3f}(before {before:.3f})"
            worst = max(worst, now)
        figure(f"experiments A/A at the edges, share {share:.0%}", runs=runs, looks=len(looks), **rows)
    assert worst <= ALPHA + mc_margin(ALPHA, runs)


# --- the error-rate guardrail ---------------------------------------------------------------------------------


def _old_error_rate(failed: int, requests: int) -> VariantStats:
    adjusted = (failed + 1.0) / (requests + 2.0)
    return VariantStats("", requests, failed / requests, 0.0, 1.0, "proportion", adjusted * (1.0 - adjusted))


def _error_statuses(control: tuple[int, int], treatment: tuple[int, int], margin: float) -> tuple[str, str]:
    """(now, before) status of the error-rate guardrail."""
    now = rate_guardrail(control, treatment, margin, alpha=ALPHA).status
    old = compare(_old_error_rate(*control), _old_error_rate(*treatment), higher_is_better=False)
    return now, Guardrail.from_comparison(old, margin).status


def test_the_error_rate_guardrail_holds_at_its_margin_rarely(rng: np.random.Generator) -> None:
    """S6: the challenger's error rate is exactly the margin above the champion's (0.5 % -> 1.5 %, 2 % -> 3 %), at
    50 %, 10 %, 5 % and 1 % shares, read every 2,000 requests to 60,000: "holds" (what a canary step needs to go
    on) must stay rare, <= alpha / 2 (the side of the two-sided level); the normal interval said it up to 9 %."""
    runs, looks, margin = replicates(60), np.arange(2_000, 60_001, 2_000), 0.01
    worst = 0.0
    for champion in (0.005, 0.02):
        rows = {}
        for share in (0.5, 0.1, 0.05, 0.01):
            ever = np.zeros((runs, 2), dtype=bool)
            for run in range(runs):
                arm = rng.random(looks[-1]) < share
                failed = rng.random(looks[-1]) < np.where(arm, champion + margin, champion)
                fc, ft = np.cumsum(failed & ~arm), np.cumsum(failed & arm)
                nc, nt = np.cumsum(~arm), np.cumsum(arm)
                for look in looks - 1:
                    if nc[look] == 0 or nt[look] == 0:
                        continue
                    now, before = _error_statuses((int(fc[look]), int(nc[look])), (int(ft[look]), int(nt[look])),
                                                  margin)  # fmt: skip
                    ever[run] |= (now == "holds", before == "holds")
            rows[f"share{share:g}"] = f"{ever[:, 0].mean():.3f}(before {ever[:, 1].mean():.3f})"
            worst = max(worst, float(ever[:, 0].mean()))
        figure(f"error rate at the margin, champion {champion:.1%}", runs=runs, looks=len(looks), **rows)
    assert worst <= ALPHA / 2 + mc_margin(ALPHA / 2, runs)


def test_the_error_rate_guardrail_with_errors_clustered_by_key(rng: np.random.Generator) -> None:
    """The error rate's unit is the request (the exact per-arm sequences need independent trials). Errors that
    cluster within keys (5 requests a key, each key with its own error rate, mean 1 %, within-key correlation
    0.3: a client whose records keep failing) in an A/A test at 50/50 and 10 %: P(ever violated) stays <= alpha,
    because the union of two per-arm sequences at alpha / 2 is wider than the design effect (2.2) needs."""
    runs, looks, margin, icc = replicates(60), np.arange(2_000, 60_001, 2_000), 0.01, 0.3
    size = (1.0 - icc) / icc
    rows = {}
    worst = 0.0
    for share in (0.5, 0.1):
        ever = np.zeros((runs, 2), dtype=bool)
        for run in range(runs):
            keys = looks[-1] // 5
            rate = rng.beta(0.01 * size, 0.99 * size, size=keys)
            arm = np.repeat(rng.random(keys) < share, 5)
            failed = rng.random(keys * 5) < np.repeat(rate, 5)
            fc, ft = np.cumsum(failed & ~arm), np.cumsum(failed & arm)
            nc, nt = np.cumsum(~arm), np.cumsum(arm)
            for look in looks - 1:
                if nc[look] == 0 or nt[look] == 0:
                    continue
                now, before = _error_statuses((int(fc[look]), int(nc[look])), (int(ft[look]), int(nt[look])), margin)
                ever[run] |= (now == "violated", before == "violated")
        rows[f"share{share:g}"] = f"{ever[:, 0].mean():.3f}(before {ever[:, 1].mean():.3f})"
        worst = max(worst, float(ever[:, 0].mean()))
    figure("error rate A/A clustered by key", runs=runs, looks=len(looks), icc=icc, **rows)
    assert worst <= ALPHA + mc_margin(ALPHA, runs)


def _first_look(statuses: list[str], wanted: str, looks: np.ndarray) -> float:
    """The candidate requests at the first look with ``wanted`` (inf if never)."""
    return next((float(n) for n, s in zip(looks, statuses, strict=True) if s == wanted), float("inf"))


def test_the_error_rate_guardrail_decides_within_a_few_hundred_candidate_requests(rng: np.random.Generator) -> None:
    """Power, and what a canary step needs: a challenger failing 5 % against 0.5 % is violated, and an equal one
    (0.5 % both) holds, read every 100 candidate requests, at 50 % and 5 % shares: the median candidate requests
    each takes (a step needs that many before `--require error_rate` lets it go on)."""
    runs, margin = replicates(40), 0.01
    looks = np.arange(100, 6_001, 100)
    rows: dict[str, float] = {}
    for share in (0.5, 0.05):
        for label, rate, wanted in (("violated_5pct", 0.05, "violated"), ("holds_equal", 0.005, "holds")):
            first = []
            for _ in range(runs):
                champion_n = np.round(looks * (1.0 - share) / share).astype(int)
                fc = rng.binomial(np.diff(champion_n, prepend=0), 0.005).cumsum()
                ft = rng.binomial(np.diff(looks, prepend=0), rate).cumsum()
                statuses = [
                    rate_guardrail((int(a), int(n)), (int(b), int(m)), margin, alpha=ALPHA).status
                    for a, n, b, m in zip(fc, champion_n, ft, looks, strict=True)
                ]
                first.append(_first_look(statuses, wanted, looks))
            rows[f"{label}_share{share:g}_median_requests"] = float(np.median(first))
            rows[f"{label}_share{share:g}_within_6000"] = float(np.mean(np.isfinite(first)))
    figure("error rate power", runs=runs, **rows)
    assert min(v for k, v in rows.items() if k.endswith("within_6000")) >= 0.9
