"""The NATS producer's spool on its own (no server needed): a full disk."""

from __future__ import annotations

from pathlib import Path

import pytest

from outlay._errors import BackendError
from outlay.stream._nats_route import Outgoing
from outlay.stream._spool import Spool


def _items(first: int, count: int, size: int = 3000) -> list[Outgoing]:
    subject = "outlay.events.production.acme"
    return [Outgoing(subject, str(i), b"x" * size) for i in range(first, first + count)]


def test_a_full_spool_says_so_and_keeps_what_it_held(tmp_path: Path) -> None:
    # Before: SQLite had already rolled the transaction back, the spool's own ROLLBACK failed and
    # its "cannot rollback - no transaction is active" replaced "database or disk is full".
    spool = Spool(tmp_path / "spool.db")
    try:
        spool.add(_items(0, 2, size=10))
        spool._conn.execute("PRAGMA max_page_count = 4")  # the disk is full from here on
        with pytest.raises(BackendError, match="database or disk is full"):
            spool.add(_items(2, 20))
        assert len(spool) == 2
        spool._conn.execute("PRAGMA max_page_count = 1000000")  # room again
        spool.add(_items(2, 20))
        assert [item.msg_id for _, item in spool.peek(100)] == [str(i) for i in range(22)]
    finally:
        spool.close()
