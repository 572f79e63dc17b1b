"""As a new user installs it: the built wheel, installed into a fresh environment, runs `shipml quickstart` in an
empty directory.

The wheel is built from a copy of the sources (what a clean clone builds) and installed with
``pip install --no-index``: its dependencies come from this test environment's site-packages (linked into the
fresh one, without this checkout's own editable shipml), so the test needs no network beyond the build backend
from the package registry, and pip still refuses the install if the wheel asks for a dependency that is missing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "shipml"


def run(*args: str | Path, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    assert result.returncode == 0, (args, result.stdout[-3000:], result.stderr[-3000:])
    return result


def data_files() -> set[str]:
    """Every file of the package that is not Python source: what the installed package reads at run time."""
    return {
        path.relative_to(PACKAGE.parent).as_posix()
        for path in PACKAGE.rglob("*")
        if path.is_file() and path.suffix not in (".py", ".pyc") and "__pycache__" not in path.parts
    }


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel built from a copy of the sources, as `uv build` (or `pip wheel`) on a clean clone builds it."""
    source = tmp_path_factory.mktemp("source")
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc")
    shutil.copytree(ROOT / "src", source / "src", ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    dist = tmp_path_factory.mktemp("dist")
    uv = Path(sys.executable).with_name("uv")  # the Makefile installs it: the same backend, a third of the time
    if uv.is_file():
        run(uv, "build", "--wheel", "--quiet", "--out-dir", dist, source, cwd=source)
    else:
        run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", dist, source, cwd=source)
    (built,) = dist.glob("shipml-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh environment with the wheel installed; the dependencies are this environment's, linked in."""
    venv = tmp_path_factory.mktemp("venv")
    run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=venv)
    ours = Path(sysconfig.get_paths()["purelib"])
    deps = tmp_path_factory.mktemp("deps")
    for entry in ours.iterdir():
        if entry.name.startswith(("shipml", "__editable__")) or entry.name == "__pycache__":
            continue  # this checkout's editable install: the fresh environment gets the wheel's copy only
        (deps / entry.name).symlink_to(entry)
    site = venv / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    (site / "_shipml_test_dependencies.pth").write_text(f"import site; site.addsitedir({str(deps)!r})\n")
    python = venv / "bin" / "python"
    run(sys.executable, "-m", "pip", "--python", python, "install", "--no-index", "--quiet", wheel, cwd=venv)
    return venv


def test_the_wheel_holds_every_file_the_package_reads_at_run_time(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        inside = set(archive.namelist())
    missing = sorted(data_files() - inside)
    assert not missing, f"package data missing from the wheel: {missing} (pyproject.toml's package-data)"
    assert "shipml/examples/churn.yaml" in inside  # the file whose absence broke `shipml quickstart`


def test_quickstart_from_the_installed_wheel_in_an_empty_directory(installed: Path, tmp_path: Path) -> None:
    shipml = installed / "bin" / "shipml"
    where = run(installed / "bin" / "python", "-c", "import shipml; print(shipml.__file__)", cwd=tmp_path)
    assert where.stdout.strip().startswith(str(installed)), where.stdout  # the wheel's copy, not this checkout
    project = tmp_path / "project"
    project.mkdir()
    kernels = tmp_path / "kernels"  # the native kernel built here, from the C source the wheel installed
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHIPML_")}
    env |= {"COLUMNS": "80", "NO_COLOR": "1", "SHIPML_NATIVE__CACHE_DIR": str(kernels)}

    result = run(shipml, "quickstart", "--rows", "2000", cwd=project, env=env)

    assert "Traceback" not in result.stdout + result.stderr
    assert "4/4 promoted churn/1 to production" in result.stdout
    assert "shipml serve" in result.stdout  # the "Next:" lines lead on to serving and monitoring
    assert "shipml monitor" in result.stdout
    shown = run(shipml, "models", "show", "churn@production", cwd=project, env=env)
    assert shown.stdout.startswith("churn/1  aliases: production, staging")
    assert (project / ".shipml" / "mlflow.db").is_file()
    if shutil.which("cc") or shutil.which("gcc"):
        assert "backends: numpy, native" in shown.stdout
        assert any(kernels.iterdir())
