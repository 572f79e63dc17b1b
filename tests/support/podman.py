"""Podman on this machine, and base images made from Debian's packages, for the tests that build and run the image.

No container registry is reachable here, so a base comes from ``mmdebstrap`` (Debian's packages, from the
machine's own apt sources) imported with ``podman import``; it is kept in podman's storage under a tag keyed on
its suite and package list, so the next run finds it (a clean machine makes it, about two minutes). The runtime
base is the build base with its compiler purged, which needs no second bootstrap.

Podman's plain command does not run a container everywhere: where cgroups are in hybrid mode (v1 with a v2
mount beside) it needs ``--runtime runc --cgroup-manager cgroupfs``, and where the host's limits are lower than
podman's defaults (1048576 open files) runc cannot set them and every container fails to start. ``find`` tries
the plain command first and adds what the failure asks for, so the flags a test uses are ones it saw work.
"""

from __future__ import annotations

import hashlib
import os
import resource
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field

from tests.support.components import missing

SUITE = "bookworm"  # Python 3.11, the version the lock (requirements/constraints.txt) and the wheelhouse are made for
RUNTIME_PACKAGES = ("python3", "python3-venv")  # what deploy/Dockerfile needs of its BASE
COMPILER_PACKAGES = ("gcc", "libc6-dev")  # what its build stage needs for the native kernel
PODMAN_NPROC = 32768  # podman's own default for the number of processes, which it raises when nofile is given
INSTALL_HINT = "Debian: apt-get install podman runc mmdebstrap; `make system-deps` does it as root"


