"""Third-party imports that would otherwise change the process: pandera's and MLflow's probes for pyspark.

With pyspark installed, importing pandera sets ``SPARK_LOCAL_IP=127.0.0.1`` and ``PYARROW_IGNORE_TIMEZONE=1``
in ``os.environ`` when they are unset (``pandera/external_config.py``) and imports ``pyspark.pandas``; importing
MLflow's registry client imports ``pyspark`` (``mlflow/types/schema.py``, to know Spark's types). The first pins
any Spark driver started later in the process to loopback, where a standalone cluster's workers on other hosts
cannot reach it; the others load pyspark into every command that validates data or opens the registry, which use
neither. Inside ``pyspark_left_out`` the user's environment is put back as it was afterwards and pyspark is not
imported, unless the process had already imported it (``shipml predict --engine spark`` does, first).
"""

from __future__ import annotations

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
