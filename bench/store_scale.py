"""make bench (the store at scale): the monitor over 24 h of 10M stored predictions on Postgres.

1. Loads 24 h of predictions into a Postgres store (``COPY`` into the store's own tables, opened and migrated by
   ``PredictionStore``): each minute's rows generated as bench/drift.py generates its drifted frames (10 features,
   3 of them drifted), written as the store writes a row (the features' slot columns and JSON, the answer), and
   each minute's counts on the profile's buckets written as the histograms the writers keep. A store already
   holding exactly this load is reused (its window and row count are kept in the data directory).
2. Times ``monitor drift --recompute``'s work (``MonitorJob.recompute``: every stored row of the 24 h read in
   chunks and counted again) in a fresh process: its wall time and peak RSS, goals under 60 s and 1 GB. It
   checks that the recount equals the loaded histograms, minute by minute and bucket by bucket.
3. Times the 24 h verdict (``store.histograms.read`` + sum + ``feature_drift``, what ``monitor drift`` judges
   drift on) in a fresh process, first call and best of 3, goal under 1 s, and checks that it flags exactly the
   drifted columns and that its summed counts are the loaded rows'.

Without ``--store-uri`` the script starts Debian's PostgreSQL itself in ``--data`` (kept between runs, so a
second run reuses the loaded rows), on a free loopback port, and stops it at the end. ``--in-memory`` also
times the recount of the whole window read at once (what it was before it streamed; at 10M rows that needs
about 13 GB, so use it with ``--rows 200000``). Figures are printed as ``FIGURE`` lines; nothing here asserts a
time.
"""

from __future__ import annotations

import argparse
import glob
import io
import json
import os
import platform
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from drift import (  # bench/drift.py, next to this script
    CATEGORICAL,
    DRIFTED,
    NUMERIC,
    REFERENCE_ROWS,
    categorical_values,
    generate,
    reference_profile,
    scores,
)

MODEL, VERSION, VARIANT = "churn", "1", "default"
DAY_MINUTES = 1440
GOAL_RECOMPUTE_S, GOAL_RECOMPUTE_MB, GOAL_VERDICT_S = 60.0, 1024.0, 1.0


# --- Postgres ----------------------------------------------------------------------------------


def _bindir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb is None:
        raise SystemExit("store_scale: PostgreSQL is not installed (Debian: apt-get install postgresql)")
    return Path(initdb).parent


