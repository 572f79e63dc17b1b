"""The routing-announcements part of the store: each serving process says, every poll, what decides its routing
(``core.routing.routing_fingerprint``), so replicas whose salt, variants or weights differ find out.

An announcement lives until ``expires_at`` (on the database's clock, a few polls ahead): a process that stops
announcing drops out of the comparison on its own; rows expired a day ago are removed by the next announcement.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from shipml.adapters.store import tables
from shipml.adapters.store.engine import Database
from shipml.adapters.store.leases import HOLDER_MAX, fitted

FORGET_S = 86_400.0  # an expired announcement is deleted this long after it expired


@dataclass(frozen=True)
class Announcement:
    """One process's routing, as it last announced it."""

    process: str
    fingerprint: str
    summary: str


class RoutingAnnouncements:
    """Table ``routing_announcements``: one row per model and serving process."""

    def __init__(self, database: Database) -> None:
        self._db = database

    def announce(self, model: str, process: str, fingerprint: str, summary: str, ttl_s: float) -> list[Announcement]:
        """Announce ``process``'s routing of ``model`` for ``ttl_s``; every live announcement of ``model`` (this
        one included), read in the same transaction."""
        ra = tables.routing_announcements
        process = fitted(process, HOLDER_MAX)
        with self._db.writing(f"cannot announce the routing of {model!r}") as conn:
            now = float(conn.execute(sa.select(self._db.now())).scalar_one())
            values = {"fingerprint": fingerprint, "summary": summary, "expires_at": now + ttl_s}
            insert = self._db.insert(ra).values(model=model, process=process, **values)
            conn.execute(
                insert.on_conflict_do_update(
                    index_elements=[ra.c.model, ra.c.process], set_={k: insert.excluded[k] for k in values}
                )
            )
            conn.execute(sa.delete(ra).where(ra.c.expires_at < now - FORGET_S))
            rows = conn.execute(
                sa.select(ra.c.process, ra.c.fingerprint, ra.c.summary)
                .where(ra.c.model == model, ra.c.expires_at > now)
                .order_by(ra.c.process)
            ).all()
        return [Announcement(str(p), str(f), str(s)) for p, f, s in rows]

    def withdraw(self, model: str, process: str) -> None:
        """``process`` stops serving ``model``: its announcement goes at once."""
        ra = tables.routing_announcements
        with self._db.writing(f"cannot withdraw the routing of {model!r}") as conn:
            conn.execute(sa.delete(ra).where(ra.c.model == model, ra.c.process == fitted(process, HOLDER_MAX)))
