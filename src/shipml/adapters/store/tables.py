"""The store's tables as they are after every migration (``migrations.py`` builds them; this describes them).

Features live in a fixed set of typed slot columns, never in a column per feature name: ``n0..n63``
(double precision) for numeric, integer and boolean features, ``c0..c31`` (text) for categoricals, and
``feature_catalog`` says which feature of which schema is in which slot. Names are kept exactly (case
and all) in the catalog, so no two features can share a column, and the table's width never depends
on the models it has seen.
"""

from __future__ import annotations

import sqlalchemy as sa

# Slot counts. The widest models this project is for have a few dozen features; 64 numeric and 32
# categorical slots cover them with room, and keep the row far below the column ceilings (Postgres
# 1600, SQLite 2000) and the bound-parameter budget of one multi-row INSERT (about 110 per row). An
# empty slot costs a bit in Postgres's null bitmap and a byte in SQLite's record header. Features
# beyond the slots are still in the row's ``features`` JSON, which ``read_window`` falls back to.
NUMERIC_SLOTS = 64
CATEGORICAL_SLOTS = 32

NUMERIC_COLUMNS = tuple(f"n{i}" for i in range(NUMERIC_SLOTS))
CATEGORICAL_COLUMNS = tuple(f"c{i}" for i in range(CATEGORICAL_SLOTS))
SLOT_COLUMNS = NUMERIC_COLUMNS + CATEGORICAL_COLUMNS

# The columns every row fills, in the order the writer binds them (slot columns follow).
BASE_COLUMNS = (
    "id", "ts", "model", "version", "variant", "role", "routing_key", "schema_sha256",
    "label", "score", "features", "outputs", "latency_ms", "status",
)  # fmt: skip

# The values of ``predictions.status`` (see its column).
STATUSES = ("ok", "invalid", "output_invalid", "error")

metadata = sa.MetaData()

predictions = sa.Table(
    "predictions",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("ts", sa.Float, nullable=False),
    sa.Column("model", sa.String(200), nullable=False),
    sa.Column("version", sa.String(20), nullable=False),
    sa.Column("variant", sa.String(50), nullable=False),
    sa.Column("features", sa.Text, nullable=False),  # the record as served, JSON (backfill, ad-hoc reads)
    sa.Column("outputs", sa.Text, nullable=False),  # the full answer, JSON
    sa.Column("latency_ms", sa.Float, nullable=False),
    # Added by migration 2 (columns are in their order on disk).
    sa.Column("role", sa.Text, nullable=False, server_default="primary"),  # primary | shadow
    sa.Column("routing_key", sa.Text),
    sa.Column("schema_sha256", sa.Text, nullable=False, server_default=""),
    # The predicted class as text (classification), NULL for regression.
    sa.Column("label", sa.Text),
    # Binary: the probability of the second class in the model's class order (the positive class);
    # multiclass: the largest probability (the predicted class's); regression: the predicted value.
    sa.Column("score", sa.Float),
    *[sa.Column(name, sa.Float) for name in NUMERIC_COLUMNS],
    *[sa.Column(name, sa.Text) for name in CATEGORICAL_COLUMNS],
    # Added by migration 4. What the row is: "ok", a prediction (the only rows monitoring reads by
    # default); "invalid", a record refused by validation (no prediction; its features as sent, which
    # may not fit the schema, so the row has schema_sha256 "" and its features in the JSON only);
    # "output_invalid", a record the model answered with NaN or inf. Rows older than it are "ok".
    # Not indexed: reads name a model and a time range (the composite index), and status is a filter
    # on the rows found; a second index costs the writer (see migration 2).
    sa.Column("status", sa.Text, nullable=False, server_default="ok"),
    sa.Index("ix_predictions_model_variant_ts", "model", "variant", "ts"),
)

feedback = sa.Table(
    "feedback",
    metadata,
    sa.Column("prediction_id", sa.String(36), primary_key=True),
    sa.Column("ts", sa.Float, nullable=False),
    sa.Column("label", sa.Text),
    sa.Column("value", sa.Float),
)

