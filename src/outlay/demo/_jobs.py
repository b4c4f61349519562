"""Background work: a scheduled job whose tenant crosses a queue, and jobs nobody attributed.

The weekly digest is produced by a scheduler and executed by a worker thread, the way a Celery/RQ/SQS
consumer would: the scheduler ``outlay.inject``-s its cost context into the message headers, the
worker restores it with ``outlay.extract``, so the worker's spend is the tenant's and its run hangs
under the scheduler's run in the tree. The nightly evaluations and the weekly re-index run with no
tenant at all: outlay records them as unattributed, by origin, instead of dropping them.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from random import Random
from typing import Any

import outlay

from ._platform import DAYS, START, Calls, Clock, Platform
from ._tenants import Tenant

__all__ = ["Message", "nightly_evals", "weekly_digests", "weekly_reindex"]

WEEKS = DAYS // 7


@dataclass(frozen=True, slots=True)
class Message:
    """A queue message: headers (where the cost context travels) and a JSON-able body."""

    headers: dict[str, str]
    body: dict[str, Any] = field(default_factory=dict)


def _write_digest(platform: Platform, message: Message) -> None:
    rng = Random(message.body["seed"])  # the worker's sizes do not depend on thread timing
    calls = Calls(platform, rng, Clock(datetime.fromisoformat(message.body["at"]), rng))
    with outlay.extract(message.headers), outlay.run("digest-writer", kind="job"):
        calls.retrieve(rng.randint(10, 40))
        texts = rng.randint(20, 60)
        calls.embed(texts, texts * rng.randint(400, 900))
        calls.llm("gemini-2.5-flash", prompt=rng.randint(30_000, 80_000), output=rng.randint(1_000, 3_000))
        calls.llm("gpt-4o-mini", prompt=rng.randint(3_000, 6_000), output=rng.randint(300, 800))


def _worker(platform: Platform, jobs: queue.Queue[Message | None], errors: list[BaseException],
            done: Callable[[], None]) -> None:  # fmt: skip
    # A fresh thread starts with an empty cost context: only the headers say whom the work is for.
    while (message := jobs.get()) is not None:
        try:
            _write_digest(platform, message)
        except BaseException as exc:  # re-raised in the scheduler's thread
            errors.append(exc)
        done()


def weekly_digests(
    platform: Platform, tenants: Sequence[Tenant], rng: Random, done: Callable[[], None]
) -> int:
    """Schedule a digest per paying tenant per week, executed by a worker thread. Returns the count."""
    jobs: queue.Queue[Message | None] = queue.Queue()
    errors: list[BaseException] = []
    worker = threading.Thread(
        target=_worker, args=(platform, jobs, errors, done), name="outlay-demo-digests", daemon=True
    )
    worker.start()
    scheduled = 0
    try:
        for week in range(WEEKS):
            for tenant in tenants:
                if tenant.plan == "free":
                    continue
                clock = Clock(START + timedelta(days=7 * week, hours=2), rng)
                calls = Calls(platform, rng, clock)
                with (
                    outlay.attribute(tenant=tenant.name, feature="weekly-digest", plan=tenant.plan),
                    outlay.run("digest-scheduler", kind="job") as scheduler,
                ):
                    platform.root_runs.append(scheduler.id)
                    calls.llm("gpt-4o-mini", prompt=rng.randint(1_000, 3_000), output=rng.randint(100, 300))
                    headers = {"content-type": "application/json"}
                    outlay.inject(headers)  # tenant, feature and run ids ride in a `baggage` header
                    body = {"week": week, "seed": rng.getrandbits(64), "at": clock.tick().isoformat()}
                    jobs.put(Message(headers=headers, body=body))
                scheduled += 1
    finally:
        jobs.put(None)
        worker.join()
    if errors:
        raise errors[0]
    return scheduled


def nightly_evals(platform: Platform, rng: Random, done: Callable[[], None]) -> None:
    """The ML team's nightly evaluation suite: real spend, started by cron, charged to no tenant."""
    for day in range(DAYS):
        calls = Calls(platform, rng, Clock.on_day(day, rng, hour=1))
        with outlay.attribute(workflow_id="nightly-evals"), outlay.run("eval-suite", kind="job") as suite:
            platform.root_runs.append(suite.id)
            for _ in range(rng.randint(3, 6)):
                calls.llm("o3", prompt=rng.randint(4_000, 12_000), output=rng.randint(1_000, 3_000))
                calls.llm("gpt-4o-mini", prompt=rng.randint(2_000, 4_000), output=rng.randint(50, 200))
        done()


def weekly_reindex(platform: Platform, rng: Random, done: Callable[[], None]) -> None:
    """Re-embedding and re-summarising the shared corpus on the self-hosted node, with no tenant."""
    for week in range(WEEKS):
        calls = Calls(platform, rng, Clock(START + timedelta(days=7 * week + 6, hours=23), rng))
        with outlay.run("reindex-embeddings", kind="job") as job:
            platform.root_runs.append(job.id)
            for _ in range(rng.randint(8, 12)):
                texts = rng.randint(500, 2_000)
                calls.embed(texts, texts * rng.randint(300, 600))
            calls.batch_gpu(rng.randint(1_500, 3_000))
        done()
