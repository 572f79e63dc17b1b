"""Installs are reproducible: requirements/constraints.txt pins, exactly, every package make test installs, each
within pyproject.toml's ranges, and the tests run with those versions (a new release cannot change behaviour
unseen; `make lock` moves the pins and runs the tests)."""

from __future__ import annotations

import importlib.metadata as metadata
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "requirements" / "constraints.txt"
EXTRAS = ("dev",)  # make test installs shipml[dev]; the xgboost extra is not part of it (its test skips)


def pins() -> dict[str, Version]:
    found: dict[str, Version] = {}
    for number, line in enumerate(LOCK.read_text().splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        name, sep, version = line.partition("==")
        assert sep and name.strip() == name and " " not in version, f"{LOCK.name}:{number}: not NAME==VERSION: {line}"
        assert not Version(version).local, f"{LOCK.name}:{number}: a local build, not a release: {line}"
        assert canonicalize_name(name) not in found, f"{LOCK.name}:{number}: pinned twice: {line}"
        found[canonicalize_name(name)] = Version(version)
    return found


def declared() -> list[Requirement]:
    """shipml's dependencies and those of the extras make test installs, as pyproject.toml states them."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [Requirement(r) for r in project["dependencies"]] + [
        Requirement(r) for extra in EXTRAS for r in project["optional-dependencies"][extra]
    ]


def needed() -> set[str]:
    """Every distribution make test's environment needs: shipml's declared requirements and theirs, with their
    extras, followed through the installed packages' own metadata."""
    seen: set[str] = set()
    todo = [(r, r.extras) for r in declared()]
    while todo:
        requirement, extras = todo.pop()
        name = canonicalize_name(requirement.name)
        if name in seen:
            continue
        seen.add(name)
        for text in metadata.requires(requirement.name) or []:
            child = Requirement(text)
            if child.marker is None or any(child.marker.evaluate({"extra": e}) for e in ("", *extras)):
                todo.append((child, child.extras))
    return seen


def test_the_lock_pins_exact_releases_of_published_packages() -> None:
    locked = pins()
    assert "shipml" not in locked
    assert len(locked) > 50  # the whole environment, not only the direct dependencies


def test_every_declared_dependency_is_pinned_within_its_range() -> None:
    locked = pins()
    for requirement in declared():
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{requirement} is not in {LOCK.name}: run make lock"
        assert requirement.specifier.contains(locked[name], prereleases=True), (
            f"{LOCK.name} pins {name}=={locked[name]}, outside pyproject.toml's {requirement}: run make lock"
        )


def test_the_tests_run_with_the_locked_versions() -> None:
    locked = pins()
    for name in sorted(needed()):
        if name in ("pip", "setuptools", "wheel"):
            continue
        assert name in locked, f"{name} is needed but not pinned in {LOCK.name}: run make lock"
        installed = Version(metadata.version(name))
        if installed != locked[name]:
            pytest.fail(
                f"{name} {installed} is installed, {LOCK.name} pins {locked[name]}: "
                f"pip install -c {LOCK.relative_to(ROOT)} -e '.[dev]' (make does it)"
            )
