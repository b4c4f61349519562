"""A process forked after the pipeline was built (gunicorn --preload, Celery prefork, multiprocessing's
fork) records through its own connections: nothing hangs, nothing is lost, nothing is doubled."""

from __future__ import annotations

import multiprocessing
import os
import threading
from pathlib import Path

import pytest

from outlay import Outlay, attribute

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="fork() is POSIX only")

WINDOW = ("2000-01-01", "2100-01-01")


def _tenants(pipeline: Outlay) -> dict[str | None, int]:
    return {row["tenant"]: row["events"] for row in pipeline.reports().tenants(*WINDOW)}


def _in_child(work: object) -> int:
    """Run ``work`` in a forked child that leaves through os._exit (as multiprocessing does)."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child's coverage is not collected
        code = 1
        try:
            alarm = threading.Timer(20, lambda: os._exit(3))  # a hang fails the test, not the suite
            alarm.daemon = True
            alarm.start()
            work()  # type: ignore[operator]
            code = 0
        finally:
            os._exit(code)
    return os.waitpid(pid, 0)[1]


def test_a_child_forked_while_the_parent_is_committing_records_durably(tmp_path: Path) -> None:
    with Outlay(tmp_path / "outlay.db") as pipeline:
        # Rated once first: a fork while another thread is still importing (the first rating loads
        # the price data) leaves the child that import's lock, whatever outlay does.
        pipeline.record_tool("search", 1)
        stop = threading.Event()

        def busy() -> None:  # the parent commits without pause, so a fork lands mid-commit
            with attribute(tenant="parent"):
                while not stop.is_set():
                    pipeline.record_tool("search", 1)

        thread = threading.Thread(target=busy)
        thread.start()
        try:

            def child() -> None:
                with attribute(tenant="child"):
                    pipeline.record_tool("search", 1)

            statuses = [_in_child(child) for _ in range(5)]
        finally:
            stop.set()
            thread.join()
        assert statuses == [0] * 5  # none hung on the parent's commit
        counts = _tenants(pipeline)
        assert counts["child"] == 5 and counts["parent"] > 1


def test_batching_events_of_a_forked_child_are_drained_and_the_parents_not_doubled(tmp_path: Path) -> None:
    with Outlay(tmp_path / "outlay.db", mode="batching") as pipeline:
        with attribute(tenant="parent"):
            pipeline.record_tool("search", 1)  # still in the parent's buffer at the fork

        def child() -> None:
            with attribute(tenant="child"):
                for _ in range(5):
                    pipeline.record_tool("search", 1)
            pipeline.flush()  # the child's own buffer, through its own connection: no hang

        assert _in_child(child) == 0

        def worker() -> None:
            with attribute(tenant="worker"):
                for _ in range(100):
                    pipeline.record_tool("search", 1)

        # A multiprocessing worker leaves through os._exit too, after its finalizers: drained there.
        process = multiprocessing.get_context("fork").Process(target=worker)
        process.start()
        process.join(30)
        assert process.exitcode == 0
        assert _tenants(pipeline) == {"parent": 1, "child": 5, "worker": 100}
