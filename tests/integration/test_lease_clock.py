"""Leases run on the database's clock: two processes whose own clocks disagree by an hour (``time.time`` patched in
one) still let exactly one of them hold a lease, on each dialect."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.support.dialects import DIALECTS, store_uri_for

pytestmark = [pytest.mark.integration]

TAKE = textwrap.dedent(
    """
    import sys, time
    skew = float(sys.argv[2])
    if skew:
        real = time.time
        time.time = lambda: real() + skew  # this process's clock is off by `skew` seconds
    from shipml.adapters.store import PredictionStore
    store = PredictionStore(sys.argv[1])
    took = store.leases.acquire("monitor:churn", sys.argv[3], ttl_s=60.0)
    print("took" if took else "refused", store.leases.holder("monitor:churn"))
    store.close()
    """
)


def take(uri: str, holder: str, skew_s: float) -> tuple[bool, str]:
    """Try the lease in a new process whose clock is off by ``skew_s``: whether it took it, and who holds it."""
    done = subprocess.run(
        [sys.executable, "-c", TAKE, uri, str(skew_s), holder], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    verdict, seen = done.stdout.split()
    return verdict == "took", seen


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize("skew_s", [-3600.0, 3600.0], ids=["slow-clock-first", "fast-clock-second"])
def test_one_holder_when_clocks_differ(
    request: pytest.FixtureRequest, dialect: str, tmp_path: Path, skew_s: float
) -> None:
    uri = store_uri_for(request, dialect, tmp_path)
    # An hour slow, the first holder's lease looked expired to everyone else at once; an hour fast, the second
    # took a lease that had 60 s to run. On the database's clock, the second is refused either way.
    first_skew, second_skew = (skew_s, 0.0) if skew_s < 0 else (0.0, skew_s)
    took, seen = take(uri, "worker-a", first_skew)
    assert took and seen == "worker-a"
    took, seen = take(uri, "worker-b", second_skew)
    assert not took, "two processes hold the lease at once"
    assert seen == "worker-a"
