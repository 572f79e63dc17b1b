"""The canaries part of the store: each model's canary state (JSON) and its event log."""

from __future__ import annotations

import time

import sqlalchemy as sa

from shipml.adapters.store import tables
from shipml.adapters.store.engine import Database


class Canaries:
    """Tables ``canaries`` and ``canary_events``."""

    def __init__(self, database: Database) -> None:
        self._db = database

    def save(self, model: str, state: str, event: str | None = None, *, expect: float | None = None) -> bool:
        """Write the canary of ``model`` (its state as JSON) and append ``event`` (JSON) to its log, in one
        transaction. With ``expect`` (the ``updated_at`` read before), only if nobody wrote it since: False then,
        and nothing written (two controllers never both advance a step)."""
        c, e = tables.canaries, tables.canary_events
        now = time.time()
        with self._db.writing(f"cannot save the canary of {model!r}") as conn:
            found = conn.execute(sa.select(c.c.updated_at).where(c.c.model == model)).scalar_one_or_none()
            if expect is not None and found != expect:
                return False
            if found is None:
                conn.execute(sa.insert(c).values(model=model, updated_at=now, state=state))
            else:
                conn.execute(sa.update(c).where(c.c.model == model).values(updated_at=now, state=state))
            if event is not None:
                conn.execute(sa.insert(e).values(model=model, ts=now, event=event))
        return True

    def read(self, model: str | None = None) -> list[tuple[str, float, str]]:
        """(model, updated_at, state JSON) of the canary of ``model``, or of every model when None."""
        c = tables.canaries
        query = sa.select(c.c.model, c.c.updated_at, c.c.state).order_by(c.c.model)
        if model is not None:
            query = query.where(c.c.model == model)
        with self._db.reading("cannot read canaries") as conn:
            return [(str(m), float(u), str(s)) for m, u, s in conn.execute(query)]

    def events(self, model: str, *, since: float = 0.0) -> list[tuple[float, str]]:
        """(ts, event JSON) of the canary log of ``model`` from ``since``, oldest first."""
        e = tables.canary_events
        query = sa.select(e.c.ts, e.c.event).where(e.c.model == model, e.c.ts >= since).order_by(e.c.id)
        with self._db.reading(f"cannot read the canary events of {model!r}") as conn:
            return [(float(t), str(ev)) for t, ev in conn.execute(query)]
