from __future__ import annotations

import uuid

from shipml.core.ids import uuid7


def test_uuid7_layout_and_uniqueness_under_load() -> None:
    ids = [uuid7() for _ in range(50_000)]
    assert len(set(ids)) == len(ids)
    assert all(i.version == 7 and i.variant == uuid.RFC_4122 for i in ids[:100])
    assert ids == sorted(ids)  # time-ordered within a process, even within one millisecond
