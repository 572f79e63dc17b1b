"""The statistics suite: seeded simulations that call shipml's own functions and check each verdict's
false-alarm rate and power where users run it (issue 17, item 9).

Every simulation takes its number of replicates from ``stats_scale``: 1 in `make test` (the whole suite within
about 3 minutes of CPU), ``SHIPML_STATS_SCALE`` (10 under `make stats`) for the larger version. Each prints its
figure as one line starting ``FIGURE stats`` (collected at the end of the run by the root conftest) and asserts
it within its Monte-Carlo error: a rate estimated from R independent replicates is compared with its goal plus
three standard errors, ``sqrt(goal * (1 - goal) / R)``, so a correct method fails by chance about once in 700
runs and a wrong one, off by more than that margin, fails at once.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pytest


def scale() -> float:
    """How much larger than the `make test` size each simulation runs (``SHIPML_STATS_SCALE``, default 1)."""
    raw = os.environ.get("SHIPML_STATS_SCALE") or "1"
    try:
        value = float(raw)
    except ValueError as exc:
        raise pytest.UsageError(f"SHIPML_STATS_SCALE must be a number, got {raw!r}") from exc
    if value <= 0:
        raise pytest.UsageError(f"SHIPML_STATS_SCALE must be positive, got {raw!r}")
    return value


def replicates(base: int) -> int:
    """``base`` replicates in `make test`, ``base * SHIPML_STATS_SCALE`` under `make stats`."""
    return max(1, round(base * scale()))


def mc_margin(rate: float, n: int, sigmas: float = 3.0) -> float:
    """``sigmas`` standard errors of a proportion near ``rate`` estimated from ``n`` independent replicates."""
    p = min(max(rate, 1.0 / max(n, 1)), 1.0)
    return sigmas * math.sqrt(p * (1.0 - p) / max(n, 1))


def figure(name: str, **values: object) -> str:
    """Print one ``FIGURE stats <name>: key=value ...`` line (the run's summary gathers them); return it."""
    parts = " ".join(f"{key}={_show(value)}" for key, value in values.items())
    line = f"FIGURE stats {name}: {parts}"
    print(line)
    return line


def _show(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


@pytest.fixture
def rng(request: pytest.FixtureRequest) -> np.random.Generator:
    """A generator seeded from the test's name: every simulation is reproducible, and two tests never share
    a stream."""
    seed = sum(ord(c) * (i + 1) for i, c in enumerate(request.node.nodeid)) % (2**32)
    return np.random.default_rng(seed)
