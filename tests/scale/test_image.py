"""The container image, really built and run: the README's three lines ("### The container image") as a user types
them, on a base made from Debian's packages (no container registry is reachable here; tests/support/podman.py).

The wheelhouse is built beside the Dockerfile, the image from it with no index (the build stage has no network to
one), and the container runs as uid 10001 on a read-only root with only /var/lib/shipml and /tmp writable, as
deploy/k8s/deployment.yaml runs it. The model comes from a trained project's registry mounted read-only at its
own path (MLflow records absolute artifact URIs). The container answers as the service run here does, and on
SIGTERM it drains (/health/ready 503 while it still predicts) and exits 0. FIGURE lines: build time, image size,
start-to-ready time.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from shipml.config import load_settings
from tests.support import podman as podman_support
from tests.support.asgi import serve_in_process
from tests.support.project import train_project
from tests.support.server import auth, free_port, make_keys, records

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "README.md"
TAG = "localhost/shipml-test-image:latest"  # the doc's `shipml`, under a name of the tests' own
UID = "10001"
DRAIN_S = 3


def doc_commands() -> list[list[str]]:
    """The bash block under "### The container image": the wheelhouse, the build and the run, each split as the shell would
    (``$PWD`` left for the caller)."""
    section = DOC.read_text().split("### The container image", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block is not None, "README.md: no bash block under '### The container image'"
    return [shlex.split(line) for line in block.group(1).splitlines() if line.strip()]


def replaced(args: list[str], old: str, new: str) -> list[str]:
    """``args`` with the one argument ``old`` replaced by ``new`` (the doc's placeholder must be there)."""
    assert args.count(old) == 1, f"{old!r} not once in {shlex.join(args)}"
    return [new if a == old else a for a in args]


def test_the_image_builds_offline_and_serves_on_a_read_only_root(tmp_path: Path) -> None:
    wheel, build, run = doc_commands()
    podman, runtime_base, build_base = podman_support.debian_bases()
    print(f"podman flags for this machine: {shlex.join([*podman.global_flags, *podman.limits]) or 'none'}")

    # 1. the wheelhouse beside the Dockerfile, with the versions the tests ran with
    assert wheel[:2] == ["pip", "wheel"], wheel
    made = subprocess.run(
        [sys.executable, "-m", "pip", *wheel[1:], "--quiet"], cwd=REPO, capture_output=True, text=True, timeout=900,
        check=False,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr[-3000:]

    # 2. the image, on the Debian base (its build stage: the same packages and a compiler)
    assert build[:2] == ["podman", "build"] and "--build-arg" in build, build
    build = replaced(build, "BASE=python:3.11-slim", f"BASE={runtime_base}")
    build = replaced(build, "shipml", TAG)
    old_image = podman.run("image", "inspect", "--format", "{{.Id}}", TAG, check=False).stdout.strip()
    started = time.monotonic()
    built = subprocess.run(
        podman.command(
            "build", *podman.limits, "--layers=false", "--build-arg", f"BUILD_BASE={build_base}", *build[2:]
        ),
        cwd=REPO, capture_output=True, text=True, timeout=1800, check=False,
    )  # fmt: skip
    build_s = time.monotonic() - started
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    print(f"FIGURE image build: {build_s:.0f} s (podman build, wheelhouse and base ready)")
    image = podman.run("image", "inspect", "--format", "{{.Id}} {{.Size}} {{.Config.User}}", TAG).stdout.split()
    if old_image and old_image != image[0]:
        podman.run("rmi", old_image, check=False)  # the last run's image, replaced: its space comes back
    print(f"FIGURE image size: {int(image[1]) / 1e6:.0f} MB ({TAG}, Debian {podman_support.SUITE} base)")
    assert image[2] == f"{UID}:{UID}"  # numeric
    compilers = podman.run(
        "run", "--rm", *podman.limits, "--entrypoint", "sh", TAG, "-c", "command -v cc gcc || true"
    )  # fmt: skip
    assert compilers.stdout.strip() == "", f"a compiler stayed in the image: {compilers.stdout}"

    # 3. a trained project's registry, read-only in the container; the service's config as a user writes it
    project = train_project(tmp_path / "project")
    keys, auth_yaml = make_keys()
    workdir = tmp_path / "ops"
    workdir.mkdir()
    (workdir / "shipml.yaml").write_text(project.config() + auth_yaml + f"serve:\n  drain_s: {DRAIN_S}\n")
    os.chmod(workdir / "shipml.yaml", 0o644)  # read by uid 10001 (the project's files are, as made)

    port = free_port()
    name = f"shipml-test-{port}"
    assert run[:2] == ["podman", "run"], run
    run = replaced(run, "8000:8000", f"127.0.0.1:{port}:8000")
    run = [a.replace("$PWD", str(workdir)) for a in run]
    run = replaced(run, "SHIPML_REGISTRY_URI=http://mlflow:5000", f"SHIPML_REGISTRY_URI={project.registry_uri}")
    run = replaced(run, "shipml", TAG)
    registry_mount = ["-v", f"{project.root}:{project.root}:ro"]
    log = tmp_path / "container.log"
    started = time.monotonic()
    with log.open("wb") as out:
        container = subprocess.Popen(
            podman.command("run", "--name", name, *podman.limits, *registry_mount, *run[2:]),
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        ready_s = wait_ready(url, container, log, started)
        print(f"FIGURE image start-to-ready: {ready_s:.1f} s (podman run to /health/ready 200, --workers 2)")

        # uid 10001, read-only root, writable state (the prediction store is there) and /tmp
        assert podman.run("exec", name, "id", "-u").stdout.strip() == UID
        denied = podman.run("exec", name, "touch", "/opt/shipml/x", check=False)
        assert denied.returncode != 0 and "Read-only file system" in denied.stderr, denied
        assert podman.run("exec", name, "touch", "/tmp/x", "/var/lib/shipml/x", check=False).returncode == 0

        rows = records(12, seed=5)
        answers = [predict(url, row, keys.predict) for row in rows]
        settings = load_settings(workdir / "shipml.yaml", overrides={"home": str(tmp_path / "local-home")})
        with serve_in_process(settings, registry=project.registry()) as local:
            expected = [local.post("/predict", json={"features": r}, headers=auth(keys.predict)) for r in rows]
        assert [e.status_code for e in expected] == [200] * len(rows)
        for got, want in zip(answers, expected, strict=True):
            assert got["probabilities"] == want.json()["probabilities"]  # bit for bit, as JSON carries them
            assert got["predicted_class"] == want.json()["predicted_class"]
            assert got["model"] == want.json()["model"] == {"name": "churn", "version": "1", "variant": "main"}

        # SIGTERM: readiness turns 503 while it still predicts, then in-flight work finishes and it exits 0
        podman.run("kill", "--signal", "TERM", name)
        assert wait_status(url + "/health/ready", 503, timeout=DRAIN_S + 2), "no 503 on /health/ready after SIGTERM"
        assert predict(url, rows[0], keys.predict)["probabilities"] == answers[0]["probabilities"]
        assert container.wait(timeout=60) == 0, log.read_text()[-3000:]
        assert "service_stopped" in log.read_text()
    finally:
        if container.poll() is None:
            container.kill()
            container.wait()
        podman.run("rm", "--force", "--ignore", name, check=False)


def wait_ready(url: str, container: subprocess.Popen[bytes], log: Path, started: float, timeout: float = 180) -> float:
    """Seconds from ``started`` to the first 200 on /health/ready (the container must not exit meanwhile)."""
    deadline = started + timeout
    while time.monotonic() < deadline:
        if container.poll() is not None:
            raise AssertionError(f"the container exited with {container.returncode}: {log.read_text()[-3000:]}")
        try:
            if requests.get(f"{url}/health/ready", timeout=2).status_code == 200:
                return time.monotonic() - started
        except requests.ConnectionError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"not ready in {timeout} s: {log.read_text()[-3000:]}")


def wait_status(url: str, status: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(url, timeout=1).status_code == status:
                return True
        except requests.ConnectionError:
            pass
        time.sleep(0.1)
    return False


def predict(url: str, row: dict[str, Any], key: str) -> dict[str, Any]:
    answer = requests.post(f"{url}/predict", json={"features": row}, headers=auth(key), timeout=10)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


pytestmark = pytest.mark.scale
