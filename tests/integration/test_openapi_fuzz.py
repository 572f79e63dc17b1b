"""Schemathesis against a real `shipml serve` (the example model, auth on): every operation of the live
/openapi.json, fed requests that fit the document and requests that break it, answers without a 5xx and with
a status, content type, headers and body the document declares, and refuses a request without a key where
the document asks for one.

Schemathesis runs as its own command (`st run`), as a user would run it against their deployment. Its
examples are drawn afresh each run; a failure shows each request as a curl command and the seed that
replays the run. SHIPML_FUZZ_EXAMPLES sets the examples per operation (a longer hunt: 500).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.support.project import TrainedProject
from tests.support.server import Keys, Server, auth, make_keys, records, start_server

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ST = str(Path(sys.executable).parent / "st")
EXAMPLES = os.environ.get("SHIPML_FUZZ_EXAMPLES", "20")
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "ignored_auth",
    "unsupported_method",
)
# every operation, as the served model's paths name it: each must have answered 200 at least once
ANSWERED = (
    "/predict",
    "/predict/batch",
    "/invocations",
    "/feedback",
    "/v2",
    "/v2/health/live",
    "/v2/health/ready",
    "/v2/models/churn",
    "/v2/models/churn/ready",
    "/v2/models/churn/infer",
    "/v2/models/churn/versions/1",
    "/v2/models/churn/versions/1/ready",
    "/v2/models/churn/versions/1/infer",
    "/health/live",
    "/health/ready",
    "/metrics",
    "/model",
    "/admin/reload",
)


@pytest.fixture(scope="module")
def served(
    trained_project: TrainedProject, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Path, Server, Keys]]:
    keys, auth_section = make_keys()
    # the fuzzer's requests without a key are checks, not an attack: no 429 after the first fifty
    root = trained_project.workspace(
        tmp_path_factory.mktemp("fuzz"), auth_section + "  failure_limit: {requests_per_s: 1000, burst: 100000}\n"
    )
    server = start_server(root)
    yield root, server, keys
    assert server.stop() == 0


def test_fuzzing_the_live_openapi_finds_no_5xx_and_nothing_undocumented(served: tuple[Path, Server, Keys]) -> None:
    root, server, keys = served
    with requests.Session() as http:
        ids = [
            http.post(f"{server.url}/predict", json={"features": r}, headers=auth(keys.predict), timeout=10).json()[
                "prediction_id"
            ]
            for r in records(8, seed=5)
        ]
    report = root / "fuzz-report.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SHIPML_", "SCHEMATHESIS_"))} | {
        "SCHEMATHESIS_HOOKS": str(Path(__file__).with_name("fuzz_hooks.py")),
        "SHIPML_FUZZ_PREDICTION_IDS": " ".join(ids),
        "NO_COLOR": "1",
    }
    run = subprocess.run(
        [
            ST, "run", f"{server.url}/openapi.json",
            "--header", f"Authorization: Bearer {keys.admin}",
            "--checks", ",".join(CHECKS),
            "--phases", "examples,coverage,fuzzing",
            "--max-examples", EXAMPLES,
            "--workers", "1",
            "--request-timeout", "30",
            "--report", "json", "--report-json-path", str(report),
        ],
        cwd=root, env=env, capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-25_000:] + run.stderr[-5_000:]
    summary = json.loads(report.read_text())
    assert summary["operations"]["tested"] == summary["operations"]["total"] == len(ANSWERED), summary["operations"]
    assert summary["failures"] == [] and summary["errors"] == []
    # the service's own access log (complete once it has stopped) agrees: no 5xx, and every operation got past
    # its checks at least once
    assert server.stop() == 0
    answers = Counter(
        (line["path"], line["status"])
        # split on newlines only: str.splitlines also splits on the U+2028 or U+0085 of a fuzzed path
        for line in map(json.loads, filter(lambda t: t.startswith("{"), server.log.read_text().split("\n")))
        if line.get("event") == "request"
    )
    assert [a for a in answers if a[1] >= 500] == []
    assert [p for p in ANSWERED if answers[(p, 200)] == 0] == [], sorted(answers.items())
    assert sum(answers.values()) > 20 * len(ANSWERED), answers
