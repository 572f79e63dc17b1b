"""The canaries part of the store: each model's canary (a ``core.canary.Canary``) and its log of events.

Every write is a compare-and-set on the canary it replaces: ``save(canary, event, expect=<the updated_at read>)``
is one conditional statement (an ``UPDATE ... WHERE model = :m AND updated_at = :expect``, or an insert that does
nothing when a canary exists), so two writers holding the same token never both win, on SQLite or Postgres; the
event is appended in the same transaction, only by the winner. Each write sets a new ``updated_at``, strictly after
the token it replaces, which is the next writer's token.
"""

from __future__ import annotations

import time
from dataclasses import replace

import sqlalchemy as sa

from shipml.adapters.store import tables
from shipml.adapters.store.engine import Database
from shipml.core.canary import Canary, CanaryEvent

_TICK_S = 1e-6  # a new token is at least this much after the old one (exact in a double until year 9999)


class Canaries:
    """Tables ``canaries`` and ``canary_events``."""

    def __init__(self, database: Database) -> None:
        self._db = database

    def save(self, canary: Canary, event: CanaryEvent | None = None, *, expect: float | None) -> Canary | None:
        """Write ``canary`` and append ``event`` to its log if the stored canary of its model is still the one read:
        ``expect`` is its ``updated_at`` (None: there was none). The canary as written (with its new
        ``updated_at``), or None when another writer changed it since: then nothing is written."""
        c, e = tables.canaries, tables.canary_events
        now = max(time.time(), (expect or 0.0) + _TICK_S)
        state = replace(canary, updated_at=now)
        values = {"model": canary.model, "updated_at": now, "state": state.to_json()}
        inserting = expect is None
        if inserting:
            statement = self._db.insert(c).values(**values).on_conflict_do_nothing(index_elements=["model"])
            if not self._db.is_sqlite:  # psycopg reports no rowcount for this INSERT; SQLite before 3.35 no RETURNING
                statement = statement.returning(c.c.model)
        else:
            statement = sa.update(c).where(c.c.model == canary.model, c.c.updated_at == expect).values(**values)
        what = f"cannot save the canary of {canary.model!r}"
        with self._db.writing(what) as conn:
            result = conn.execute(statement)
            won = result.first() is not None if inserting and not self._db.is_sqlite else result.rowcount == 1
            if not won:
                return None
            if event is not None:
                conn.execute(sa.insert(e).values(model=canary.model, ts=now, event=replace(event, ts=now).to_json()))
        return state

    def read(self, model: str) -> Canary | None:
        """The canary of ``model`` (None: there never was one), with the store's ``updated_at``."""
        found = self._select(model)
        return found[0] if found else None

    def all(self) -> list[Canary]:
        """The canary of every model that has one, by model name."""
        return self._select(None)

    def events(self, model: str, *, since: float = 0.0) -> list[CanaryEvent]:
        """The log of the canary of ``model`` from ``since``, oldest first, each with the time it was written."""
        e = tables.canary_events
        query = sa.select(e.c.ts, e.c.event).where(e.c.model == model, e.c.ts >= since).order_by(e.c.id)
        with self._db.reading(f"cannot read the canary events of {model!r}") as conn:
            rows = conn.execute(query).all()
        return [CanaryEvent.from_json(str(text), float(ts)) for ts, text in rows]

    def _select(self, model: str | None) -> list[Canary]:
        c = tables.canaries
        query = sa.select(c.c.updated_at, c.c.state).order_by(c.c.model)
        if model is not None:
            query = query.where(c.c.model == model)
        with self._db.reading("cannot read canaries") as conn:
            rows = conn.execute(query).all()
        return [replace(Canary.from_json(str(state)), updated_at=float(updated)) for updated, state in rows]
