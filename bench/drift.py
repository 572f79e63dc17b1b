"""make bench (monitoring): drift figures for shipml and Evidently, measured in one run.

1. Drift statistics on 10 features (6 numeric, 4 categorical): a 100,000-row reference, current frames of
   10k, 100k and 1M rows with drift injected in 3 known columns (a categorical shift, a numeric mean shift, a
   numeric scale change; the other 7 are fresh samples of the reference's distributions). shipml builds the
   profile once from the reference, then counts the current frame on its bins and runs ``feature_drift``;
   Evidently runs its data drift preset on the same frames. Each tool and size runs in a fresh process (its
   peak memory is that process's), on frames this script wrote to files, checked to be the same bytes.
2. A drift verdict over a 24 h window of 10M stored predictions: per-minute histograms bulk-loaded into a
   SQLite store, then read back, summed and judged.
3. What the monitoring modules add to a command's start.

Correctness is checked before a figure is printed: shipml must flag exactly the drifted columns.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

NUMERIC = ("tenure_months", "monthly_charges", "session_minutes", "support_calls", "age", "balance")
CATEGORICAL = ("contract", "payment", "region", "partner")
DRIFTED = {
    "contract": "categorical: month-to-month 60% -> 40% of rows",
    "monthly_charges": "numeric mean +0.5 sd",
    "session_minutes": "numeric sd x2",
}
_REGIONS = tuple(f"region-{i:02d}" for i in range(30))
_ZIPF = 1.0 / np.arange(1, 31)
CATEGORIES: dict[str, tuple[tuple[str, ...], tuple[float, ...]]] = {
    "contract": (("month-to-month", "one-year", "two-year"), (0.6, 0.25, 0.15)),
    "payment": (("card", "transfer", "check", "wallet"), (0.4, 0.3, 0.2, 0.1)),
    "region": (_REGIONS, tuple(float(x) for x in _ZIPF / _ZIPF.sum())),
    "partner": (("yes", "no"), (0.45, 0.55)),
}
CONTRACT_DRIFTED = (0.4, 0.35, 0.25)
REFERENCE_ROWS = 100_000
MODEL, VERSION, VARIANT = "churn", "1", "default"
DAY_MINUTES = 1440


# --- the data ---------------------------------------------------------------------------------


def generate(n: int, seed: int, drifted: bool) -> dict[str, np.ndarray]:
    """``n`` rows: numeric columns as float64 (``balance`` with 2 % nulls), categoricals as codes into CATEGORIES."""
    rng = np.random.default_rng(seed)
    cols: dict[str, np.ndarray] = {
        "tenure_months": rng.gamma(2.0, 12.0, n),
        "monthly_charges": rng.normal(80.0 if drifted else 70.0, 20.0, n),
        "session_minutes": rng.normal(30.0, 16.0 if drifted else 8.0, n),
        "support_calls": rng.poisson(1.5, n).astype(np.float64),
        "age": rng.uniform(18.0, 80.0, n),
    }
    balance = rng.lognormal(7.0, 1.0, n)
    balance[rng.random(n) < 0.02] = np.nan
    cols["balance"] = balance
    for name, (names, shares) in CATEGORIES.items():
        p = CONTRACT_DRIFTED if drifted and name == "contract" else shares
        cols[name] = rng.choice(len(names), n, p=p).astype(np.int16)
    return cols


def scores(monthly_charges: np.ndarray, tenure_months: np.ndarray, month_to_month: np.ndarray) -> np.ndarray:
    """A stand-in model's churn probability (the profile and the histograms keep a prediction too)."""
    z = (monthly_charges - 70.0) / 20.0 - tenure_months / 24.0 + month_to_month
    return np.asarray(1.0 / (1.0 + np.exp(-z)))


def reference_profile(reference: pd.DataFrame) -> Any:
    """shipml's ReferenceProfile of the reference frame (and of the stand-in model's scores on it)."""
    from shipml.core.profile import build_profile
    from shipml.core.schema import Feature, FeatureSchema, Target

    schema = FeatureSchema(
        features=tuple(Feature(n, "numeric", nullable=n == "balance") for n in NUMERIC)
        + tuple(Feature(n, "categorical") for n in CATEGORICAL),
        target=Target("churned", "binary"),
    )
    month_to_month = (reference["contract"] == "month-to-month").to_numpy(dtype=np.float64)
    predicted = scores(reference["monthly_charges"].to_numpy(), reference["tenure_months"].to_numpy(), month_to_month)
    return build_profile(reference, schema, predicted)


