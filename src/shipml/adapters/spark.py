"""A Spark application for shipml's jobs: started against a master that answers, quiet, stopped afterwards.

With ``pipelines/predict_spark.py`` the only modules that import pyspark (the ``shipml[spark]`` extra); nothing
imports them but ``shipml predict --engine spark``. Three things differ from a bare ``SparkSession.builder``:

- a ``spark://`` master is dialled first (``connect_timeout_s``): Spark itself retries an absent master for a
  minute and then leaves the application without executors, so a typo would hang the job instead of failing;
- Spark's own log goes to a file (``log_file``), not the terminal: the JVM (and the Python workers it forks)
  write their stderr there too, so a failed job is one line, as every command's;
- the executors run this interpreter (``PYSPARK_PYTHON``, unless the user named one), which has shipml.

The driver's address is Spark's own choice (``SPARK_LOCAL_IP``, ``spark.driver.host`` when the user sets them):
shipml never pins it to loopback, so workers on other hosts reach it.
"""

from __future__ import annotations

import os
import re
import socket
import sys
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from shipml import errors
from shipml.errors import ShipmlError, SparkError

# The last line of a Python traceback that an executor's ShipmlError left in a failed job's message.
_EXECUTOR_ERROR = re.compile(r"^(?:shipml\.errors\.)?(?P<cls>[A-Z]\w*): (?P<message>.+)$", re.MULTILINE)

_LOG4J = """\
rootLogger.level = warn
rootLogger.appenderRef.file.ref = file
appender.file.type = File
appender.file.name = file
appender.file.fileName = {path}
appender.file.append = false
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = %d{{HH:mm:ss.SSS}} %p %c{{1}}: %m%n%ex
"""


def check_master(master: str, timeout_s: float) -> None:
    """A ``spark://host:port[,host:port]`` master answers on one of its addresses, else ``SparkError``."""
    if not master.startswith("spark://"):
        return  # local[N], yarn, k8s://...: Spark's own checks
    problems = []
    for address in master.removeprefix("spark://").split(","):
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise SparkError(f"--master {master}: expected spark://HOST:PORT, got {address!r}")
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
                return
        except OSError as exc:
            problems.append(f"{address}: {exc.strerror or type(exc).__name__}")
    raise SparkError(f"--master {master}: no Spark master answers ({'; '.join(problems)})")


@contextmanager
def spark_session(
    master: str, app_name: str, log_file: Path, *, connect_timeout_s: float, conf: Mapping[str, str] | None = None
) -> Iterator[Any]:
    """A SparkSession for the duration of the block (stopped after it, whatever happens)."""
    check_master(master, connect_timeout_s)
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise SparkError("--engine spark needs pyspark: pip install 'shipml[spark]'") from None
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"pyspark\..*")  # pandas 3 is "not yet fully"
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)  # read by SparkContext: the executors' interpreter
    log_file.parent.mkdir(parents=True, exist_ok=True)
    log_config = log_file.with_suffix(".log4j2.properties")
    log_config.write_text(_LOG4J.format(path=log_file.resolve()), encoding="utf-8")
    builder = (
        SparkSession.builder.master(master)
        .appName(app_name)
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.driver.extraJavaOptions", f"-Dlog4j2.configurationFile=file:{log_config.resolve()}")
    )
    for key, value in (conf or {}).items():
        builder = builder.config(key, value)
    with _stderr_to(log_file.with_suffix(".stderr")):  # what the JVM inherits at its start
        session = builder.getOrCreate()
    try:
        yield session
    finally:
        session.stop()


@contextmanager
def _stderr_to(path: Path) -> Iterator[None]:
    """File descriptor 2 pointed at ``path`` for the block: processes started inside inherit it."""
    sys.stderr.flush()
    saved = os.dup(2)
    with path.open("ab") as target:
        os.dup2(target.fileno(), 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def job_error(exc: BaseException, log_file: Path) -> ShipmlError:
    """A failed job as one line: an executor's own ShipmlError (its class and message, as raised there), else
    the first line of Spark's reason and where its log is."""
    text = str(exc)
    for match in _EXECUTOR_ERROR.finditer(text):
        cls = getattr(errors, match["cls"], None)
        if isinstance(cls, type) and issubclass(cls, ShipmlError):
            return cls(match["message"].strip())
    # a Python worker's traceback ends with its exception's line; else Spark's own first line
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    raised = [line for line in lines if re.match(r"^[A-Za-z_][\w.]*(Error|Exception): ", line)]
    reason = (raised or lines or [type(exc).__name__])[-1 if raised else 0]
    return SparkError(f"the Spark job failed: {reason[:300]} (Spark's log: {log_file})")
