"""What the commands and the service import, loaded once in the fork server of tests/support/launcher.py.

Imported as the commands import them: with pyspark installed (``make test-scale`` installs the spark extra),
pandera and MLflow import pyspark and pandera sets ``SPARK_LOCAL_IP``, which shipml keeps out
(``shipml.core.quiet_imports``); a warm interpreter that imported them bare would print pyspark's warnings
from every command and hand its commands a changed environment.
"""

from __future__ import annotations

import importlib

from shipml.core.quiet_imports import collector_paused, freeze_heap, pyspark_left_out

MODULES = [
    "shipml.cli",
    "shipml.examples.churn",
    "shipml.adapters.registry",
    "shipml.adapters.store",
    "shipml.pipelines.train",
    "shipml.pipelines.predict",
    "shipml.server.app",
    "mlflow.store.tracking.sqlalchemy_store",
    "mlflow.store.model_registry.sqlalchemy_store",
    "mlflow.pyfunc",
    "mlflow.sklearn",
    "alembic.command",  # MLflow's migrations, run when a process opens a registry database
    "alembic.config",
    "skops.io",  # every model load
    "pandera",
    "pyarrow.parquet",
    "scipy.stats",
    "sklearn.ensemble",
    "uvicorn",
]

with pyspark_left_out(), collector_paused():
    for _name in MODULES:
        importlib.import_module(_name)


# What the imports made lives as long as the fork server: moved out of the cyclic collector's reach, so that a
# forked command's full collections do not walk it. One full collection of it is about 0.3 s of CPU, most of a short
# command's (`shipml models list` forked: 0.42 s of CPU, 0.12 s frozen), and walking it copies every page it touches.
freeze_heap(collect=True)
