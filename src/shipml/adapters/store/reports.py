"""The reports part of the store: drift reports and experiment reports, each kept with its window and verdict."""

from __future__ import annotations

import time
from typing import Any

import sqlalchemy as sa

from shipml.adapters.store.engine import Database, reason
from shipml.errors import StoreError


class Reports:
    """One table of reports (``drift_reports`` or ``experiment_reports``); ``what`` names one in errors."""

    def __init__(self, database: Database, table: sa.Table, what: str) -> None:
        self._db = database
        self._table = table
        self._what = what

    def save(self, model: str, since: float, until: float, verdict: str, report: str) -> int:
        """Keep a report (JSON); its id."""
        r, what = self._table, self._what
        values = {"model": model, "created_at": time.time(), "since": since, "until": until, "verdict": verdict,
                  "report": report}  # fmt: skip
        try:
            with self._db.turn(), self._db.engine.begin() as conn:
                return int(conn.execute(sa.insert(r).values(**values).returning(r.c.id)).scalar_one())
        except sa.exc.SQLAlchemyError as exc:
            raise StoreError(f"store: cannot save the {what} of {model!r}: {reason(exc)}") from None

    def latest(self, model: str | None = None, *, limit: int = 1) -> list[dict[str, Any]]:
        """The newest stored reports (``id``, ``model``, ``created_at``, ``since``, ``until``, ``verdict``,
        ``report`` as JSON text), newest first: of ``model``, or the newest of every model when None."""
        r = self._table
        columns = [r.c.id, r.c.model, r.c.created_at, r.c.since, r.c.until, r.c.verdict, r.c.report]
        names = ("id", "model", "created_at", "since", "until", "verdict", "report")
        with self._db.engine.connect() as conn:
            if model is not None:
                query = sa.select(*columns).where(r.c.model == model).order_by(r.c.id.desc()).limit(limit)
                return [dict(zip(names, row, strict=True)) for row in conn.execute(query)]
            newest = sa.select(sa.func.max(r.c.id)).group_by(r.c.model).scalar_subquery()
            query = sa.select(*columns).where(r.c.id.in_(newest)).order_by(r.c.model)
            return [dict(zip(names, row, strict=True)) for row in conn.execute(query)]
