"""Prometheus metrics of one app, correct under several uvicorn workers (multiprocess mode)."""

from __future__ import annotations

import struct
from bisect import bisect_left
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class ServerMetrics:
    """The service's metrics, registered on a registry of this app (no module-level state)."""

    def __init__(self, multiproc_dir: str | None = None) -> None:
        self.multiproc_dir = multiproc_dir
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("shipml_requests", "HTTP requests", ["endpoint", "status"], registry=r)
        self.latency = Histogram(
            "shipml_request_latency_seconds", "request latency", ["endpoint"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.variant_latency = Histogram(
            "shipml_variant_latency_seconds",
            "time a variant took to validate, predict and log its records of a request (shadows included)",
            ["model", "variant"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.predictions = Counter(
            "shipml_predictions",
            "predictions made, by status: ok, invalid (refused input), output_invalid (NaN or inf), error (the model failed)",
            ["model", "version", "variant", "status"],
            registry=r,
        )
        self.load_failures = Counter(
            "shipml_model_load_failures",
            "model versions that failed to load or warm, by reason (hash, registry, warmup, load)",
            ["model", "reason"],
            registry=r,
        )
        self.output_invalid = Counter(
            "shipml_model_output_invalid",
            "records the model answered with NaN or an infinity (refused, never returned as a prediction)",
            ["model", "version", "variant"],
            registry=r,
        )
        self.model_info = Gauge(
            "shipml_model_info",
            "1 for the version being served",
            ["model", "version", "variant"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.tolerated = Counter(
            "shipml_tolerated_inputs", "inputs accepted by an `accept` policy", ["model", "feature", "rule"], registry=r
        )
        self.shadow_failures = Counter(
            "shipml_shadow_failures",
            "shadow variants' calls that failed or passed serve.shadow_timeout_s (never seen by clients)",
            ["model", "version", "variant"],
            registry=r,
        )
        self.shadow_dropped = Counter(
            "shipml_shadow_dropped",
            "records sampled for a shadow variant and never scored: its queue or the prediction log was full,"
            " or the service stopped first",
            ["model", "variant"],
            registry=r,
        )
        self.store_errors = Counter(
            "shipml_store_errors", "prediction log commits that failed (after one retry)", registry=r
        )
        self.store_rows_dropped = Counter(
            "shipml_store_rows_dropped",
            "rows of the prediction log lost to a failed commit that nobody waited for (async durability, shadows),"
            " after store.async_retry_s of retries",
            registry=r,
        )
        self.store_host_writer_fallbacks = Counter(
            "shipml_store_host_writer_fallbacks",
            "prediction log commits a worker made itself because the store's host writer (SQLite, several workers) "
            "could not be reached: killed, restarting, or silent for store.timeout_s",
            registry=r,
        )
        self.store_default_partition_rows = Counter(
            "shipml_store_default_partition_rows",
            "rows of the prediction log written to Postgres's DEFAULT partition: their day had no daily partition "
            "(made ahead by the store's maintenance; see store.partitions_ahead_days)",
            registry=r,
        )
        self.overloaded = Counter(
            "shipml_overloaded", "requests refused because the worker had serve.max_in_flight in flight", registry=r
        )
        self.shed = Counter(
            "shipml_load_shed", "requests refused because the prediction log queue was full", registry=r
        )

        self._children: dict[tuple[Any, ...], Any] = {}
        # read at scrape time, the same in every worker (the stored monitoring report, readiness)
        self.collectors: list[Collector] = []

    def child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, remembered: the hot path skips prometheus-client's label checks. In
        multiprocess mode a counter's or a histogram's child writes straight into this worker's file
        (``HotCounter``, ``HotHistogram``). Call from the event loop only."""
        key = (id(metric), *labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = _hot(metric.labels(*labels))
        return found

    def render(self) -> bytes:
        """The text exposition: across all workers in multiprocess mode, else this process."""
        if self.multiproc_dir:
            merged = CollectorRegistry()
            MultiProcessCollector(merged, path=self.multiproc_dir)  # type: ignore[no-untyped-call]
        else:
            merged = CollectorRegistry()
            merged.register(_Of(self.registry))
        for collector in self.collectors:
            merged.register(collector)
        return bytes(generate_latest(merged))


_TWO_DOUBLES = struct.Struct("dd")


class HotCounter:
    """A counter's value in this worker's multiprocess file, incremented in place.

    prometheus-client's multiprocess value takes a lock, checks for a fork (a system call) and looks its key up
    on every increment: 2.5 us an increment measured, 6.8 us a histogram observation (two of them), about 18 us
    of every /predict. Here an increment adds to the same value object (``_value``, which scrapes of this worker
    and any other writer of the key see) and writes it and its timestamp to the key's place in the file, as
    prometheus-client's ``MmapedDict.write_value`` does (one slice assignment: readers never see a half-written
    value). Only the event loop writes these keys, so no lock; the workers are spawned, never forked, after their
    metrics exist. Written against prometheus-client 0.26's ``MmapedValue`` and ``MmapedDict`` (checked by the
    tests of /metrics with several workers).
    """

    __slots__ = ("_file", "_pos", "_value")

    def __init__(self, value: Any) -> None:
        self._value = value
        self._file = value._file
        self._file.write_value(value._key, value._value, value._timestamp)  # its place in the file exists
        self._pos: int = self._file._positions[value._key]

    def inc(self, amount: float = 1.0) -> None:
        v = self._value
        v._value += amount
        v._timestamp = 0.0
        self._file._m[self._pos : self._pos + 16] = _TWO_DOUBLES.pack(v._value, 0.0)

    def get(self) -> float:
        return float(self._value._value)


class HotHistogram:
    """A histogram's child in this worker's multiprocess file: its sum and the one bucket an observation falls in
    (multiprocess buckets are kept per bucket and summed at scrape time), each a ``HotCounter``."""

    __slots__ = ("_bounds", "_buckets", "_sum")

    def __init__(self, child: Any) -> None:
        self._sum = HotCounter(child._sum)
        self._buckets = [HotCounter(b) for b in child._buckets]
        self._bounds = list(child._upper_bounds)

    def observe(self, amount: float) -> None:
        self._sum.inc(amount)
        self._buckets[bisect_left(self._bounds, amount)].inc(1.0)  # the first bound >= amount, as prometheus-client


def _hot(child: Any) -> Any:
    """``child`` written in place when it is a multiprocess counter or histogram, else itself."""
    if isinstance(child, Counter) and getattr(child._value, "_multiprocess", False):
        return HotCounter(child._value)
    if isinstance(child, Histogram) and getattr(child._sum, "_multiprocess", False):
        return HotHistogram(child)
    return child


class _Of(Collector):
    """Another registry's metrics, collected into a registry made per scrape."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self) -> Any:
        return self.registry.collect()
