"""The leases part of the store: one runner of a scheduled job across workers and replicas."""

from __future__ import annotations

import time

import sqlalchemy as sa

from shipml.adapters.store import tables
from shipml.adapters.store.engine import Database


class Leases:
    """Table ``leases``."""

    def __init__(self, database: Database) -> None:
        self._db = database

    def acquire(self, name: str, holder: str, ttl_s: float) -> bool:
        """Take or renew the lease ``name`` for ``holder`` until ``ttl_s`` from now; False if another holder
        has it and it has not expired (one runner of a scheduled job across workers and replicas)."""
        le = tables.leases
        now = time.time()
        with self._db.writing(f"cannot take the lease {name!r}") as conn:
            if self._db.is_sqlite:
                conn.exec_driver_sql("SELECT 1")  # the flock above already serialises SQLite writers
            else:
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext(:n))"), {"n": "shipml-lease:" + name})
            found = conn.execute(sa.select(le.c.holder, le.c.expires_at).where(le.c.name == name)).first()
            if found is not None and found[0] != holder and found[1] > now:
                return False
            if found is None:
                conn.execute(sa.insert(le).values(name=name, holder=holder, expires_at=now + ttl_s))
            else:
                conn.execute(sa.update(le).where(le.c.name == name).values(holder=holder, expires_at=now + ttl_s))
        return True
