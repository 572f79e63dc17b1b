"""The native kernel is built when a compiler is there, and is simply absent (with the reason) when not."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from shipml.adapters import native


def test_without_a_compiler_there_is_no_kernel_and_the_reason_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHIPML_NATIVE_CACHE", str(tmp_path))
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    kernel, why = native._load()
    assert kernel is None
    assert "could not be built" in why
    assert list(tmp_path.iterdir()) == []  # nothing half-written


def test_a_failing_compile_is_reported_not_raised(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHIPML_NATIVE_CACHE", str(tmp_path))
    monkeypatch.setenv("CC", "false")
    kernel, why = native._load()
    assert kernel is None
    assert why.startswith("the native kernel did not compile")
    assert list(tmp_path.iterdir()) == []


def test_it_can_be_switched_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHIPML_NATIVE", "0")
    assert native._load() == (None, "disabled by SHIPML_NATIVE")


def test_built_once_then_loaded_from_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHIPML_NATIVE_CACHE", str(tmp_path))
    first, why = native._load()
    if first is None:
        pytest.skip(f"no native kernel here: {why}")
    built = sorted(tmp_path.iterdir())
    assert [p.suffix for p in built] == [".so"]
    mtime = built[0].stat().st_mtime_ns
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))  # a built kernel needs no compiler
    second, _ = native._load()
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
