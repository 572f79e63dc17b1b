"""The reports part of the store: drift reports and experiment reports, each kept as JSON with its window and
verdict, and read back as the typed report (``DriftReport``, ``ExperimentReport``): no caller decodes JSON."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

import sqlalchemy as sa

from shipml.adapters.store.engine import Database
from shipml.errors import StoredReportUnreadable


class StorableReport(Protocol):
    """What the store keeps of a report beside its JSON: the model, the window and the verdict."""

    @property
    def model(self) -> str: ...
    @property
    def since(self) -> float: ...
    @property
    def until(self) -> float: ...
    @property
    def verdict(self) -> str: ...
    def to_json(self) -> str: ...


R = TypeVar("R", bound=StorableReport)


class Reports(Generic[R]):
    """One table of reports (``drift_reports`` or ``experiment_reports``) holding ``R``s; ``what`` names one in
    errors, ``decode`` reads one back from its JSON."""

    def __init__(self, database: Database, table: sa.Table, what: str, decode: Callable[[str], R]) -> None:
        self._db = database
        self._table = table
        self._what = what
        self._decode = decode

    def save(self, report: R) -> int:
        """Keep ``report``; its id in the store."""
        r = self._table
        values = {"model": report.model, "created_at": time.time(), "since": report.since, "until": report.until,
                  "verdict": report.verdict, "report": report.to_json()}  # fmt: skip
        with self._db.writing(f"cannot save the {self._what} of {report.model!r}") as conn:
            return int(conn.execute(sa.insert(r).values(**values).returning(r.c.id)).scalar_one())

    def latest(self, model: str) -> R | None:
        """The newest report of ``model``, or None when none is stored."""
        found = self.recent(model, limit=1)
        return found[0] if found else None

    def recent(self, model: str, *, limit: int) -> list[R]:
        """The newest ``limit`` reports of ``model``, newest first."""
        r = self._table
        query = sa.select(r.c.id, r.c.report).where(r.c.model == model).order_by(r.c.id.desc()).limit(limit)
        with self._db.reading(f"cannot read the {self._what}s of {model!r}") as conn:
            found = conn.execute(query).all()
        return [self._decoded(model, report_id, text) for report_id, text in found]

    def latest_per_model(self) -> list[R]:
        """The newest report of every model, ordered by model."""
        r = self._table
        newest = sa.select(sa.func.max(r.c.id)).group_by(r.c.model).scalar_subquery()
        query = sa.select(r.c.model, r.c.id, r.c.report).where(r.c.id.in_(newest)).order_by(r.c.model)
        with self._db.reading(f"cannot read the {self._what}s") as conn:
            found = conn.execute(query).all()
        return [self._decoded(model, report_id, text) for model, report_id, text in found]

    def _decoded(self, model: str, report_id: int, text: str) -> R:
        try:
            return self._decode(text)
        except (ValueError, KeyError, TypeError) as exc:
            raise StoredReportUnreadable(
                f"store: the {self._what} {report_id} of {model!r} cannot be read: {type(exc).__name__}: {exc}"
            ) from None