def categorical_values(name: str, codes: np.ndarray) -> np.ndarray:
    """The codes as an object array of category names (what a frame read from a file holds)."""
    values: np.ndarray = np.asarray(CATEGORIES[name][0], dtype=object)[codes]
    return values


def save_frame(path: Path, cols: dict[str, np.ndarray]) -> None:
    np.savez(path, **cols)  # type: ignore[arg-type]  # no pickles: numbers and int16 codes only


def load_frame(path: Path) -> pd.DataFrame:
    with np.load(path) as data:
        columns: dict[str, Any] = {n: data[n].astype(np.float64) for n in NUMERIC}
        columns |= {n: categorical_values(n, data[n]) for n in CATEGORICAL}
    return pd.DataFrame(columns)


def fingerprint(frame: pd.DataFrame) -> str:
    """A hash of the frame's values, so that both tools are shown to have judged the same data."""
    h = hashlib.sha256()
    for n in NUMERIC:
        h.update(frame[n].to_numpy(dtype=np.float64).tobytes())
    for n in CATEGORICAL:
        h.update("\n".join(frame[n].astype(str).tolist()).encode())
    return h.hexdigest()[:16]


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


# --- the children: one tool, one size, one fresh process ------------------------------------


def child_shipml(data: Path, rows: int, repeats: int) -> dict[str, Any]:
    from shipml.core.binning import ProfileBinnings, counts_of
    from shipml.core.drift import feature_drift

    reference, current = load_frame(data / "reference.npz"), load_frame(data / f"current-{rows}.npz")
    loaded_mb = rss_mb()
    started = time.perf_counter()
    binnings = ProfileBinnings.of(reference_profile(reference))
    profile_s = time.perf_counter() - started

    def judge(frame: pd.DataFrame) -> Any:
        counts = {n: counts_of(binnings.features[n], frame[n]) for n in (*NUMERIC, *CATEGORICAL)}
        return feature_drift(binnings, counts)

    judge(current.iloc[:1000])  # warm-up (lazy imports), not timed
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        result = judge(current)
        times.append(time.perf_counter() - started)
    return {
        "seconds": min(times),
        "times": times,
        "profile_s": profile_s,
        "flagged": sorted(f for f in result.drifted),
        "warned": sorted(f for f, v in result.verdicts.items() if v == "warn"),
        "peak_mb": peak_mb(),
        "loaded_mb": loaded_mb,
        "fingerprint": fingerprint(current),
        "versions": f"pandas {pd.__version__}, numpy {np.__version__}",
    }


def child_evidently(data: Path, rows: int, repeats: int) -> dict[str, Any]:
    import evidently  # type: ignore[import-not-found]  # only in the bench's drift environment
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset  # type: ignore[import-not-found]

    reference, current = load_frame(data / "reference.npz"), load_frame(data / f"current-{rows}.npz")
    loaded_mb = rss_mb()
    definition = DataDefinition(numerical_columns=list(NUMERIC), categorical_columns=list(CATEGORICAL))
    reference_data = Dataset.from_pandas(reference, data_definition=definition)  # once, like shipml's profile

    def judge(frame: pd.DataFrame) -> Any:
        report = Report([DataDriftPreset()], include_tests=True)  # its per-column pass/fail: the drift flags
        return report.run(Dataset.from_pandas(frame, data_definition=definition), reference_data)

    judge(current.iloc[:1000])  # warm-up (lazy imports), not timed
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        snapshot = judge(current)
        times.append(time.perf_counter() - started)
    flagged = sorted(
        t["metric_config"]["params"]["column"]
        for t in snapshot.dict()["tests"]
        if t["metric_config"]["params"].get("type", "").endswith("ValueDrift") and t["status"] == "FAIL"
    )
    return {
        "seconds": min(times),
        "times": times,
        "profile_s": None,
        "flagged": flagged,
        "warned": [],
        "peak_mb": peak_mb(),
        "loaded_mb": loaded_mb,
        "fingerprint": fingerprint(current),
        "versions": f"evidently {evidently.__version__}, pandas {pd.__version__}, numpy {np.__version__}",
    }


