"""The payment service's ledger: charges and refunds in a SQLite file, keyed by the id of
the command that asked for them, so a redelivered command changes nothing (the "bank"
of the example; a real service would call its payment provider with the command id as
the idempotency key)."""

from __future__ import annotations

import os
import sqlite3
from contextlib import closing
from pathlib import Path

SCHEMA = """
create table if not exists charges (
    command_id text primary key, order_id text not null, amount text not null,
    payment_id text not null
);
create table if not exists refunds (
    command_id text primary key, order_id text not null, payment_id text not null,
    amount text not null, refund_id text not null
);
"""


def path() -> Path:
    """``SHOP_LEDGER``, by default ``.shop/ledger.sqlite`` under the working directory."""
    return Path(os.environ.get("SHOP_LEDGER", ".shop/ledger.sqlite"))


def connect() -> sqlite3.Connection:
    """A connection to the ledger in autocommit mode (created on first use; write-ahead
    log, so that several processes may use it); the caller closes it."""
    file = path()
    file.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(file, timeout=30, isolation_level=None)
    conn.execute("pragma journal_mode=wal")
    conn.executescript(SCHEMA)
    return conn


def charge(command_id: str, order_id: str, amount: str) -> str:
    """Charge once per command: the payment id (the same on a redelivery)."""
    payment_id = f"PAY-{command_id[:8]}"
    with closing(connect()) as conn:
        conn.execute(
            "insert into charges values (?, ?, ?, ?) on conflict (command_id) do nothing",
            (command_id, order_id, amount, payment_id),
        )
    return payment_id


def refund(command_id: str, order_id: str, payment_id: str, amount: str) -> str:
    """Refund once per command: the refund id (the same on a redelivery)."""
    refund_id = f"REF-{command_id[:8]}"
    with closing(connect()) as conn:
        conn.execute(
            "insert into refunds values (?, ?, ?, ?, ?) on conflict (command_id) do nothing",
            (command_id, order_id, payment_id, amount, refund_id),
        )
    return refund_id


def counts(table: str) -> dict[str, int]:
    """Rows per order in ``charges`` or ``refunds``."""
    if table not in ("charges", "refunds"):
        raise ValueError(table)
    with closing(connect()) as conn:
        rows = conn.execute(f"select order_id, count(*) from {table} group by order_id")
        return {str(order_id): int(n) for order_id, n in rows}
