"""The notifications part of the store: the last webhook message sent per model (``core.notification``), shared by
every worker and replica that may run the monitoring job."""

from __future__ import annotations

import json
import time

import sqlalchemy as sa

from shipml.adapters.store import tables
from shipml.adapters.store.engine import Database
from shipml.core.notification import SentVerdict


class Notifications:
    """Table ``webhook_notifications``: one row per model, replaced at each message sent."""

    def __init__(self, database: Database) -> None:
        self._db = database

    def last(self, model: str) -> SentVerdict | None:
        """What was last sent for ``model`` (None: nothing yet)."""
        n = tables.webhook_notifications
        query = sa.select(n.c.verdict, n.c.dropped, n.c.sent_at).where(n.c.model == model)
        with self._db.reading(f"cannot read the notifications of {model!r}") as conn:
            found = conn.execute(query).first()
        if found is None:
            return None
        verdict, dropped, sent_at = found
        return SentVerdict(
            model, str(verdict), bool(dropped), {str(k): float(v) for k, v in json.loads(sent_at).items()}
        )

    def record(self, sent: SentVerdict) -> None:
        """Keep ``sent`` as the last message of its model."""
        n = tables.webhook_notifications
        values = {"model": sent.model, "verdict": sent.verdict, "dropped": sent.dropped,
                  "sent_at": json.dumps(dict(sent.sent_at), sort_keys=True), "updated_at": time.time()}  # fmt: skip
        insert = self._db.insert(n).values(**values)
        upsert = insert.on_conflict_do_update(
            index_elements=[n.c.model],
            set_={k: insert.excluded[k] for k in ("verdict", "dropped", "sent_at", "updated_at")},
        )
        with self._db.writing(f"cannot record the notification of {sent.model!r}") as conn:
            conn.execute(upsert)
