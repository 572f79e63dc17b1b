"""PredictionStore: every prediction and its feedback, in SQLite (WAL) or Postgres, as a facade of small parts.

The parts share one ``Database`` (engine.py: open, migrations, pragmas, the writers' turn, error translation)
and each owns its tables:

- ``store.predictions``: the row writer's path and every read of logged rows (predictions.py);
- ``store.feedback``: ground truth per prediction (feedback.py);
- ``store.histograms``: the per-minute drift histograms (histogram_table.py, counted by histograms.py);
- ``store.reports`` and ``store.experiments``: stored drift and experiment reports, as typed values (reports.py);
- ``store.canaries``: each model's canary state and events (canaries.py);
- ``store.leases``: one runner of a scheduled job (leases.py);
- ``store.notifications``: the last webhook message sent per model (notifications.py);
- ``store.partitions``: Postgres's daily partitions of the predictions (partitions.py);
- ``store.retention``: pruning what is older than a cut (retention.py).

Nothing outside this package reads the tables with SQL. Opening a store applies the missing migrations
(``migrations.py``); loading a model only registers its schema's slot layout (rows, no DDL).
"""

from __future__ import annotations

from shipml.adapters.store import tables
from shipml.adapters.store.announcements import RoutingAnnouncements
from shipml.adapters.store.canaries import Canaries
from shipml.adapters.store.engine import Database
from shipml.adapters.store.feedback import Feedback
from shipml.adapters.store.histogram_table import Histograms
from shipml.adapters.store.leases import Leases
from shipml.adapters.store.notifications import Notifications
from shipml.adapters.store.partitions import Partitions
from shipml.adapters.store.predictions import Predictions
from shipml.adapters.store.reports import Reports
from shipml.adapters.store.retention import Retention
from shipml.config import StoreSettings
from shipml.core.experiment_report import ExperimentReport
from shipml.core.monitor_report import DriftReport


class PredictionStore:
    """The store's parts over one database (see the module docstring); ``close`` once when done."""

    def __init__(
        self,
        uri: str,
        *,
        sqlite_synchronous: str = "FULL",
        histogram_flush_s: float = 5.0,
        connect_timeout_s: float = 5.0,
        statement_timeout_s: float = 60.0,
        timeout_s: float = 5.0,
        pool_size: int = 4,
        pool_max_overflow: int = 2,
    ) -> None:
        self.uri = uri
        self.database = Database(
            uri,
            sqlite_synchronous=sqlite_synchronous,
            connect_timeout_s=connect_timeout_s,
            statement_timeout_s=statement_timeout_s,
            timeout_s=timeout_s,
            pool_size=pool_size,
            pool_max_overflow=pool_max_overflow,
        )
        self.predictions = Predictions(self.database)
        self.feedback = Feedback(self.database, self.predictions)
        self.histograms = Histograms(self.database, histogram_flush_s)
        self.reports = Reports(self.database, tables.drift_reports, "monitoring report", DriftReport.from_json)
        self.experiments = Reports(
            self.database, tables.experiment_reports, "experiment report", ExperimentReport.from_json
        )
        self.canaries = Canaries(self.database)
        self.leases = Leases(self.database)
        self.notifications = Notifications(self.database)
        self.announcements = RoutingAnnouncements(self.database)
        self.partitions = Partitions(self.database)
        self.retention = Retention(self.database)

    @classmethod
    def open(cls, settings: StoreSettings) -> PredictionStore:
        """The store of ``settings`` (``store:`` of the config), as the service and every command open it."""
        return cls(
            settings.uri,
            sqlite_synchronous=settings.sqlite_synchronous,
            histogram_flush_s=settings.histogram_flush_s,
            connect_timeout_s=settings.connect_timeout_s,
            statement_timeout_s=settings.statement_timeout_s,
            timeout_s=settings.timeout_s,
            pool_size=settings.pool_size,
            pool_max_overflow=settings.pool_max_overflow,
        )

    def close(self) -> None:
        if self.predictions.host is not None:
            self.predictions.host.close()
        self.database.close()
