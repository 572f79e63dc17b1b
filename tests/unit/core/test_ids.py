from __future__ import annotations

import uuid

from shipml.core.ids import uuid7, uuid7_strings


def test_uuid7_layout_and_uniqueness_under_load() -> None:
    ids = [uuid7() for _ in range(50_000)]
    assert len(set(ids)) == len(ids)
    assert all(i.version == 7 and i.variant == uuid.RFC_4122 for i in ids[:100])
    assert ids == sorted(ids)  # time-ordered within a process, even within one millisecond


def test_batch_ids_are_canonical_uuid7_strings_in_order() -> None:
    ids = uuid7_strings(10_000)
    parsed = [uuid.UUID(i) for i in ids]
    assert [str(p) for p in parsed] == ids
    assert all(p.version == 7 for p in parsed)
    assert parsed == sorted(parsed) and len(set(ids)) == len(ids)
    assert uuid7() > parsed[-1]