@dataclass(frozen=True)
class Podman:
    """The podman command with the flags this machine needs: ``global_flags`` before the subcommand (runtime,
    cgroup manager), ``limits`` for ``run`` and ``build`` (``--ulimit``)."""

    global_flags: tuple[str, ...] = ()
    limits: tuple[str, ...] = ()
    tried: list[str] = field(default_factory=list, compare=False)

    def command(self, *args: str) -> list[str]:
        """``podman [global flags] ARGS``."""
        return ["podman", *self.global_flags, *args]

    def run(self, *args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(self.command(*args), capture_output=True, text=True, timeout=timeout, check=False)
        if check and done.returncode != 0:
            raise AssertionError(f"podman {' '.join(args[:3])} failed ({done.returncode}): {done.stderr[-2000:]}")
        return done

    def image_exists(self, tag: str) -> bool:
        return self.run("image", "exists", tag, check=False).returncode == 0


def host_limits() -> tuple[str, ...]:
    """``--ulimit`` flags no higher than this process's own limits (which the container's processes inherit)."""
    nofile_soft, nofile_hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    nproc_soft, nproc_hard = resource.getrlimit(resource.RLIMIT_NPROC)

    def bounded(value: int, default: int) -> int:
        return default if value == resource.RLIM_INFINITY else min(value, default)

    nofile = f"nofile={nofile_soft}:{nofile_hard}"
    nproc = f"nproc={bounded(nproc_soft, PODMAN_NPROC)}:{bounded(nproc_hard, PODMAN_NPROC)}"
    return ("--ulimit", nofile, "--ulimit", nproc)


def find(probe_image: str) -> Podman:
    """Podman with the flags under which ``probe_image`` runs ``true`` here: the plain command first, then with
    runc and cgroupfs and/or the host's limits, as the failures ask."""
    if shutil.which("podman") is None:
        missing(f"podman is not installed ({INSTALL_HINT})")
    runtime = ("--runtime", "runc", "--cgroup-manager", "cgroupfs")
    tried: list[str] = []
    for global_flags, limits in (((), ()), ((), host_limits()), (runtime, ()), (runtime, host_limits())):
        podman = Podman(global_flags, limits, tried)
        done = podman.run("run", "--rm", *limits, probe_image, "true", timeout=120, check=False)
        if done.returncode == 0:
            return podman
        tried.append(f"{' '.join(podman.command('run', *limits))}: {done.stderr.strip()[-300:]}")
    raise AssertionError("podman runs no container here; tried:\n" + "\n".join(tried))


def base_tag(kind: str, packages: Sequence[str]) -> str:
    """The tag of a base made from ``packages`` of ``SUITE``: the same list finds the same image."""
    key = hashlib.sha256(" ".join([SUITE, *sorted(packages)]).encode()).hexdigest()[:12]
    return f"localhost/shipml-test-{kind}:{SUITE}-{key}"


def debian_image(tag: str, packages: Sequence[str], timeout: float = 900) -> str:
    """``tag``, made when podman does not have it yet: ``mmdebstrap --variant=minbase --include=PACKAGES SUITE -``
    (without recommended packages) piped into ``podman import``."""
    podman = Podman()
    if podman.image_exists(tag):
        return tag
    if shutil.which("mmdebstrap") is None:
        missing(f"mmdebstrap is not installed ({INSTALL_HINT})")
    include = f"--include={','.join(packages)}"
    bootstrap = subprocess.Popen(
        ["mmdebstrap", "--quiet", "--variant=minbase", "--aptopt=APT::Install-Recommends false", include, SUITE, "-"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert bootstrap.stdout is not None
    imported = subprocess.run(
        podman.command("import", "-", tag), stdin=bootstrap.stdout, capture_output=True, timeout=timeout, check=False
    )
    bootstrap.stdout.close()
    _, errors = bootstrap.communicate(timeout=timeout)
    if bootstrap.returncode != 0 or imported.returncode != 0:
        podman.run("rmi", "--force", tag, check=False)  # nothing half-made stays under the tag
        raise AssertionError(
            f"mmdebstrap ({bootstrap.returncode}): {errors.decode()[-2000:]}\n"
            f"podman import ({imported.returncode}): {imported.stderr.decode()[-2000:]}"
        )
    return tag


def without_packages(podman: Podman, source: str, tag: str, packages: Sequence[str]) -> str:
    """``tag``, made when podman does not have it yet: ``source`` with ``packages`` (and what only they needed)
    purged, flattened into one layer (``podman export`` piped into ``podman import``). No network needed."""
    if podman.image_exists(tag):
        return tag
    name = f"shipml-test-purge-{os.getpid()}"
    purge = (  # what only they needed goes too, even where a package left suggests it (python3.11: binutils)
        "apt-get purge -y -qq --auto-remove -o APT::AutoRemove::RecommendsImportant=false"
        f" -o APT::AutoRemove::SuggestsImportant=false {' '.join(packages)} >/dev/null && rm -rf /var/cache/apt/*.bin"
    )
    try:
        podman.run("run", "--name", name, *podman.limits, source, "sh", "-c", purge)
        exported = subprocess.Popen(podman.command("export", name), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert exported.stdout is not None
        imported = subprocess.run(
            podman.command("import", "-", tag), stdin=exported.stdout, capture_output=True, timeout=600, check=False
        )
        exported.stdout.close()
        _, errors = exported.communicate(timeout=600)
        if exported.returncode != 0 or imported.returncode != 0:
            podman.run("rmi", "--force", tag, check=False)
            raise AssertionError(f"podman export: {errors.decode()[-2000:]}\npodman import: {imported.stderr.decode()}")
    finally:
        podman.run("rm", "--force", "--ignore", name, check=False)
    return tag


def debian_bases() -> tuple[Podman, str, str]:
    """Podman with this machine's flags, and the (runtime, build) bases for deploy/Dockerfile: Debian's python3 and
    python3-venv, the build base with a C compiler besides. The build base comes from mmdebstrap, the runtime base
    from it without the compiler; both cached in podman's storage, keyed on the package lists."""
    packages = RUNTIME_PACKAGES + COMPILER_PACKAGES
    build = debian_image(base_tag("build", packages), packages)
    podman = find(build)
    runtime = without_packages(podman, build, base_tag("base", RUNTIME_PACKAGES), COMPILER_PACKAGES)
    return podman, runtime, build
