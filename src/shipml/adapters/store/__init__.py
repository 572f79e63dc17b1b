"""The prediction store: every prediction and its feedback, in SQLite (WAL) or Postgres.

Rows are written by one writer thread in batches (group commit). In ``commit`` durability the caller
waits for the commit of its row; in ``async`` it does not, and a full queue is reported at once so the
service can shed load. Features are stored as JSON and in typed slot columns named by a catalog per
schema, and read back as numpy columns through ``read_window``.
"""

from shipml.adapters.store.catalog import FeatureSlot, SchemaSlots, slots_for
from shipml.adapters.store.host_link import HostLink
from shipml.adapters.store.host_writer import HostWriterProcess
from shipml.adapters.store.migrations import LATEST, MIGRATIONS, Migration, migrate
from shipml.adapters.store.prediction_store import PredictionStore
from shipml.adapters.store.tables import CATEGORICAL_SLOTS, NUMERIC_SLOTS, STATUSES
from shipml.adapters.store.window import FeatureWindow, Outcomes
from shipml.adapters.store.writer import StoreWriter
from shipml.errors import StoreError, StoreFull

__all__ = [
    "CATEGORICAL_SLOTS",
    "LATEST",
    "MIGRATIONS",
    "NUMERIC_SLOTS",
    "STATUSES",
    "FeatureSlot",
    "FeatureWindow",
    "HostLink",
    "HostWriterProcess",
    "Migration",
    "Outcomes",
    "PredictionStore",
    "SchemaSlots",
    "StoreError",
    "StoreFull",
    "StoreWriter",
    "migrate",
    "slots_for",
]
