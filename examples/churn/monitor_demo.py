"""Monitoring demo: normal traffic, then drifted traffic, then late feedback, sent to a running `shipml serve`.

    shipml serve &                                   # after `make quickstart`
    python examples/churn/monitor_demo.py            # --url, --key if the service needs one
    shipml monitor drift --window 1h                 # flags tenure, monthly_charges and contract
    shipml monitor report --window 1h -o report.html

The drifted customers are newer (a third of the tenure), pay more (monthly charges +30) and sign more
month-to-month contracts (a shift of ~27 points to the main category); the other features are unchanged. The
feedback is the generator's own churn label for the drifted customers, sent after their predictions, as
labels arrive in real life. Uses the standard library only.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import urllib.error
import urllib.request
from typing import Any

import numpy as np

from shipml.examples.churn import FEATURES, generate_churn

BATCH = 500


def drifted(rows: int, seed: int) -> Any:
    df = generate_churn(rows, seed)
    rng = np.random.default_rng(seed + 1)  # not the generator's own stream (its first draw picks the contract)
    df["tenure"] = (df["tenure"] // 3).astype("int64")
    df["monthly_charges"] = np.round(np.clip(df["monthly_charges"] + 30.0, 18.0, 150.0), 2)
    contract = df["contract"].to_numpy(dtype=object)
    move = (contract != "month-to-month") & (rng.uniform(size=rows) < 0.6)  # ~27 points more month-to-month
    contract[move] = "month-to-month"
    df["contract"] = contract
    return df


def records(df: Any) -> list[dict[str, Any]]:
    out = []
    for r in df[list(FEATURES)].to_dict(orient="records"):
        out.append({k: (None if isinstance(v, float) and math.isnan(v) else (v.item() if hasattr(v, "item") else v))
                    for k, v in r.items()})  # fmt: skip
    return out


def post(url: str, key: str | None, path: str, body: dict[str, Any]) -> dict[str, Any]:
    headers = {"Content-Type": "application/json"} | ({"Authorization": f"Bearer {key}"} if key else {})
    if not url.startswith(("http://", "https://")):
        sys.exit(f"--url: expected http:// or https://, got {url!r}")
    request = urllib.request.Request(url + path, json.dumps(body).encode(), headers, method="POST")  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:  # noqa: S310 - the URL is the user's service
            return dict(json.loads(answer.read()))
    except urllib.error.HTTPError as exc:
        sys.exit(f"{path}: HTTP {exc.code}: {exc.read().decode(errors='replace')[:300]}")
    except urllib.error.URLError as exc:
        sys.exit(f"{url}: cannot connect ({exc.reason}); is `shipml serve` running?")


def send(url: str, key: str | None, rows: list[dict[str, Any]]) -> list[str]:
    ids: list[str] = []
    for start in range(0, len(rows), BATCH):
        answer = post(url, key, "/predict/batch", {"records": rows[start : start + BATCH]})
        ids += [p["prediction_id"] for p in answer["predictions"]]
    return ids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--key", help="an API key with the predict role (not needed when auth is off)")
    parser.add_argument("--normal", type=int, default=1000, help="customers like the training data")
    parser.add_argument("--drifted", type=int, default=4000, help="customers of the drifted kind")
    parser.add_argument("--feedback", type=float, default=0.6, help="share of drifted predictions that get a label")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    normal = send(args.url, args.key, records(generate_churn(args.normal, args.seed + 1000)))
    print(f"sent {len(normal)} normal predictions")
    frame = drifted(args.drifted, args.seed)
    ids = send(args.url, args.key, records(frame))
    print(f"sent {len(ids)} drifted predictions (a third of the tenure, monthly charges +30, more month-to-month)")
    labelled = ids[: int(args.feedback * len(ids))]
    for prediction_id, churned in zip(labelled, frame["churn"].tolist(), strict=False):
        post(args.url, args.key, "/feedback", {"prediction_id": prediction_id, "label": str(churned)})
    print(f"sent feedback for {len(labelled)} of them; now: shipml monitor drift --window 1h")


if __name__ == "__main__":
    main()
