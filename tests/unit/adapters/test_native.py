"""The native kernel is built when a compiler is there, and is simply absent (with the reason) when not."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from shipml.adapters import native
from shipml.config import NativeSettings, settings_from_mapping


def test_without_a_compiler_there_is_no_kernel_and_the_reason_says_so(tmp_path: Path) -> None:
    settings = NativeSettings(cache_dir=str(tmp_path), cc=str(tmp_path / "no-such-compiler"))
    kernel, why = native.load_kernel(settings)
    assert kernel is None
    assert "could not be built" in why
    assert list(tmp_path.iterdir()) == []  # nothing half-written


def test_a_failing_compile_is_reported_not_raised(tmp_path: Path) -> None:
    kernel, why = native.load_kernel(NativeSettings(cache_dir=str(tmp_path), cc="false"))
    assert kernel is None
    assert why.startswith("the native kernel did not compile")
    assert list(tmp_path.iterdir()) == []


def test_it_can_be_switched_off() -> None:
    assert native.load_kernel(NativeSettings(enabled=False)) == (None, "disabled by native.enabled (SHIPML_NATIVE=0)")


@pytest.mark.parametrize(
    ("env", "enabled"),
    [
        ({"SHIPML_NATIVE": "0"}, False),  # the short form the README documents
        ({"SHIPML_NATIVE": "off"}, False),
        ({"SHIPML_NATIVE": "1"}, True),
        ({"SHIPML_NATIVE__ENABLED": "false"}, False),
        ({}, True),
    ],
)
def test_the_environment_switches_it_through_settings(
    env: dict[str, str], enabled: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("SHIPML_NATIVE", "SHIPML_NATIVE__ENABLED"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert settings_from_mapping({}).native.enabled is enabled


def test_cache_and_compiler_come_from_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHIPML_NATIVE__CACHE_DIR", "/opt/kernels")
    monkeypatch.setenv("SHIPML_NATIVE__CC", "clang")
    settings = settings_from_mapping({}).native
    assert (settings.cache_dir, settings.cc) == ("/opt/kernels", "clang")
    assert native.cache_dir(settings) == Path("/opt/kernels")


def test_native_false_in_the_config_file_switches_it_off() -> None:
    assert settings_from_mapping({"native": False}).native.enabled is False
    assert settings_from_mapping({"native": {"cache_dir": "k"}}).native == NativeSettings(cache_dir="k")


def test_a_loader_builds_once_and_keeps_the_answer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def counted(settings: NativeSettings) -> tuple[None, str]:
        calls.append(settings)
        return None, "counted"

    monkeypatch.setattr(native, "load_kernel", counted)
    settings = NativeSettings(cache_dir=str(tmp_path))
    loader = native.KernelLoader(settings)
    assert loader.load() == (None, "counted")
    assert loader.kernel is None
    assert calls == [settings]  # memoised on the loader
    native.KernelLoader(settings).load()
    assert len(calls) == 2  # not on the module: another owner loads for itself


def test_built_once_then_loaded_from_the_cache(tmp_path: Path) -> None:
    first, why = native.load_kernel(NativeSettings(cache_dir=str(tmp_path)))
    if first is None:
        pytest.skip(f"no native kernel here: {why}")
    built = sorted(tmp_path.iterdir())
    assert [p.suffix for p in built] == [".so"]
    mtime = built[0].stat().st_mtime_ns
    # a built kernel needs no compiler
    second, _ = native.load_kernel(NativeSettings(cache_dir=str(tmp_path), cc=str(tmp_path / "no-such-compiler")))
    assert second is not None
    assert sorted(tmp_path.iterdir()) == built
    assert built[0].stat().st_mtime_ns == mtime  # loaded, not built again
    # one tree: root splits feature 0 at 0.5; left leaf 1.0, right leaf 2.0; NaN goes right as in sklearn
    summed = second.bind(
        roots=np.array([0]),
        depths=np.array([1]),
        child=np.array([2, 1, 1, 1, 2, 2]),
        feature=np.array([0, 0, 0]),
        threshold=np.array([0.5, np.inf, np.inf]),
        value=np.array([[0.0], [1.0], [2.0]]),
    )
    x = np.array([[0.5], [0.50001], [np.nan], [-1e30]], dtype=np.float32)
    np.testing.assert_array_equal(summed(x, None, None)[:, 0], [1.0, 2.0, 2.0, 1.0])
    np.testing.assert_array_equal(summed(x, 0.5, np.full((4, 1), 10.0))[:, 0], [10.5, 11.0, 11.0, 10.5])
