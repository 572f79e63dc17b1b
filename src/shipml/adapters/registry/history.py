"""The alias history: one registered-model tag per move, under a key no two moves can share.

Keys used to be ``shipml.history.<seq>`` with ``seq = len(history) + 1``: two moves at once wrote the same
tag and one was lost. A key is now the move's time in nanoseconds (20 digits, so keys sort in time order)
and a random suffix. Old keys (six digits) stay readable; the history is ordered by each move's recorded
time, then by key.
"""

from __future__ import annotations

import json
import secrets
import time
from datetime import UTC, datetime
from typing import Any

from shipml.adapters.registry.refs import AliasMove
from shipml.errors import RegistryError

HISTORY_PREFIX = "shipml.history."


def new_history_key() -> str:
    """A tag key for one move: time-ordered, unique across processes and machines."""
    return f"{HISTORY_PREFIX}{time.time_ns():020d}-{secrets.token_hex(4)}"


def encode_move(move: AliasMove) -> str:
    return json.dumps(move.__dict__)


def read_history(tags: dict[str, str], name: str) -> list[AliasMove]:
    """The moves recorded in a registered model's tags, oldest first."""
    moves: list[tuple[datetime, str, AliasMove]] = []
    for key, value in tags.items():
        if not key.startswith(HISTORY_PREFIX):
            continue
        try:
            raw: Any = json.loads(value)
            move = AliasMove(**raw)
            when = datetime.fromisoformat(move.time)
            when = when if when.tzinfo else when.replace(tzinfo=UTC)  # comparable with every other move
        except (ValueError, TypeError) as exc:
            raise RegistryError(f"model {name!r}: history tag {key}: unreadable move: {exc}") from None
        moves.append((when, key, move))
    moves.sort(key=lambda m: (m[0], m[1]))
    return [m for _, _, m in moves]
