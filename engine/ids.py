"""Ids. Deterministic ones (the same inputs give the same id, so a retried step writes the
same rows and messages), and time-ordered ones for new rows.

:func:`name_id` equals ``str(uuid.uuid5(namespace, name))`` (RFC 9562 version 5) but skips
building ``UUID`` objects, which matters when a batch derives thousands of ids.
"""

from __future__ import annotations

import hashlib
import os
import time
import uuid


def name_id(namespace: uuid.UUID, name: str) -> str:
    """The version-5 UUID of ``name`` in ``namespace``, as its canonical string."""
    digest = bytearray(hashlib.sha1(namespace.bytes + name.encode()).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def new_id() -> uuid.UUID:
    """A new version-7 UUID (RFC 9562): milliseconds since the epoch, then 74 random bits.

    Ids made close in time sort close together, so inserting new instances appends to the
    primary key's index instead of touching a random page of it for every row.
    """
    millis = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10))  # 80 bits; 74 are used
    value = (
        (millis & 0xFFFF_FFFF_FFFF) << 80
        | 0x7 << 76  # version 7
        | (rand >> 68) << 64  # rand_a: 12 bits
        | 0b10 << 62  # RFC variant
        | (rand & 0x3FFF_FFFF_FFFF_FFFF)  # rand_b: 62 bits
    )
    return uuid.UUID(int=value)