def _as_postgres(argv: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """Debian's PostgreSQL in ``data`` (initialised once, kept), on a free loopback port until ``stop``."""

    def __init__(self, data: Path) -> None:
        self.data, self.bindir = data, _bindir()
        self.db = data / "db"
        if not (self.db / "PG_VERSION").is_file():
            data.mkdir(parents=True, exist_ok=True)
            if os.geteuid() == 0:
                shutil.chown(data, "postgres", "postgres")
            argv = [str(self.bindir / "initdb"), "-D", str(self.db), "-U", "shipml", "--auth=trust", "-E", "UTF8"]
            subprocess.run(_as_postgres(argv), check=True, capture_output=True)
        self.port = _free_port()
        # a bench server: no fsync (the load is rebuilt if lost), room for the load's WAL between checkpoints
        opts = (
            f"-p {self.port} -k {data} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off"
            " -c full_page_writes=off -c max_wal_size=8GB -c shared_buffers=256MB"
        )
        argv = [str(self.bindir / "pg_ctl"), "-D", str(self.db), "-o", opts, "-l", str(data / "log"), "-w", "start"]
        subprocess.run(_as_postgres(argv), check=True, capture_output=True)
        self.uri = f"postgresql+psycopg://shipml@127.0.0.1:{self.port}/postgres"

    def stop(self) -> None:
        argv = [str(self.bindir / "pg_ctl"), "-D", str(self.db), "-m", "fast", "stop"]
        subprocess.run(_as_postgres(argv), check=False, capture_output=True)


# --- the load -----------------------------------------------------------------------------------


def schema() -> Any:
    from shipml.core.schema import Feature, FeatureSchema, Target

    return FeatureSchema(
        features=tuple(Feature(n, "numeric", nullable=n == "balance") for n in NUMERIC)
        + tuple(Feature(n, "categorical") for n in CATEGORICAL),
        target=Target("churned", "binary"),
    )


def _reference() -> Any:
    import pandas as pd

    cols = generate(REFERENCE_ROWS, seed=1, drifted=False)
    frame: dict[str, Any] = {n: cols[n] for n in NUMERIC}
    frame |= {n: categorical_values(n, cols[n]) for n in CATEGORICAL}
    return reference_profile(pd.DataFrame(frame))


def _text(value: Any) -> str:
    """One value in COPY's text format (NULL as \\N; the generated text has no tab, newline or backslash)."""
    if value is None or (isinstance(value, float) and value != value):
        return "\\N"
    return repr(value) if isinstance(value, float) else str(value)


def _minute_rows(minute: int, n: int, slots: Any, seed: int) -> tuple[str, dict[str, np.ndarray], int]:
    """One minute's ``n`` rows as COPY text (the columns of ``copy_columns``), and their values by feature."""
    from shipml.core.binning import PREDICTION

    cols = generate(n, seed=seed, drifted=True)
    values: dict[str, np.ndarray] = {name: cols[name] for name in NUMERIC}
    values |= {name: categorical_values(name, cols[name]) for name in CATEGORICAL}
    p1 = scores(cols["monthly_charges"], cols["tenure_months"], cols["contract"] == 0)
    values[PREDICTION] = p1
    lists = {name: values[name].tolist() for name in (*NUMERIC, *CATEGORICAL)}
    ts = minute * 60.0 + np.sort(np.random.default_rng(seed).uniform(0, 60, n))
    out = io.StringIO()
    sha, slot_names = slots.schema_sha256, slots.names
    for i in range(n):
        record = {name: (None if lists[name][i] != lists[name][i] else lists[name][i]) for name in lists}
        p = float(p1[i])
        answer = {"predicted_class": "1" if p >= 0.5 else "0", "probabilities": {"0": 1.0 - p, "1": p}}
        head = (
            f"b{minute:08d}-{i:07d}", repr(float(ts[i])), MODEL, VERSION, VARIANT, "primary", "\\N", sha,
            answer["predicted_class"], repr(p), orjson.dumps(record).decode(), orjson.dumps(answer).decode(), "1.0",
            "ok",
        )  # fmt: skip
        out.write("\t".join((*head, *(_text(record[name]) for name in slot_names))))
        out.write("\n")
    return out.getvalue(), values, n


def load(uri: str, rows: int, data: Path) -> dict[str, Any]:
    """The window loaded in the store at ``uri`` (reused when ``data/window.json`` says it holds ``rows``)."""
    from shipml.adapters.store import PredictionStore, tables
    from shipml.adapters.store.histogram_table import Recount
    from shipml.core.binning import counts_of

    marker = data / "window.json"
    profile = _reference()
    (data / "profile.json").write_text(profile.to_json())
    store = PredictionStore(uri, statement_timeout_s=0)  # the load's statements run for minutes
    try:
        slots = store.predictions.register_schema(schema())
        layout = store.histograms.register_profile(MODEL, VERSION, profile, "binary", "1")
        if marker.is_file():
            window = json.loads(marker.read_text())
            if window.get("rows") == rows:  # (the started server's port changes from run to run)
                found = store.predictions.count(MODEL, since=window["since"], until=window["until"])
                if found == rows:
                    print(f"# reusing the {rows:,} rows loaded in {uri.split('@')[-1]}", flush=True)
                    window["uri"] = uri
                    marker.write_text(json.dumps(window))  # for the children
                    return dict(window) | {"loaded_s": None}
        print(f"# loading {rows:,} rows (24 h) with COPY ...", flush=True)
        until = int(time.time()) // 60 * 60 - 600  # a day that ended 10 minutes ago: every minute settled
        since = until - DAY_MINUTES * 60
        with store.database.engine.begin() as conn:
            conn.execute(tables.predictions.delete().where(tables.predictions.c.model == MODEL))
        _partition_days(store, since, until)
        columns = ", ".join(f'"{c}"' for c in (*tables.BASE_COLUMNS, *slots.columns))
        per_minute, extra = divmod(rows, DAY_MINUTES)
        entries = []
        started = time.perf_counter()
        raw = store.database.engine.raw_connection()
        try:
            cursor = raw.cursor()
            for hour in range(0, DAY_MINUTES, 60):  # one COPY and one commit an hour
                with cursor.copy(f"COPY predictions ({columns}) FROM STDIN") as copy:  # type: ignore[attr-defined]
                    for i in range(hour, hour + 60):
                        minute = since // 60 + i
                        n = per_minute + (1 if i < extra else 0)
                        text, values, n = _minute_rows(minute, n, slots, 10_000 + i)
                        copy.write(text)
                        flat = np.concatenate([counts_of(b, values[b.feature]) for b in layout.binnings])
                        entries.append(Recount(minute, VERSION, VARIANT, "primary", layout, n, flat))
                raw.commit()
        finally:
            raw.close()
        with store.database.engine.connect() as conn:
            conn.exec_driver_sql("ANALYZE predictions")
        store.histograms.replace(MODEL, since, until, entries)  # the writers' histograms of these rows
        loaded_s = time.perf_counter() - started
        total = {b.feature: c.tolist() for b, c in zip(layout.binnings, _by_feature(layout, entries), strict=True)}
        window = {"uri": uri, "rows": rows, "since": since, "until": until, "total": total}
        marker.write_text(json.dumps(window))
        return window | {"loaded_s": loaded_s}
    finally:
        store.close()


def _partition_days(store: Any, since: float, until: float) -> None:
    """The window's days as their own partitions, as the store's maintenance makes them ahead (where the store's
    predictions are partitioned by day)."""
    from shipml.adapters.store import partitions

    with store.database.engine.begin() as conn:
        if not partitions.is_partitioned(conn, "predictions"):
            return
        day = partitions.day_start(since)
        while day < until:
            partitions.attach_day(conn, "predictions", day)
            day += partitions.DAY_S


def _by_feature(layout: Any, entries: list[Any]) -> list[np.ndarray]:
    """The entries' counts summed over minutes, per binning of ``layout``."""
    summed = np.sum([e.counts for e in entries], axis=0)
    return list(layout.split(summed).values())


# --- the children: each timed in a fresh process ---------------------------------------------------


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def child_recompute(window: dict[str, Any], profile_json: str, chunk_rows: int, streamed: bool) -> dict[str, Any]:
    """``MonitorJob.recompute`` over the window (its rows counted again; streamed or, for comparison, read whole)."""
    from shipml.adapters.store import PredictionStore
    from shipml.adapters.store.histograms import HistogramLayout
    from shipml.config import MonitorSettings
    from shipml.core.binning import ProfileBinnings
    from shipml.core.profile import ReferenceProfile
    from shipml.pipelines.monitor import MonitorJob, Version

    profile = ReferenceProfile.from_dict(json.loads(profile_json))
    store = PredictionStore(window["uri"])
    settings = MonitorSettings(multivariate=False, recompute_chunk_rows=chunk_rows)
    job = MonitorJob(settings, store, None, Path("unused"))  # type: ignore[arg-type]  # no registry: the version is given
    bundle = SimpleNamespace(schema=SimpleNamespace(target=SimpleNamespace(task="binary")), classes=("0", "1"))
    layout = HistogramLayout.of(profile, "binary", "1")
    job._versions[(MODEL, VERSION)] = Version(bundle, ProfileBinnings.of(profile), layout, "1")  # type: ignore[arg-type]
    since, until = float(window["since"]), float(window["until"])
    before_mb, before_peak = _rss_mb(), _peak_mb()
    started, cpu = time.perf_counter(), time.process_time()
    if streamed:
        entries = job._recount(MODEL, since, until)
        store.histograms.replace(MODEL, since, until, entries)  # what recompute writes (recompute = both)
    else:
        entries = job._recount(MODEL, since, until, streamed=False)
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    peak = _peak_mb()
    summed = _by_feature(layout, entries) if entries else []
    store.close()
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "load": os.getloadavg()[0],
        "rss_before_mb": before_mb,
        "peak_before_mb": before_peak,
        "peak_mb": peak,
        "rows": sum(e.rows for e in entries),
        "minutes": len(entries),
        "total": {b.feature: c.tolist() for b, c in zip(layout.binnings, summed, strict=True)},
    }


