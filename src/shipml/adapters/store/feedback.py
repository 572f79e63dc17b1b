"""The feedback part of the store: ground truth for logged predictions, one answer per prediction."""

from __future__ import annotations

import time
from collections.abc import Iterable

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg_dialect

from shipml.adapters.store import tables
from shipml.adapters.store.engine import Database
from shipml.adapters.store.predictions import Predictions
from shipml.core.prediction import Truth

# ids per lookup of ``Feedback.read``: on SQLite bound values of an IN (well under its 32,766 bound parameters), on
# Postgres the elements of one array parameter
IDS_PER_QUERY = 5_000
IDS_PER_ARRAY = 50_000
_TEXT_ARRAY = pg_dialect.ARRAY(sa.String)


class Feedback:
    """Table ``feedback``; a prediction is found in ``predictions`` or in a batch of ``prediction_batches``."""

    def __init__(self, database: Database, predictions: Predictions) -> None:
        self._db = database
        self._predictions = predictions

    def add(self, prediction_id: str, label: str | None, value: float | None) -> bool:
        """Record ground truth for a prediction; False if no such prediction. Later feedback replaces earlier:
        one upsert, so feedback for one id sent twice at once (a client's retry) is recorded, never a conflict."""
        fb = tables.feedback
        insert = self._db.insert(fb).values(prediction_id=prediction_id, ts=time.time(), label=label, value=value)
        upsert = insert.on_conflict_do_update(
            index_elements=[fb.c.prediction_id],
            set_={"ts": insert.excluded.ts, "label": insert.excluded.label, "value": insert.excluded.value},
        )
        with self._db.errors(f"cannot record feedback for {prediction_id!r}"), self._db.engine.begin() as conn:
            found = self._predictions.find_row(conn, prediction_id)
            if found is None and self._predictions.find_in_batches(conn, prediction_id) is None:
                return False
            conn.execute(upsert)
        return True

    def get(self, prediction_id: str) -> Truth | None:
        """The ground truth recorded for a prediction, or None."""
        fb = tables.feedback
        with self._db.reading(f"cannot read the feedback of {prediction_id!r}") as conn:
            row = conn.execute(sa.select(fb.c.label, fb.c.value).where(fb.c.prediction_id == prediction_id)).first()
        return None if row is None else Truth(row[0], row[1])

    def read(self, ids: Iterable[str]) -> dict[str, Truth]:
        """The feedback recorded for ``ids`` (a window's predictions), by prediction id: looked up by the table's
        key, so a read costs the window's size, never the table's (whatever feedback other windows and models
        have). On Postgres ``IDS_PER_ARRAY`` ids at a time as one array (``= ANY``: a list of that many bound
        values took ten times as long to send and plan), on SQLite ``IDS_PER_QUERY`` at a time (``IN``)."""
        fb = tables.feedback
        wanted = sorted(set(ids))
        out: dict[str, Truth] = {}
        query = sa.select(fb.c.prediction_id, fb.c.label, fb.c.value)
        per = IDS_PER_QUERY if self._db.is_sqlite else IDS_PER_ARRAY
        with self._db.reading("cannot read feedback") as conn:
            for start in range(0, len(wanted), per):
                for pid, label, value in conn.execute(query.where(self._among(wanted[start : start + per]))):
                    out[pid] = Truth(label, value)
        return out

    def _among(self, ids: list[str]) -> sa.ColumnElement[bool]:
        """``feedback.prediction_id`` is one of ``ids``: an IN on SQLite, ``= ANY(one array)`` on Postgres."""
        column = tables.feedback.c.prediction_id
        if self._db.is_sqlite:
            return column.in_(ids)
        return column == sa.any_(sa.literal(ids, _TEXT_ARRAY))
