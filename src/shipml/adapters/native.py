"""The native tree kernel: ``forest_kernel.c`` compiled once per machine and loaded with ctypes.

The kernel does what ``core/fast/trees.py`` does in numpy (the same float32
rounding, comparisons and order of summation), several times faster for one row
and more for batches. Building it needs a C compiler (``native.cc``, else ``cc``), once:
the library is cached under ``native.cache_dir`` (default
``~/.cache/shipml/native``), keyed by the source, the flags and the platform,
so later processes load it in milliseconds, and an image can ship it built
(deploy/Dockerfile does) with no compiler at run time. Without it, or with
``native.enabled`` false (``SHIPML_NATIVE=0``), there is no kernel and the numpy
path serves. Either way, a backend serves only after ``verify`` compared it with
the pipeline. Settings come in as ``NativeSettings``; nothing here reads the
environment, and the loaded kernel is kept by a ``KernelLoader`` its owner holds
(the app, a training run), not by this module.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Any

import numpy as np

from shipml.config import NativeSettings
from shipml.core.fast.trees import Summer

SOURCE = Path(__file__).with_name("forest_kernel.c")
FLAGS = ("-O3", "-shared", "-fPIC", "-ffp-contract=off", "-fno-fast-math", "-std=c99")
ABI = 4
GIL_HELD_MAX_ROWS = 64


class NativeKernel:
    """The loaded library; ``bind`` fixes one ensemble's node tables and returns its summing function."""

    name = "native"

    def __init__(self, library: Path) -> None:
        self.library = library
        # Two handles on the same library: small calls keep the GIL (they take microseconds, and a call
        # that lets it go waits for it to come back, up to the interpreter's switch interval when another
        # thread is busy); big batches let it go, so the event loop runs while they compute.
        self._fn = _declare(ctypes.PyDLL(str(library)))
        self._fn_nogil = _declare(ctypes.CDLL(str(library)))

    def bind(
        self,
        roots: np.ndarray,
        depths: np.ndarray,
        child: np.ndarray,
        feature: np.ndarray,
        threshold: np.ndarray,
        value: np.ndarray,
        round32: bool = True,
    ) -> Summer:
        """Node tables as ``LockstepTrees`` keeps them: global ids, ``child[2n]`` right and ``child[2n+1]``
        left, a leaf its own child with threshold +inf; ``value`` is (nodes, n_out)."""
        tables = [
            np.ascontiguousarray(roots, dtype=np.int64),
            np.ascontiguousarray(depths, dtype=np.int64),
            np.ascontiguousarray(child, dtype=np.int64),
            np.ascontiguousarray(feature, dtype=np.int64),
            np.ascontiguousarray(threshold, dtype=np.float64),
            np.ascontiguousarray(value, dtype=np.float64),
        ]
        r, dp, ch, ft, th, va = (t.ctypes.data for t in tables)
        n_trees, n_out = len(tables[0]), tables[5].shape[1]
        fn, fn_nogil = self._fn, self._fn_nogil

        def summed(x: np.ndarray, scale: float | None, start: np.ndarray | None) -> np.ndarray:
            x = np.ascontiguousarray(x, dtype=np.float64)  # rounded to float32 inside when round32
            n_rows, n_cols = x.shape
            if start is None:
                out = np.empty((n_rows, n_out), dtype=np.float64)
            else:
                out = np.array(start, dtype=np.float64, order="C", copy=True)
            (fn if n_rows <= GIL_HELD_MAX_ROWS else fn_nogil)(
                x.ctypes.data, n_rows, n_cols, r, dp, n_trees, ch, ft, th, va, n_out,
                scale is not None, 0.0 if scale is None else scale, start is not None, round32, out.ctypes.data,
            )  # fmt: skip
            return out

        summed.tables = tables  # type: ignore[attr-defined]  # keep the arrays alive as long as the function
        return summed


def _declare(lib: ctypes.CDLL) -> Any:
    if lib.shipml_forest_abi() != ABI:
        raise OSError("unexpected native kernel ABI")
    fn = lib.shipml_forest_sum
    fn.restype = None
    fn.argtypes = [
        ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
        ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
        ctypes.c_void_p, ctypes.c_int64, ctypes.c_int32, ctypes.c_double, ctypes.c_int32, ctypes.c_int32,
        ctypes.c_void_p,
    ]  # fmt: skip
    return fn


def cache_dir(settings: NativeSettings) -> Path:
    """Where the compiled kernel is kept."""
    if settings.cache_dir:
        return Path(settings.cache_dir).expanduser()
    return Path.home() / ".cache" / "shipml" / "native"


def _library_name() -> str:
    h = hashlib.sha256(SOURCE.read_bytes())
    h.update(" ".join((*FLAGS, platform.machine(), platform.system())).encode())
    return f"forest-{h.hexdigest()[:16]}.so"


class KernelLoader:
    """Builds or loads the kernel on first use and keeps the answer (kernel or None, and why) for its
    owner's lifetime: one per app or training run, so settings can differ between them."""

    def __init__(self, settings: NativeSettings) -> None:
        self.settings = settings
        self._lock = threading.Lock()  # loads happen in worker threads; build once
        self._loaded: tuple[NativeKernel | None, str] | None = None

    def load(self) -> tuple[NativeKernel | None, str]:
        with self._lock:
            if self._loaded is None:
                self._loaded = load_kernel(self.settings)
            return self._loaded

    @property
    def kernel(self) -> NativeKernel | None:
        return self.load()[0]


def load_kernel(settings: NativeSettings) -> tuple[NativeKernel | None, str]:
    """The kernel (compiled if need be) or None, with a one-line reason either way. Not memoised: hold
    a ``KernelLoader`` to load it once."""
    if not settings.enabled:
        return None, "disabled by native.enabled (SHIPML_NATIVE=0)"
    target = cache_dir(settings) / _library_name()
    if not target.exists():  # built once per machine (or image: the cache can be baked in, no compiler needed)
        compiler = settings.cc or shutil.which("cc") or shutil.which("gcc")
        if not compiler:
            return None, "no C compiler (set native.cc, or install one) to build the native kernel"
        try:
            target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
                built = Path(tmp) / target.name
                result = subprocess.run(  # noqa: S603 - the configured compiler on our own source
                    [compiler, *FLAGS, "-o", str(built), str(SOURCE)], capture_output=True, text=True, timeout=120
                )
                if result.returncode != 0:
                    return None, f"the native kernel did not compile: {result.stderr.strip()[:300]}"
                os.replace(built, target)  # atomic: concurrent workers each build and the last rename wins
        except (OSError, subprocess.SubprocessError) as exc:
            return None, f"the native kernel could not be built: {exc}"
    try:
        return NativeKernel(target), f"native kernel {target.name}"
    except (OSError, AttributeError) as exc:
        return None, f"the native kernel could not be loaded: {exc}"
