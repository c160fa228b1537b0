"""Taking SQLite's write lock so that Ctrl-C still works while another process holds it.

    begin_immediate(conn)          # BEGIN IMMEDIATE, waiting in short steps
    is_write_conflict(exc)         # True for SQLITE_BUSY and its variants
"""

from __future__ import annotations

import sqlite3
import time


#: The longest single wait inside SQLite for the write lock: Ctrl-C is acted on between two of them.
LOCK_WAIT_STEP_MS = 100


def begin_immediate(conn: sqlite3.Connection) -> None:
    """``BEGIN IMMEDIATE``, waiting for another process's write as long as the connection's busy timeout,
    but in steps of ``LOCK_WAIT_STEP_MS``.

    SQLite's own wait is C code, during which Python cannot act on a signal: Ctrl-C while waiting for the
    lock would be felt only when the whole timeout (30 s) ran out. Between steps it is acted on at once::

        begin_immediate(catalog.db.conn)   # ... conn.commit()
    """
    total_ms = conn.execute("PRAGMA busy_timeout").fetchone()[0]
    if total_ms <= LOCK_WAIT_STEP_MS:
        conn.execute("BEGIN IMMEDIATE")
        return
    deadline = time.monotonic() + total_ms / 1000
    conn.execute(f"PRAGMA busy_timeout = {LOCK_WAIT_STEP_MS}")
    try:
        while True:
            try:
                conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if not is_write_conflict(exc) or time.monotonic() >= deadline:
                    raise
    finally:
        conn.execute(f"PRAGMA busy_timeout = {total_ms}")


def is_write_conflict(exc: BaseException) -> bool:
    """True for SQLite's "busy" errors: another process holds the write lock, or (an optimistic
    ``transaction(immediate=False)``) wrote after this transaction's snapshot."""
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(exc, sqlite3.OperationalError) and code is not None and code & 0xFF == sqlite3.SQLITE_BUSY
