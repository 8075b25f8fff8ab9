"""Deterministic ids: the same inputs give the same id, so a retried step writes the same
rows and messages.

:func:`name_id` equals ``str(uuid.uuid5(namespace, name))`` (RFC 9562 version 5) but skips
building ``UUID`` objects, which matters when a batch derives thousands of ids.
"""

from __future__ import annotations

import hashlib
import uuid


def name_id(namespace: uuid.UUID, name: str) -> str:
    """The version-5 UUID of ``name`` in ``namespace``, as its canonical string."""
    digest = bytearray(hashlib.sha1(namespace.bytes + name.encode()).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