def child_verdict(window: dict[str, Any], profile_json: str, repeats: int) -> dict[str, Any]:
    """The 24 h verdict from the per-minute histograms: read, summed, judged (first call and best of ``repeats``)."""
    from shipml.adapters.store import PredictionStore
    from shipml.core.binning import PREDICTION, ProfileBinnings
    from shipml.core.drift import feature_drift
    from shipml.core.profile import ReferenceProfile

    profile = ReferenceProfile.from_dict(json.loads(profile_json))
    store = PredictionStore(window["uri"])
    times, result, minutes, total = [], None, [], {}
    for _ in range(repeats):
        started = time.perf_counter()
        minutes = store.histograms.read(MODEL, window["since"], window["until"], version=VERSION)
        binnings = ProfileBinnings.of(profile)
        total = {name: np.zeros(b.buckets, dtype=np.int64) for name, b in binnings.all.items()}
        for m in minutes:
            for name, c in m.counts.items():
                total[name] += c
        result = feature_drift(binnings, total)
        times.append(time.perf_counter() - started)
    store.close()
    assert result is not None
    return {
        "times": times,
        "minutes": len(minutes),
        "rows": sum(m.rows for m in minutes),
        "total": {name: c.tolist() for name, c in total.items()},
        "flagged": sorted(f for f in result.drifted if f != PREDICTION),
        "verdicts": dict(result.verdicts),
    }


