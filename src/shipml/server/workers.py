"""`shipml serve --workers N`: uvicorn's supervisor, with its workers forked from the master instead of spawned.

uvicorn starts every worker (and every replacement of a dead one) as a fresh interpreter, multiprocessing's
"spawn", which imports shipml, FastAPI, pandas and MLflow again and configures MLflow's ORM: about 2.6 s of CPU a
worker before it can load a model, measured on the 2-core machine of the benches. The master has imported all of
it already (it built the app once, to refuse a bad config before any port is bound), so here the workers are forked
from it and start with those modules in memory, shared copy-on-write.

A fork copies what a fresh interpreter would not have. Each item, and what is done about it:

- the master's signal handlers (uvicorn's supervisor queues every signal for its own loop): back to the defaults in
  the worker, until its server installs its own, so a SIGTERM during a worker's startup stops it as before;
- prometheus-client's value class, chosen when it was first imported, before ``PROMETHEUS_MULTIPROC_DIR`` was set:
  chosen again in the worker, so its metrics go to its own multiprocess files (``server/metrics.py``);
- open database connections: the master closes what it opened before uvicorn forks (``_store_opens`` closes its
  store, ``MlflowRegistry.close`` the registry's engines), SQLAlchemy's rule for engines and fork;
- the master's threads (the host writer's watcher) do not exist in a worker, and a worker does not use their objects.
- the master's heap: collected once and frozen (``gc.freeze``) before the first fork, Python's advice for a server
  that forks, so that a worker's full collections neither walk what it inherited nor copy the pages they touch.

Everything else is uvicorn's, unchanged: its supervisor restarts a dead worker, replaces them all on SIGHUP, adds and
removes one on SIGTTIN and SIGTTOU, and pings them. Only the multiprocessing context it starts workers with is
swapped: ``uvicorn._subprocess.spawn``, a module attribute read each time a worker is started (uvicorn 0.55; a
test checks that a worker of the installed uvicorn is a fork of its master).
"""

from __future__ import annotations

import multiprocessing
import os
import signal

import uvicorn._subprocess

from shipml.adapters.registry import MlflowRegistry
from shipml.adapters.store import HostWriterProcess
from shipml.core.quiet_imports import freeze_heap

# Handlers a worker must not inherit: those uvicorn's supervisor installs in the master.
_RESET = tuple(
    getattr(signal, f"SIG{name}")
    for name in ("INT", "TERM", "HUP", "QUIT", "TTIN", "TTOU", "USR1", "USR2", "WINCH")
    if hasattr(signal, f"SIG{name}")
)
_registered = False  # the at-fork hook, registered once per process (it cannot be removed)
_writer: HostWriterProcess | None = None  # the host writer of the latest fork_workers, which the hook forgets


def fork_workers(registry_uri: str, writer: HostWriterProcess | None) -> None:
    """Make uvicorn fork its workers from this process, after importing what they import to open the registry.

    Call it in the master, after its own use of the store and the registry is closed, before ``uvicorn.run``."""
    global _registered, _writer
    MlflowRegistry.preload(registry_uri)
    freeze_heap(collect=True)
    uvicorn._subprocess.spawn = multiprocessing.get_context("fork")  # type: ignore[assignment]
    _writer = writer
    if not _registered:
        os.register_at_fork(after_in_child=_in_worker)
        _registered = True


def _in_worker() -> None:
    """Right after the fork, in the worker: what a fresh interpreter would have (see the module's docstring)."""
    writer = _writer
    for sig in _RESET:
        signal.signal(sig, signal.SIG_DFL)
    from prometheus_client import values

    values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]
    if writer is not None:
        writer.forget_in_child()
