"""Prometheus metrics of one app, correct under several uvicorn workers (multiprocess mode)."""

from __future__ import annotations

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
        """``metric.labels(*labels)``, remembered: the hot path skips prometheus-client's label checks."""
        key = (id(metric), *labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
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


class _Of(Collector):
    """Another registry's metrics, collected into a registry made per scrape."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self) -> Any:
        return self.registry.collect()