def child_outcomes(window: dict[str, Any]) -> dict[str, Any]:
    """What a full ``monitor drift`` reads besides the histograms, for its performance section: the window's
    outcomes (``read_outcomes``, every row's id, time, label and score) and their feedback (``feedback.read``)."""
    from shipml.adapters.store import PredictionStore

    store = PredictionStore(window["uri"], statement_timeout_s=0)
    before_mb = _rss_mb()
    started = time.perf_counter()
    found = store.predictions.read_outcomes(MODEL, window["since"], window["until"], version=VERSION, variant=VARIANT)
    read = time.perf_counter() - started
    feedback = store.feedback.read(found.ids.tolist())
    wall = time.perf_counter() - started
    store.close()
    return {"rows": len(found), "feedback": len(feedback), "read_s": read, "wall_s": wall, "peak_mb": _peak_mb(),
            "rss_before_mb": before_mb}  # fmt: skip


def run_child(data: Path, *args: str) -> dict[str, Any]:
    argv = [sys.executable, str(Path(__file__).resolve()), "--data", str(data), "--child", *args]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"store_scale: the {args[0]} child failed:\n{done.stderr[-3000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


# --- the run ------------------------------------------------------------------------------------------


def goal(text: str, value: float, target: float, unit: str) -> str:
    return f"  {text}: {value:,.2f}{unit} (goal < {target:g}{unit}) {'MET' if value < target else 'MISSED'}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=10_000_000, help="predictions in the 24 h (default 10M)")
    parser.add_argument("--store-uri", help="a Postgres store to load (default: a server started in --data)")
    parser.add_argument(
        "--data", type=Path, default=Path(tempfile.gettempdir()) / "shipml-bench-store",
        help="where the started server and the load's description are kept between runs",
    )  # fmt: skip
    parser.add_argument("--chunk-rows", type=int, default=50_000, help="monitor.recompute_chunk_rows")
    parser.add_argument("--in-memory", action="store_true", help="also time the recount of the window read whole")
    parser.add_argument(
        "--outcomes", action="store_true", help="also time what monitor drift's performance section reads (slow)"
    )
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        window = json.loads((args.data / "window.json").read_text())
        profile_json = (args.data / "profile.json").read_text()
        kind, *rest = args.child
        if kind == "verdict":
            print(json.dumps(child_verdict(window, profile_json, int(rest[0]))))
        elif kind == "outcomes":
            print(json.dumps(child_outcomes(window)))
        else:
            print(json.dumps(child_recompute(window, profile_json, int(rest[0]), kind == "streamed")))
        return
    args.data.mkdir(parents=True, exist_ok=True)
    print(
        f"# {platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} cores,"
        f" load average {os.getloadavg()[0]:.2f}"
    )
    server = None if args.store_uri else Server(args.data)
    try:
        uri = args.store_uri or server.uri  # type: ignore[union-attr]
        window = load(uri, args.rows, args.data)
        report(args, window)
    finally:
        if server is not None:
            server.stop()


