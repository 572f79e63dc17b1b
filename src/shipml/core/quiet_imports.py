"""Third-party imports that would otherwise change the process: pandera's and MLflow's probes for pyspark; and the
cyclic garbage collector, paused while shipml's imports run (``collector_paused``), then kept off what they made
(``freeze_heap``).

With pyspark installed, importing pandera sets ``SPARK_LOCAL_IP=127.0.0.1`` and ``PYARROW_IGNORE_TIMEZONE=1``
in ``os.environ`` when they are unset (``pandera/external_config.py``) and imports ``pyspark.pandas``; importing
MLflow's registry client imports ``pyspark`` (``mlflow/types/schema.py``, to know Spark's types). The first pins
any Spark driver started later in the process to loopback, where a standalone cluster's workers on other hosts
cannot reach it; the others load pyspark into every command that validates data or opens the registry, which use
neither. Inside ``pyspark_left_out`` the user's environment is put back as it was afterwards and pyspark is not
imported, unless the process had already imported it (``shipml predict --engine spark`` does, first).
"""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

_SET_BY_PANDERA = ("SPARK_LOCAL_IP", "PYARROW_IGNORE_TIMEZONE")
_PROBED = ("pyspark", "pyspark.pandas")


@contextmanager
def pyspark_left_out() -> Iterator[None]:
    """Imports made inside see no pyspark (unless already imported) and leave ``os.environ`` as it was."""
    saved = {name: os.environ.get(name) for name in _SET_BY_PANDERA}
    blocked = [name for name in _PROBED if name not in sys.modules]
    for name in blocked:
        sys.modules[name] = None  # type: ignore[assignment]  # `import pyspark` raises ImportError at once
    try:
        yield
    finally:
        for name in blocked:
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextmanager
def collector_paused() -> Iterator[None]:
    """The cyclic garbage collector paused for the block (a block of imports), as it was afterwards.

    Importing shipml's command line makes about a million objects that live as long as the process (modules,
    classes, functions); the collector, run every 700 new objects and over all of them each time their number grew
    by a quarter, walked them again and again while they were made: 16 % of a fresh `shipml models list` (3.96 s of
    CPU with it, 3.34 s without, six runs each). Imports make little garbage, and what they make is collected once
    the collector is back."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def freeze_heap(*, collect: bool = False) -> None:
    """What the process made so far (modules, classes, functions, a loaded model) lives as long as it: moved out of
    the cyclic collector's reach (``gc.freeze``), so that the full collections of later work do not walk it again
    each time (about 0.3 s of CPU each once MLflow is imported; a server's stall tens of milliseconds long).

    ``collect``: a full collection first, so that no garbage is frozen with it: before forking, where every child
    would keep the garbage's pages (Python's advice for ``gc.freeze``). Without it (a command's start) the little
    garbage imports make is kept, a collection's CPU saved."""
    if collect:
        gc.collect()
    gc.freeze()
