from __future__ import annotations

import time
import uuid

from shipml.core.ids import Uuid7Generator, uuid7_seconds


def test_uuid7_layout_and_uniqueness_under_load() -> None:
    gen = Uuid7Generator()
    ids = [gen.uuid7() for _ in range(50_000)]
    assert len(set(ids)) == len(ids)
    assert all(i.version == 7 and i.variant == uuid.RFC_4122 for i in ids[:100])
    assert ids == sorted(ids)  # time-ordered within a process, even within one millisecond


def test_batch_ids_are_canonical_uuid7_strings_in_order() -> None:
    gen = Uuid7Generator()
    ids = gen.strings(10_000)
    parsed = [uuid.UUID(i) for i in ids]
    assert [str(p) for p in parsed] == ids
    assert all(p.version == 7 for p in parsed)
    assert parsed == sorted(parsed) and len(set(ids)) == len(ids)
    assert gen.uuid7() > parsed[-1]


def test_two_generators_never_collide() -> None:
    a, b = Uuid7Generator(), Uuid7Generator()
    ids = a.strings(20_000) + b.strings(20_000)
    assert len(set(ids)) == len(ids)


def test_the_time_of_an_id_is_read_back_and_other_ids_have_none() -> None:
    before = time.time()
    [made] = Uuid7Generator().strings(1)
    seconds = uuid7_seconds(made)
    assert seconds is not None and before - 0.002 <= seconds <= time.time() + 0.002
    assert uuid7_seconds(str(uuid.uuid4())) is None
    assert uuid7_seconds("not-an-id") is None
