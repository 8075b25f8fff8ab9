"""Deterministic ids are exactly uuid5, only faster."""

from __future__ import annotations

import uuid

from hypothesis import given
from hypothesis import strategies as st

from engine.ids import name_id

NAMESPACE = uuid.UUID("6f1c2a52-4d0e-5b7e-9a51-3c0f6e1d2b8a")


@given(st.text())
def test_name_id_equals_uuid5(name: str) -> None:
    assert name_id(NAMESPACE, name) == str(uuid.uuid5(NAMESPACE, name))


def test_name_id_is_a_version_5_uuid() -> None:
    parsed = uuid.UUID(name_id(NAMESPACE, "evt-1/0"))
    assert parsed.version == 5
    assert parsed.variant == uuid.RFC_4122