def child_window(data: Path, expected_rows: int, repeats: int) -> dict[str, Any]:
    """Open the store, then time: read 24 h of per-minute histograms, sum them, judge them."""
    from shipml.adapters.store import PredictionStore
    from shipml.core.binning import PREDICTION, ProfileBinnings
    from shipml.core.drift import feature_drift
    from shipml.core.profile import ReferenceProfile

    window = json.loads((data / "window.json").read_text())
    profile = ReferenceProfile.from_dict(json.loads((data / "profile.json").read_text()))
    started = time.perf_counter()
    store = PredictionStore(window["uri"])
    open_s = time.perf_counter() - started
    times, parts, result, minutes, total = [], [], None, [], {}
    for _ in range(repeats):
        started = time.perf_counter()
        minutes = store.histograms.read(MODEL, window["since"], window["until"], version=VERSION)
        read = time.perf_counter()
        binnings = ProfileBinnings.of(profile)
        total = {name: np.zeros(b.buckets, dtype=np.int64) for name, b in binnings.all.items()}
        for m in minutes:
            for name, c in m.counts.items():
                total[name] += c
        added = time.perf_counter()
        result = feature_drift(binnings, total)
        done = time.perf_counter()
        times.append(done - started)
        parts.append((read - started, added - read, done - added))
    store.close()
    assert result is not None
    summed = {name: int(c.sum()) for name, c in total.items()}
    return {
        "times": times,
        "parts": parts,
        "open_s": open_s,
        "minutes": len(minutes),
        "rows": sum(m.rows for m in minutes),
        "summed": summed,
        "flagged": sorted(f for f in result.drifted if f != PREDICTION),
        "expected_rows": expected_rows,
    }


CHILDREN: dict[str, Callable[[Path, int, int], dict[str, Any]]] = {
    "shipml": child_shipml,
    "evidently": child_evidently,
    "window": child_window,
}


