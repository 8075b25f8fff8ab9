"""Deterministic ids are exactly uuid5, only faster; new ids are time-ordered UUIDv7."""

from __future__ import annotations

import time
import uuid

from hypothesis import given
from hypothesis import strategies as st

from engine.ids import name_id, new_id

NAMESPACE = uuid.UUID("6f1c2a52-4d0e-5b7e-9a51-3c0f6e1d2b8a")


@given(st.text())
def test_name_id_equals_uuid5(name: str) -> None:
    assert name_id(NAMESPACE, name) == str(uuid.uuid5(NAMESPACE, name))


def test_name_id_is_a_version_5_uuid() -> None:
    parsed = uuid.UUID(name_id(NAMESPACE, "evt-1/0"))
    assert parsed.version == 5
    assert parsed.variant == uuid.RFC_4122


def test_new_id_is_a_version_7_uuid_with_the_current_time() -> None:
    before = time.time_ns() // 1_000_000
    made = new_id()
    after = time.time_ns() // 1_000_000
    assert made.version == 7
    assert made.variant == uuid.RFC_4122
    assert before <= int.from_bytes(made.bytes[:6]) <= after


def test_new_ids_are_unique_and_ordered_by_millisecond() -> None:
    ids = [new_id() for _ in range(2_000)]
    assert len(set(ids)) == len(ids)
    stamps = [int.from_bytes(i.bytes[:6]) for i in ids]
    assert stamps == sorted(stamps)
