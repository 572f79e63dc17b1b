"""An A/B experiment on the churn example, end to end: a second, clearly worse version, both served at 50/50,
keyed traffic and late feedback through the HTTP API, then `shipml ab report`; then the same version as a canary
(`shipml deploy canary`) under the same kind of traffic, which must roll it back.

    make quickstart
    python examples/churn/experiment_demo.py        # prints the report; exit 0 when both verdicts are right

The challenger is a one-split stump weighted towards churn (it calls almost everyone a churner), so the
report must say "rollback" for it: the champion, the quickstart's forest, is clearly better. Everything
lives under .shipml/experiment (its config, the server's log); the registry and the prediction store are
the project's own. Uses the standard library, PyYAML and shipml's example data.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from shipml.examples.churn import FEATURES, churn_config, generate_churn

SHIPML = str(Path(sys.executable).parent / "shipml")
HOME = Path(".shipml") / "experiment"


def run(*argv: str, config: Path | None = None) -> subprocess.CompletedProcess[str]:
    command = [SHIPML, *argv, *(["--config", str(config)] if config else [])]
    return subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603 - our own command


def stump_config() -> str:
    config = yaml.safe_load(churn_config())
    config["model"]["params"] = {"n_estimators": 1, "max_depth": 1, "class_weight": {0: 1, 1: 20}, "random_state": 0}
    config["training"] = {"cv_folds": 2, "seed": 42}
    return str(yaml.safe_dump(config))


def train_challenger() -> str:
    """Train the stump; its version number (the newest of model churn)."""
    (HOME / "stump.yaml").write_text(stump_config())
    trained = run("train", config=HOME / "stump.yaml")
    if trained.returncode not in (0, 1):  # 1: a gate missed, still registered
        sys.exit(f"training the challenger failed:\n{trained.stderr}")
    from shipml.adapters.registry import MlflowRegistry
    from shipml.config import load_settings

    latest = {name: version for name, version, _ in MlflowRegistry(load_settings().registry).list_models()}
    return latest["churn"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def post(url: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})  # noqa: S310
    with urllib.request.urlopen(request, timeout=60) as answer:  # noqa: S310 - a loopback URL built here
        return dict(json.loads(answer.read()))


def wait_ready(url: str, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if server.poll() is not None:
            sys.exit(f"shipml serve exited: see {HOME / 'serve.log'}")
        try:
            with urllib.request.urlopen(url + "/health/ready", timeout=2):  # noqa: S310 - loopback
                return
        except (urllib.error.URLError, OSError):
            time.sleep(0.3)
    sys.exit("shipml serve did not become ready in 90 s")


def traffic(url: str, customers: int, seed: int, prefix: str = "customer-", quiet: bool = False) -> None:
    data = generate_churn(customers, seed)
    rows = [
        {k: (None if isinstance(v, float) and math.isnan(v) else (v.item() if hasattr(v, "item") else v))
         for k, v in r.items()}
        for r in data[list(FEATURES)].to_dict(orient="records")
    ]  # fmt: skip
    answers: list[dict[str, Any]] = []
    for lo in range(0, customers, 500):
        batch = [{"features": rows[i], "id": f"{prefix}{i}"} for i in range(lo, min(lo + 500, customers))]
        answers += post(url + "/predict/batch", {"records": batch})["predictions"]
    for answer, churned in zip(answers, data["churn"].tolist(), strict=True):  # the labels arrive later
        post(url + "/feedback", {"prediction_id": answer["prediction_id"], "label": str(churned)})
    if not quiet:
        print(f"sent {len(answers)} keyed predictions, then feedback for all of them")


def serve(config: Path, port: int) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHIPML_")} | {"SHIPML_AUTH__ENABLED": "false"}
    with (HOME / "serve.log").open("ab") as log:
        return subprocess.Popen(  # noqa: S603 - our own command
            [SHIPML, "serve", "--config", str(config), "--port", str(port)], stdout=log, stderr=log, env=env
        )


def canary_phase(challenger: str, seed: int) -> bool:
    """The challenger as a canary of the single served model: 10 %, then 50 %, then 100 %, each step at least 5 s,
    while keyed traffic and its feedback flow; the controller must roll it back (its accuracy is far worse)."""
    config = HOME / "canary.yaml"
    config.write_text(yaml.safe_dump({"serve": {"model": "churn@production", "reload_interval_s": 1}}))
    port = free_port()
    server = serve(config, port)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ready(url, server)
        command = [SHIPML, "deploy", "canary", "churn", challenger, "--steps", "10,50,100", "--interval", "5s",
                   "--check-every", "1s", "--min-requests", "50", "--config", str(config)]  # fmt: skip
        controller = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # noqa: S603
        deadline, round_ = time.monotonic() + 240, 0
        while controller.poll() is None and time.monotonic() < deadline:
            traffic(url, 500, seed + 1000 + round_, prefix=f"canary-{round_}-", quiet=True)
            round_ += 1
        if controller.poll() is None:
            controller.terminate()
        output = controller.communicate(timeout=60)[0]
    finally:
        server.terminate()
        server.wait(timeout=60)
    print(output, end="")
    rolled_back = controller.returncode == 1 and "rolled_back" in output
    print(f"canary {'rolled back' if rolled_back else 'NOT rolled back'}: {'right' if rolled_back else 'WRONG'}")
    return rolled_back


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=1500)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    HOME.mkdir(parents=True, exist_ok=True)
    challenger = train_challenger()
    print(f"trained the challenger: churn/{challenger} (a stump); the champion is churn@production")
    config = HOME / "shipml.yaml"
    variants = [
        {"name": "champion", "model": "churn@production", "weight": 0.5},
        {"name": "challenger", "model": f"churn/{challenger}", "weight": 0.5},
    ]
    config.write_text(yaml.safe_dump({"serve": {"salt": "churn-demo", "reload_interval_s": 0, "variants": variants}}))
    port = free_port()
    server = serve(config, port)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ready(url, server)
        traffic(url, args.customers, args.seed)
    finally:
        server.terminate()
        server.wait(timeout=60)
    report = run("ab", "report", "--window", "1h", config=config)
    print(report.stdout, report.stderr, sep="")
    verdicts = {0: "ship", 1: "rollback", 3: "continue", 4: "unhealthy", 5: "no_data"}
    verdict = verdicts.get(report.returncode, f"error {report.returncode}")
    right = verdict == "rollback"
    print(f"verdict {verdict}: {'right' if right else 'WRONG'}; the champion is the better version (the known answer)")
    rolled_back = canary_phase(challenger, args.seed)
    sys.exit(0 if right and rolled_back else 1)


if __name__ == "__main__":
    main()
