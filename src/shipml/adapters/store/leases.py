"""The leases part of the store: one runner of a job across workers and replicas (the scheduled monitoring job, a
canary's controller).

A lease is held by a holder until it expires; its holder renews it while it works and releases it when it stops,
so that another process takes over at once. Expiry is on the database's clock (``Database.now``), never a host's:
two replicas whose clocks disagree still see the same holder. Holder ids (``new_holder``) and lease names always fit their columns:
a long hostname (a Kubernetes pod's) or model name is shortened, with a hash of the whole to keep it unique.
"""

from __future__ import annotations

import hashlib
import os
import socket
import uuid

import sqlalchemy as sa

from shipml.adapters.store import tables
from shipml.adapters.store.engine import Database

HOLDER_MAX = 64  # tables.leases.holder
NAME_MAX = 200  # tables.leases.name


def new_holder() -> str:
    """A holder id of this process, unique to the call: ``<host>:<pid>:<random>``, at most ``HOLDER_MAX`` long."""
    return fitted(f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}", HOLDER_MAX)


def fitted(text: str, limit: int) -> str:
    """``text`` when it fits in ``limit`` characters, else its head and a hash of the whole (still unique)."""
    if len(text) <= limit:
        return text
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8).hexdigest()
    return f"{text[: limit - len(digest) - 1]}~{digest}"


class Leases:
    """Table ``leases``."""

    def __init__(self, database: Database) -> None:
        self._db = database

    def acquire(self, name: str, holder: str, ttl_s: float) -> bool:
        """Take or renew the lease ``name`` for ``holder`` until ``ttl_s`` from now; False if another holder
        has it and it has not expired."""
        le = tables.leases
        key, holder = fitted(name, NAME_MAX), fitted(holder, HOLDER_MAX)
        with self._db.writing(f"cannot take the lease {name!r}") as conn:
            if not self._db.is_sqlite:  # the flock of writing() already serialises SQLite writers
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext(:n))"), {"n": "shipml-lease:" + key})
            now = float(conn.execute(sa.select(self._db.now())).scalar_one())  # after the lock: no one is between
            found = conn.execute(sa.select(le.c.holder, le.c.expires_at).where(le.c.name == key)).first()
            if found is not None and found[0] != holder and found[1] > now:
                return False
            if found is None:
                conn.execute(sa.insert(le).values(name=key, holder=holder, expires_at=now + ttl_s))
            else:
                conn.execute(sa.update(le).where(le.c.name == key).values(holder=holder, expires_at=now + ttl_s))
        return True

    def release(self, name: str, holder: str) -> None:
        """Give the lease ``name`` up, if ``holder`` holds it (someone else's is left alone)."""
        le = tables.leases
        key, holder = fitted(name, NAME_MAX), fitted(holder, HOLDER_MAX)
        with self._db.writing(f"cannot release the lease {name!r}") as conn:
            conn.execute(sa.delete(le).where(le.c.name == key, le.c.holder == holder))

    def holder(self, name: str) -> str | None:
        """Who holds the lease ``name`` now (None: nobody, or it expired)."""
        le = tables.leases
        query = sa.select(le.c.holder).where(le.c.name == fitted(name, NAME_MAX), le.c.expires_at > self._db.now())
        with self._db.reading(f"cannot read the lease {name!r}") as conn:
            found = conn.execute(query).scalar_one_or_none()
        return None if found is None else str(found)
