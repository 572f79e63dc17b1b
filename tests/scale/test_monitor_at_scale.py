"""Issue 18 item 6, small: `monitor drift --recompute` over 24 h of 200,000 predictions stored in Postgres, through
the bench that `make bench` runs at 10M (bench/store_scale.py): the rows loaded with COPY, recounted by a fresh
process reading them in chunks of 10,000, then the 24 h verdict judged from the histograms.

Asserted: the recount equals the loaded histograms bucket for bucket and the verdict flags exactly the drifted
columns (the bench checks both and exits 1 otherwise); the streamed recount's memory grows by at most
``BYTES_PER_CHUNK_ROW`` per row of a chunk, whatever the window holds, where the window read whole (the recount
before it streamed) grows with the window. Times are printed as figures, never asserted.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.dialects import fresh_postgres_database

pytestmark = [pytest.mark.integration]

BENCH = Path(__file__).resolve().parents[2] / "bench" / "store_scale.py"
ROWS, CHUNK_ROWS = 200_000, 10_000
# A chunk in memory: the fetched rows as Python values (~17 columns), their columns, the numpy window, and the
# driver's buffer of the fetch: measured about 3.3 kB a row; 8 kB leaves room for the allocator.
BYTES_PER_CHUNK_ROW = 8_000
_GROWN = re.compile(r"^FIGURE store_scale (recompute|recompute-in-memory) \d+ rows: .* grown (\d+) MB\)$", re.M)


def test_the_streamed_recompute_holds_a_chunk_not_the_window(postgres_uri: str, tmp_path: Path) -> None:
    uri = fresh_postgres_database(postgres_uri)
    argv = [sys.executable, str(BENCH), "--rows", str(ROWS), "--store-uri", uri, "--data", str(tmp_path)]
    done = subprocess.run(
        [*argv, "--chunk-rows", str(CHUNK_ROWS), "--in-memory"], capture_output=True, text=True, check=False
    )
    print(done.stdout)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"checked: {ROWS:,} rows in 1440 minutes, the counts equal the loaded ones" in done.stdout
    assert "verdict equal to the loaded histograms': True" in done.stdout
    grown = {kind: int(mb) for kind, mb in _GROWN.findall(done.stdout)}
    bound_mb = CHUNK_ROWS * BYTES_PER_CHUNK_ROW / 2**20
    assert grown["recompute"] <= bound_mb, f"streamed: grew {grown['recompute']} MB, over {bound_mb:.0f} MB"
    # the window read whole holds 20 chunks' worth at once: well over the bound (the recount before this issue)
    assert grown["recompute-in-memory"] > 2 * grown["recompute"], grown