def report(args: argparse.Namespace, window: dict[str, Any]) -> None:
    rows = args.rows
    if window["loaded_s"] is not None:
        print(f"FIGURE store_scale load {rows} rows: {window['loaded_s']:.1f} s (COPY, histograms written)")
    streamed = run_child(args.data, "streamed", str(args.chunk_rows))
    assert streamed["rows"] == rows, f"the recount counted {streamed['rows']:,} rows, {rows:,} were loaded"
    assert streamed["minutes"] == DAY_MINUTES, f"the recount has {streamed['minutes']} minutes, not {DAY_MINUTES}"
    assert streamed["total"] == window["total"], "the recount's counts differ from the loaded histograms'"
    grown = streamed["peak_mb"] - streamed["rss_before_mb"]
    print(f"\n## --recompute over 24 h of {rows:,} stored predictions (Postgres, chunks of {args.chunk_rows:,})")
    print(f"checked: {streamed['rows']:,} rows in {streamed['minutes']} minutes, the counts equal the loaded ones")
    print(
        f"FIGURE store_scale recompute {rows} rows: {streamed['wall_s']:.1f} s, peak RSS {streamed['peak_mb']:.0f} MB"
        f" (RSS before {streamed['rss_before_mb']:.0f} MB, grown {grown:.0f} MB)"
    )
    print(
        f"the process's own CPU time: {streamed['cpu_s']:.1f} s (the rest of the wall time is the database's work and"
        f" the machine's other load: load average {streamed['load']:.1f} at the end)"
    )
    lines = [
        goal(f"--recompute over {rows:,} rows, wall", streamed["wall_s"], GOAL_RECOMPUTE_S, " s"),
        goal(f"--recompute over {rows:,} rows, peak RSS", streamed["peak_mb"], GOAL_RECOMPUTE_MB, " MB"),
    ]
    if args.in_memory:
        whole = run_child(args.data, "whole", str(args.chunk_rows))
        assert whole["total"] == streamed["total"], "the window read whole counts differently from the streamed"
        print(
            f"FIGURE store_scale recompute-in-memory {rows} rows: {whole['wall_s']:.1f} s, peak RSS"
            f" {whole['peak_mb']:.0f} MB (RSS before {whole['rss_before_mb']:.0f} MB,"
            f" grown {whole['peak_mb'] - whole['rss_before_mb']:.0f} MB)"
        )
    verdict = run_child(args.data, "verdict", "3")
    assert verdict["minutes"] == DAY_MINUTES and verdict["rows"] == rows, "the verdict read other minutes or rows"
    loaded = {name: sum(c) for name, c in verdict["total"].items()}
    assert all(v == rows for v in loaded.values()), f"summed counts differ from the {rows:,} rows: {loaded}"
    assert verdict["flagged"] == sorted(DRIFTED), f"the 24 h verdict flagged {verdict['flagged']}"
    first, best = verdict["times"][0], min(verdict["times"])
    print(f"\n## the 24 h verdict from the histograms over {rows:,} stored predictions (Postgres)")
    print(f"checked: {verdict['minutes']} minutes, {verdict['rows']:,} rows; flagged {', '.join(verdict['flagged'])}")
    print(f"FIGURE store_scale verdict {rows} rows: first {first:.3f} s, best of {len(verdict['times'])} {best:.3f} s")
    print(f"verdict equal to the loaded histograms': {verdict['flagged'] == sorted(DRIFTED)}")
    lines.append(goal(f"24 h verdict over {rows:,} stored predictions (first call)", first, GOAL_VERDICT_S, " s"))
    if args.outcomes:
        found = run_child(args.data, "outcomes")
        assert found["rows"] == rows, f"read {found['rows']:,} outcomes, {rows:,} were loaded"
        print(
            f"\nfor information, what a full `monitor drift` reads besides the histograms (its performance section):"
            f"\nFIGURE store_scale outcomes {rows} rows: read_outcomes {found['read_s']:.1f} s, + feedback.read"
            f" {found['wall_s']:.1f} s, peak RSS {found['peak_mb']:.0f} MB (RSS before {found['rss_before_mb']:.0f} MB)"
        )
    print("\ngoals, from this run's figures:")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