def run_child(python: str, tool: str, data: Path, rows: int, repeats: int) -> dict[str, Any]:
    argv = [python, str(Path(__file__).resolve()), "--child", tool, "--data", str(data), "--rows", str(rows)]
    argv += ["--repeats", str(repeats)]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{tool} at {rows:,} rows failed:\n{done.stderr[-3000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


# --- part 2: the 24 h window ------------------------------------------------------------------


def load_window(data: Path, total_rows: int) -> dict[str, Any]:
    """Count 24 h of generated predictions per minute on the profile's buckets and bulk-load them into a store."""
    from shipml.adapters.store import PredictionStore
    from shipml.adapters.store.histogram_table import Recount
    from shipml.core.binning import PREDICTION, counts_of

    profile = reference_profile(load_frame(data / "reference.npz"))
    (data / "profile.json").write_text(profile.to_json())
    uri = f"sqlite:///{data}/predictions.db"
    store = PredictionStore(uri)
    layout = store.histograms.register_profile(MODEL, VERSION, profile, "binary", "1")
    until = int(time.time()) // 60 * 60 - 600  # a day that ended 10 minutes ago: every minute settled (replace)
    since = until - DAY_MINUTES * 60
    per_minute, extra = divmod(total_rows, DAY_MINUTES)
    started = time.perf_counter()
    entries = []
    for i in range(DAY_MINUTES):
        n = per_minute + (1 if i < extra else 0)
        cols = generate(n, seed=10_000 + i, drifted=True)
        values = {name: cols[name] for name in NUMERIC}
        values |= {name: categorical_values(name, cols[name]) for name in CATEGORICAL}
        values[PREDICTION] = scores(cols["monthly_charges"], cols["tenure_months"], cols["contract"] == 0)
        flat = np.concatenate([counts_of(b, values[b.feature]) for b in layout.binnings])
        entries.append(Recount(since // 60 + i, VERSION, VARIANT, "primary", layout, n, flat))
    counted_s = time.perf_counter() - started
    started = time.perf_counter()
    store.histograms.replace(MODEL, since, until, entries)
    written_s = time.perf_counter() - started
    store.close()
    window = {"uri": uri, "since": since, "until": until}
    (data / "window.json").write_text(json.dumps(window))
    return window | {"counted_s": counted_s, "written_s": written_s, "per_minute": per_minute}


# --- part 3: imports ----------------------------------------------------------------------------


def import_seconds(python: str, cases: dict[str, str], runs: int) -> dict[str, float]:
    """Best wall time of ``python -c code`` per case, the cases interleaved so that they share the machine's load."""
    best = dict.fromkeys(cases, float("inf"))
    for _ in range(runs):
        for label, code in cases.items():
            started = time.perf_counter()
            subprocess.run([python, "-c", code], check=True)
            best[label] = min(best[label], time.perf_counter() - started)
    return best


# --- the run ------------------------------------------------------------------------------------


class Goals:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def add(self, text: str, value: float | None, target: float, higher: bool, unit: str = "x") -> None:
        if value is None:
            self.lines.append(f"  {text}: not measured")
            return
        met = value >= target if higher else value < target
        op = ">=" if higher else "<"
        self.lines.append(f"  {text}: {value:,.2f}{unit} (goal {op} {target:g}{unit}) {'MET' if met else 'MISSED'}")

    def flag(self, text: str, met: bool) -> None:
        self.lines.append(f"  {text}: {'MET' if met else 'MISSED'}")


def statistics_part(args: argparse.Namespace, data: Path, sizes: tuple[int, ...], goals: Goals) -> None:
    print(f"# writing the frames: reference {REFERENCE_ROWS:,} rows, current {', '.join(f'{n:,}' for n in sizes)}")
    reference = generate(REFERENCE_ROWS, seed=1, drifted=False)
    save_frame(data / "reference.npz", reference)
    for n in sizes:
        save_frame(data / f"current-{n}.npz", generate(n, seed=2 + n, drifted=True))
    results: dict[tuple[int, str], dict[str, Any]] = {}
    for n in sizes:
        print(f"# {n:,} rows: shipml ...", flush=True)
        results[(n, "shipml")] = run_child(sys.executable, "shipml", data, n, args.repeats)
        if args.evidently_python:
            print(f"# {n:,} rows: Evidently ...", flush=True)
            results[(n, "evidently")] = run_child(args.evidently_python, "evidently", data, n, args.repeats)
    # Correctness first: shipml flags exactly the drifted columns, and both tools judged the same bytes.
    for n in sizes:
        got = results[(n, "shipml")]["flagged"]
        assert got == sorted(DRIFTED), f"shipml at {n:,} rows flagged {got}, not exactly {sorted(DRIFTED)}"
        ev = results.get((n, "evidently"))
        if ev is not None:
            assert ev["fingerprint"] == results[(n, "shipml")]["fingerprint"], f"the tools read other frames at {n}"
    ship0 = results[(sizes[0], "shipml")]
    print("\n## 1. drift statistics: 10 features (6 numeric, 4 categorical), reference 100,000 rows")
    print("drift injected in: " + "; ".join(f"{k} ({v})" for k, v in DRIFTED.items()))
    print(
        f"shipml: {ship0['versions']}; profile built once from the reference in {ship0['profile_s']:.2f} s (not timed)"
    )
    if (sizes[0], "evidently") in results:
        print(f"Evidently: {results[(sizes[0], 'evidently')]['versions']}; DataDriftPreset, its default methods")
    print(
        f"time: best of {args.repeats} runs each, after a warm-up on 1,000 rows; shipml: counting on the profile's bins +"
    )
    print("feature_drift; Evidently: Dataset.from_pandas(current) + Report([DataDriftPreset()]).run (the reference")
    print("Dataset built once). Peak RSS: ru_maxrss of the tool's own fresh process (frames loaded, imports done);")
    print("'+ over frames': peak minus the RSS right after the frames were loaded.")
    header = f"{'rows':>10} {'tool':<10} {'time s':>8} {'peak RSS MB':>12} {'+ over frames':>14}  {'flagged':<48} {'Evidently/shipml':>17}"
    print(header)
    for n in sizes:
        ship = results[(n, "shipml")]
        for tool in ("shipml", "evidently"):
            r = results.get((n, tool))
            if r is None:
                continue
            ratio = ""
            if tool == "evidently":
                ratio = f"time {r['seconds'] / ship['seconds']:.1f}x, mem {r['peak_mb'] / ship['peak_mb']:.1f}x"
            flagged = ", ".join(r["flagged"]) or "-"
            name = "shipml" if tool == "shipml" else "Evidently"
            print(
                f"{n:>10,} {name:<10} {r['seconds']:>8.3f} {r['peak_mb']:>12,.0f} {r['peak_mb'] - r['loaded_mb']:>14,.0f}  {flagged:<48} {ratio:>17}"
            )
        if ship["warned"]:
            print(f"{'':>10} shipml warns (significant, under the drift floors): {', '.join(ship['warned'])}")
    big = max(sizes)
    ship, ev = results[(big, "shipml")], results.get((big, "evidently"))
    goals.add(f"{big:,} rows: Evidently time / shipml time", ev["seconds"] / ship["seconds"] if ev else None, 20, True)
    goals.add(f"{big:,} rows: shipml time (counting + feature_drift)", ship["seconds"], 1, False, " s")
    goals.flag(
        f"shipml flags exactly the 3 drifted columns at {', '.join(f'{n:,}' for n in sizes)} rows (checked above)",
        True,
    )
    if ev is not None:
        missed = sorted(set(DRIFTED) - set(ev["flagged"]))
        extra = sorted(set(ev["flagged"]) - set(DRIFTED))
        print(f"Evidently at {big:,} rows: missed {missed or 'none'}, flagged beyond the drifted {extra or 'none'}")


def window_part(data: Path, total_rows: int, goals: Goals) -> None:
    from shipml.core.binning import PREDICTION

    print(f"# bulk-loading 24 h of per-minute histograms ({total_rows:,} generated rows) ...", flush=True)
    loaded = load_window(data, total_rows)
    r = run_child(sys.executable, "window", data, total_rows, 3)
    assert r["minutes"] == DAY_MINUTES, f"read {r['minutes']} minutes, wrote {DAY_MINUTES}"
    assert r["rows"] == total_rows, f"the minutes' row counts add up to {r['rows']:,}, {total_rows:,} were loaded"
    bad = {k: v for k, v in r["summed"].items() if v != total_rows}
    assert not bad, f"summed counts differ from the {total_rows:,} rows loaded: {bad}"
    assert r["flagged"] == sorted(DRIFTED), f"the 24 h verdict flagged {r['flagged']}, not {sorted(DRIFTED)}"
    first, best = r["times"][0], min(r["times"])
    print(f"\n## 2. drift verdict over a 24 h window of {total_rows:,} stored predictions (SQLite, temp dir)")
    print(
        f"loaded: {DAY_MINUTES} minutes x ~{loaded['per_minute']:,} rows, each minute generated (drifted as in 1.) and"
        f" counted on the profile's bins ({loaded['counted_s']:.1f} s), written by store.histograms.replace"
        f" ({loaded['written_s']:.2f} s)"
    )
    features = len(r["summed"]) - (1 if PREDICTION in r["summed"] else 0)
    print(
        f"checked: {r['minutes']} minutes read, their rows add up to {r['rows']:,} and each of the {features} features'"
        f" (and the prediction's) summed counts to {total_rows:,}; flagged: {', '.join(r['flagged'])}"
    )
    print(
        f"fresh process: open the store {r['open_s']:.3f} s; store.histograms.read + sum + feature_drift:"
        f" first {first:.3f} s, best of {len(r['times'])} {best:.3f} s"
    )
    read, added, judged = r["parts"][0]
    print(f"first call: read {read:.3f} s, sum {added:.3f} s, feature_drift {judged:.3f} s (lazy imports included)")
    goals.add(f"24 h verdict over {total_rows:,} stored predictions (first call)", first, 1, False, " s")


def imports_part(goals: Goals, runs: int) -> None:
    python = sys.executable
    base = "import shipml.cli.app"
    cases = {
        "python -c pass": "pass",
        base: base,
        "+ shipml.core.drift, shipml.core.performance": base + "; import shipml.core.drift, shipml.core.performance",
        "+ shipml.pipelines.monitor (the drift job)": base + "; import shipml.pipelines.monitor",
    }
    got = import_seconds(python, cases, runs)
    print(f"\n## 3. imports, fresh processes, best of {runs}")
    for label, seconds in got.items():
        print(f"{label:<50} {seconds:>7.3f} s")
    added = got["+ shipml.core.drift, shipml.core.performance"] - got[base]
    spread = " (a difference within the run-to-run noise)" if abs(added) < 0.02 else ""
    print(f"monitoring imports add {added:.3f} s to `import shipml.cli.app`{spread}")
    goals.add("monitoring imports (core.drift, core.performance) added to a command", added, 1, False, " s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="10k and 100k rows, 1M predictions in the window")
    parser.add_argument("--evidently-python", help="python of the environment with evidently (.venv-bench-drift)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per tool and size (best is printed)")
    parser.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--rows", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(CHILDREN[args.child](args.data, args.rows, args.repeats)))
        return
    if args.evidently_python:
        args.evidently_python = os.path.abspath(args.evidently_python)
    sizes = (10_000, 100_000) if args.quick else (10_000, 100_000, 1_000_000)
    window_rows = 1_000_000 if args.quick else 10_000_000
    print(
        f"# {platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} cores,"
        f" load average {os.getloadavg()[0]:.2f}"
    )
    goals = Goals()
    with tempfile.TemporaryDirectory(prefix="shipml-bench-drift-") as tmp:
        data = Path(tmp)
        statistics_part(args, data, sizes, goals)
        window_part(data, window_rows, goals)
    imports_part(goals, 5)
    print("\ngoals, from this run's figures:")
    print("\n".join(goals.lines))


if __name__ == "__main__":
    main()
