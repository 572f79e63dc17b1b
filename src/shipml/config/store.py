"""The prediction store's section: where it is, how durably and how fast rows are written, the drift histograms."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from shipml.config.section import Section
from shipml.core.prediction import Durability
from shipml.core.window import duration_problem, duration_s


class RetentionSettings(Section):
    """How long the store keeps what it logs (`shipml store prune`, and its schedule inside `shipml serve`)."""

    predictions: str | None = Field(
        default=None,
        description="the schedule prunes predictions (their batches and feedback too) older than this, e.g. 90d; "
        "null: never (`shipml store prune --older-than` still does)",
    )
    history: str | None = Field(
        default="400d",
        description="per-minute histograms, drift and experiment reports and canary events are kept this long, at "
        "least as long as the predictions; null: forever",
    )
    interval_s: float = Field(
        default=3600.0,
        ge=0.0,
        description="shipml serve maintains the store this often (one runner across workers and replicas): makes "
        "Postgres's daily partitions ahead, and prunes when `predictions` is set; 0: never",
    )
    batch_rows: int = Field(
        default=500,
        ge=1,
        le=10_000,
        description="SQLite (and Postgres's legacy and default partitions): rows deleted per transaction, each a "
        "short one after which the service's writers get the file for as long (at most 10,000)",
    )

    @field_validator("predictions", "history")
    @classmethod
    def _a_duration(cls, value: str | None) -> str | None:
        problem = None if value is None else duration_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _history_outlives_predictions(self) -> RetentionSettings:
        if (
            self.predictions is not None
            and self.history is not None
            and duration_s(self.history, "history") < duration_s(self.predictions, "predictions")
        ):
            raise ValueError(
                f"history ({self.history}) must be at least predictions ({self.predictions}): histograms and "
                "reports summarise the predictions and outlive them"
            )
        return self


class StoreSettings(Section):
    """The prediction store (prediction log + feedback)."""

    uri: str = Field(
        default="sqlite:///.shipml/predictions.db", description="SQLAlchemy URI: sqlite:/// or postgresql://"
    )
    durability: Durability = Field(
        default=Durability.COMMIT,
        description="commit: answer after the row is committed; async: queue and answer at once",
    )
    queue_size: int = Field(default=10_000, ge=1, description="async mode: rows waiting before the service sheds load")
    batch_max: int = Field(default=512, ge=1, description="max rows per group commit")
    commit_window_ms: float = Field(
        default=0.4, ge=0.0, le=100.0, description="commit mode: how long the writer gathers rows before a commit"
    )
    async_window_ms: float = Field(
        default=20.0, ge=0.0, le=1000.0, description="async mode: how long the writer gathers rows before a commit"
    )
    sqlite_synchronous: Literal["FULL", "NORMAL"] = Field(
        default="FULL",
        description="SQLite: FULL syncs the WAL at every commit, before any answer (a row answered 200 survives a "
        "process kill and an OS crash or power loss); NORMAL syncs it at checkpoints only (a row answered 200 survives "
        "a process kill; an OS crash may lose the commits since the last checkpoint)",
    )
    host_writer: bool = Field(
        default=True,
        description="SQLite with several workers: one writer process commits every worker's rows (one commit and "
        "one WAL sync per group for the host); false: each worker commits its own, taking turns on the file",
    )
    host_writer_gather_ms: float = Field(
        default=1.0,
        ge=0.0,
        le=100.0,
        description="SQLite host writer: the longest a commit waits for the rows of the workers whose rows the "
        "previous commit held (more rows per commit and WAL sync, less CPU per request); 0: commit what has arrived",
    )
    writer_socket: str | None = Field(
        default=None, description="the host writer's Unix socket (set by shipml serve --workers; leave unset)"
    )
    histograms: bool = Field(
        default=True,
        description="keep per-minute histograms of what is served on each version's reference profile buckets, "
        "as rows are written (drift over a window reads these, not every row)",
    )
    histogram_flush_s: float = Field(
        default=5.0, gt=0.0, le=300.0, description="how often the writer writes the histograms' changed minutes"
    )
    feedback_wait_s: float = Field(
        default=2.0,
        ge=0.0,
        le=60.0,
        description="/feedback for a prediction made this recently waits for its row (another worker may not "
        "have committed it yet) before answering 404",
    )
    feedback_timeout_s: float = Field(
        default=10.0,
        gt=0.0,
        le=600.0,
        description="/feedback still waiting on the store after this (the wait for a recent id included) answers "
        "503 store_unavailable",
    )
    connect_timeout_s: float = Field(
        default=5.0, gt=0.0, le=600.0, description="Postgres: give up opening a connection after this long"
    )
    statement_timeout_s: float = Field(
        default=60.0,
        ge=0.0,
        le=86_400.0,
        description="Postgres: cancel a statement still running after this long (0: never), so a hung database "
        "fails a call instead of holding it",
    )

    timeout_s: float = Field(
        default=5.0,
        gt=0.0,
        le=600.0,
        description="the longest a request waits on the store: a commit (commit durability) or a pooled connection "
        "not there by then answers 503 store_unavailable, and a Postgres connection that stops answering for this "
        "long is cut",
    )
    pool_size: int = Field(
        default=4,
        ge=1,
        le=1000,
        description="Postgres: connections each worker process keeps open (replicas x workers x (pool_size + "
        "pool_max_overflow) must fit the server's max_connections)",
    )
    pool_max_overflow: int = Field(
        default=2, ge=0, le=1000, description="Postgres: connections a worker process may open beyond pool_size"
    )
    async_retry_s: float = Field(
        default=30.0,
        ge=0.0,
        le=3600.0,
        description="async durability: how long a commit that failed is retried (the insert is idempotent) before "
        "its rows are dropped and counted in shipml_store_rows_dropped_total",
    )
    partitions_ahead_days: int = Field(
        default=7,
        ge=1,
        le=366,
        description="Postgres: daily partitions of the predictions are made this many days ahead (a day without "
        "one still takes its rows, in the DEFAULT partition, counted and alerted)",
    )
    retention: RetentionSettings = RetentionSettings()

    @model_validator(mode="after")
    def _feedback_waits_within_its_timeout(self) -> StoreSettings:
        if self.feedback_wait_s >= self.feedback_timeout_s:
            raise ValueError(
                f"feedback_wait_s ({self.feedback_wait_s:g}) must be less than feedback_timeout_s "
                f"({self.feedback_timeout_s:g}): the wait for a recent id is part of the request's time"
            )
        return self

    @field_validator("uri")
    @classmethod
    def _not_in_memory(cls, uri: str) -> str:
        # The writer opens its own connection, and each connection to an in-memory SQLite database
        # gets a new, empty one: every write would fail with "no such table".
        scheme, _, rest = uri.partition("://")
        database = rest.partition("/")[2]
        if scheme.split("+")[0] == "sqlite" and (database in ("", ":memory:") or "mode=memory" in database):
            raise ValueError(
                f"an in-memory SQLite database cannot hold the prediction log (each connection gets its own, "
                f"empty one), got {uri!r}; use a file, e.g. sqlite:///.shipml/predictions.db"
            )
        return uri