# Added by migration 5: the "ok" predictions of one chunk of a batch request as one row (batches.py). The
# same predictions a chunk's rows in ``predictions`` would hold, read back by the same store methods.
prediction_batches = sa.Table(
    "prediction_batches",
    metadata,
    sa.Column("first_id", sa.String(36), primary_key=True),  # the id of its first prediction
    sa.Column("last_id", sa.String(36), nullable=False),
    sa.Column("ts", sa.Float, nullable=False),
    sa.Column("model", sa.String(200), nullable=False),
    sa.Column("version", sa.String(20), nullable=False),
    sa.Column("variant", sa.String(50), nullable=False),
    sa.Column("role", sa.Text, nullable=False),
    sa.Column("schema_sha256", sa.Text, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("n_rows", sa.Integer, nullable=False),
    sa.Column("latency_ms", sa.Float, nullable=False),
    sa.Column("payload", sa.LargeBinary, nullable=False),
    sa.Index("ix_prediction_batches_model_variant_ts", "model", "variant", "ts"),
)

# The columns the writer binds for a batch, in order.
BATCH_COLUMNS = (
    "first_id", "last_id", "ts", "model", "version", "variant", "role", "schema_sha256", "status", "n_rows",
    "latency_ms", "payload",
)  # fmt: skip

# Added by migration 6: per-minute counts on the reference profile's buckets (histograms.py). One row per
# (model, version, variant, role, minute, writer): each worker process replaces its own cumulative counts.
feature_histograms = sa.Table(
    "feature_histograms",
    metadata,
    sa.Column("model", sa.String(200), primary_key=True),
    sa.Column("minute", sa.Integer, primary_key=True),  # Unix time // 60
    sa.Column("version", sa.String(20), primary_key=True),
    sa.Column("variant", sa.String(50), primary_key=True),
    sa.Column("role", sa.String(20), primary_key=True),
    sa.Column("writer", sa.String(32), primary_key=True),  # a process's keeper, or "recompute"
    sa.Column("layout_sha", sa.String(64), nullable=False),
    sa.Column("n_rows", sa.Integer, nullable=False),
    sa.Column("counts", sa.LargeBinary, nullable=False),  # int64 little-endian, the layout's parts in order
)

# The bucket layouts the histograms are counted in (histograms.HistogramLayout.describe).
histogram_layouts = sa.Table(
    "histogram_layouts",
    metadata,
    sa.Column("layout_sha", sa.String(64), primary_key=True),
    sa.Column("layout", sa.Text, nullable=False),
)


def _reports(name: str) -> sa.Table:
    """A table of stored reports (JSON), one row per run, the newest per model read by /metrics."""
    return sa.Table(
        name,
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("since", sa.Float, nullable=False),
        sa.Column("until", sa.Float, nullable=False),
        sa.Column("verdict", sa.String(30), nullable=False),
        sa.Column("report", sa.Text, nullable=False),
        sa.Index(f"ix_{name}_model_created", "model", "created_at"),
    )


# Added by migration 7: the monitoring job's reports (a DriftReport as JSON).
drift_reports = _reports("drift_reports")

# Added by migration 7: leases, so one process at a time runs a scheduled job across workers and replicas.
leases = sa.Table(
    "leases",
    metadata,
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("holder", sa.String(64), nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
)

# Added by migration 9: the last webhook message sent per model (the notifier's memory, shared by every worker
# and replica that may run the monitoring job).
webhook_notifications = sa.Table(
    "webhook_notifications",
    metadata,
    sa.Column("model", sa.String(200), primary_key=True),
    sa.Column("verdict", sa.String(30), nullable=False),
    sa.Column("dropped", sa.Boolean, nullable=False),
    sa.Column("sent_at", sa.Text, nullable=False),  # JSON: condition -> Unix time it was last sent
    sa.Column("updated_at", sa.Float, nullable=False),
)

# Added by migration 11: what decides routing in each serving process (a fingerprint of its salt, variants and
# weights), announced every poll; replicas compare theirs (shipml_routing_mismatch).
routing_announcements = sa.Table(
    "routing_announcements",
    metadata,
    sa.Column("model", sa.String(200), primary_key=True),
    sa.Column("process", sa.String(64), primary_key=True),  # <host>:<pid>:<random>, as a lease holder
    sa.Column("fingerprint", sa.String(32), nullable=False),
    sa.Column("summary", sa.Text, nullable=False),  # the variants and weights, for the operator (no salt)
    sa.Column("expires_at", sa.Float, nullable=False),  # on the database's clock
)

# Added by migration 8: `shipml ab report`'s reports (an ExperimentReport as JSON).
experiment_reports = _reports("experiment_reports")

# Added by migration 8: a canary per registered model (its state as JSON, rewritten at each step; every
# replica follows it), and the canary's events, appended.
canaries = sa.Table(
    "canaries",
    metadata,
    sa.Column("model", sa.String(200), primary_key=True),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Column("state", sa.Text, nullable=False),
)
canary_events = sa.Table(
    "canary_events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("model", sa.String(200), nullable=False),
    sa.Column("ts", sa.Float, nullable=False),
    sa.Column("event", sa.Text, nullable=False),  # JSON
    sa.Index("ix_canary_events_model_ts", "model", "ts"),
)

# One row per feature of each schema seen: which slot holds it (NULL: JSON only).
feature_catalog = sa.Table(
    "feature_catalog",
    metadata,
    sa.Column("schema_sha256", sa.Text, primary_key=True),
    sa.Column("position", sa.Integer, primary_key=True),  # the feature's index in its schema
    sa.Column("feature", sa.Text, nullable=False),  # the name exactly as in the schema
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("slot", sa.Text),
)

schema_version = sa.Table(
    "schema_version",
    metadata,
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("applied_at", sa.Float, nullable=False),
)
