"""The admission journal: a dead process's calls are recovered once, a live one's never, a completed
call never doubled, and a call the journal cannot note is not made."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import openai
import pytest

from outlay import _journal
from outlay._errors import BackendError, BackendUnavailable
from outlay._journal import _unrecorded
from outlay._recording import Recorder
from outlay._usage import Usage
from outlay.budgets import Budget, BudgetEngine
from outlay.gateway import (
    AdmissionJournal,
    Call,
    Gateway,
    GatewayConfig,
    Outcome,
    OutlayHooks,
    load_settings,
)
from outlay.keys import InMemoryKeyStore
from outlay.stream import SQLiteEventLog
from outlay.testing import FakeProvider

from .conftest import Stack, make_stack

MESSAGES = [{"role": "user", "content": "hello"}]


def _stack(gateway: Gateway, fake: FakeProvider, journal: AdmissionJournal) -> Stack:
    fake.reset()
    engine = BudgetEngine(policies=[Budget(Decimal(5), scope="tenant")])
    built = make_stack(gateway.url, engine=engine, journal=journal)  # type: ignore[attr-defined]
    gateway.hooks = built.hooks
    return built


@pytest.fixture
def journaled(gateway: Gateway, fake: FakeProvider, tmp_path: Path) -> Iterator[Stack]:
    built = _stack(gateway, fake, AdmissionJournal(tmp_path / "inflight"))
    yield built
    built.close()


def _spent(stack: Stack) -> tuple[Decimal, Decimal]:
    status = stack.engine.status({"tenant": "acme"}, stack.engine.policies[0])
    return status.spent, status.reserved


def test_a_call_recorded_before_its_process_died_is_not_recorded_twice(
    journaled: Stack, tmp_path: Path
) -> None:
    journal = journaled.hooks.journal
    assert journal is not None
    lines: list[bytes] = []
    real_recorded = journal.recorded
    journal.recorded = lambda event_id: lines.append(event_id.encode())  # type: ignore[method-assign]
    journaled.openai().chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=20)  # type: ignore[arg-type]
    journal.recorded = real_recorded  # type: ignore[method-assign]
    # What a process killed after the event's append, before its "-" line, leaves behind.
    assert journal._path is not None
    (tmp_path / "inflight" / "inflight-any-dead.log").write_bytes(journal._path.read_bytes())
    (tmp_path / "inflight" / "inflight-any-dead.log").chmod(0o600)  # as the gateway makes them
    [event] = journaled.events()
    assert lines == [event.event_id.encode()]  # the journal names the call by its event id
    before = _spent(journaled)

    later = OutlayHooks(
        journaled.keys, outlay=journaled.outlay, engine=journaled.engine,
        journal=AdmissionJournal(tmp_path / "inflight"),
    )  # fmt: skip
    assert later.recover_lost_calls() == 1  # recorded again, under the same event id
    assert journaled.events() == [event]  # the ledger keeps the first: the exact cost, once
    assert _spent(journaled) == before  # a settled hold is not charged again
    assert later.recover_lost_calls() == 0
    assert not (tmp_path / "inflight" / "inflight-any-dead.log").exists()


_WRITER = """
import os, signal, sys, time
from outlay.gateway._journal import AdmissionJournal
journal = AdmissionJournal(sys.argv[1])
journal.admitted("01a24de0-0000-7000-8000-000000000001", {"model": "gpt-4o"})
journal.admitted("01a24de0-0000-7000-8000-000000000002", {"model": "gpt-4o-mini"})
journal.recorded("01a24de0-0000-7000-8000-000000000002")
print("ready", flush=True)
time.sleep(60)
"""


def test_only_a_dead_process_journal_is_recovered(tmp_path: Path) -> None:
    directory = tmp_path / "inflight"
    writer = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(_WRITER), str(directory)], stdout=subprocess.PIPE
    )
    try:
        assert writer.stdout is not None and writer.stdout.readline() == b"ready\n"
        reader = AdmissionJournal(directory)
        assert list(reader.orphans()) == []  # alive: its calls may still complete
        writer.kill()  # SIGKILL
        writer.wait(timeout=10)
        found = [(path.name, [r["id"] for r in records]) for path, records in reader.orphans()]
        assert len(found) == 1
        assert found[0][1] == ["01a24de0-0000-7000-8000-000000000001"]  # the other one was recorded
    finally:
        writer.kill()
        writer.wait(timeout=10)
        assert writer.stdout is not None
        writer.stdout.close()


def test_a_call_the_journal_cannot_note_is_not_made(
    gateway: Gateway, fake: FakeProvider, tmp_path: Path
) -> None:
    (tmp_path / "file").write_text("not a directory")
    stack = _stack(gateway, fake, AdmissionJournal(tmp_path / "file" / "inflight"))
    try:
        with pytest.raises(openai.InternalServerError) as raised:
            stack.openai().chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]
        assert raised.value.status_code == 503
        assert "admission journal" in str(raised.value)
        assert fake.requests == []  # never sent: nothing would have remembered it
        assert _spent(stack) == (Decimal(0), Decimal(0))  # its hold given back
    finally:
        stack.close()


def test_the_journal_stays_small_and_keeps_the_calls_in_flight(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_journal, "_COMPACT_AT", 2000)
    journal = AdmissionJournal(tmp_path)
    ids = [f"01a24de0-0000-7000-8000-{n:012d}" for n in range(200)]
    journal.admitted(ids[0], {"model": "long-call"})
    for event_id in ids[1:]:
        journal.admitted(event_id, {"model": "gpt-4o"})
        journal.recorded(event_id)
    [path] = list(tmp_path.iterdir())
    assert path.stat().st_size < 4000
    assert [r["id"] for r in _unrecorded(path, path.read_bytes())] == [ids[0]]
    journal.recorded(ids[0])
    journal.close()
    assert list(tmp_path.iterdir()) == []  # nothing left to recover: no file


def test_a_torn_line_is_skipped_not_fatal(tmp_path: Path) -> None:
    good = json.dumps({"id": "01a24de0-0000-7000-8000-000000000009", "model": "m"}).encode()
    path = tmp_path / "inflight-any-x.log"
    path.write_bytes(b"+" + good + b'\n+{"id": "01a2')
    path.chmod(0o600)
    assert [r["id"] for _, records in AdmissionJournal(tmp_path).orphans() for r in records] == [
        "01a24de0-0000-7000-8000-000000000009"
    ]


def test_the_journal_is_on_beside_the_keys_unless_turned_off(tmp_path: Path) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text(f'ledger = "{tmp_path / "outlay.db"}"\n')
    assert load_settings(path, {}).journal == str(tmp_path / "inflight")
    assert load_settings(path, {"OUTLAY_GATEWAY_JOURNAL": "off"}).journal is None
    path.write_text('ledger = "memory://"\n')  # nothing to recover into
    assert load_settings(path, {}).journal is None


def test_a_file_left_half_made_by_a_dead_process_is_dropped(tmp_path: Path) -> None:
    stale = tmp_path / ".inflight-any-0.log.new"
    stale.write_bytes(b"")
    os.utime(stale, (time.time() - 120, time.time() - 120))
    assert list(AdmissionJournal(tmp_path).orphans()) == []
    assert not stale.exists()


def test_a_gateway_recovers_only_calls_bound_for_its_own_event_log(tmp_path: Path) -> None:
    # Staging and production gateways on one host, with one journal directory: each records the
    # lost calls of its own kind only, never another's into its ledger.
    production = AdmissionJournal(tmp_path, destination="/srv/prod/events.db")
    production.admitted("01a24de0-0000-7000-8000-000000000007", {"model": "gpt-4o"})
    production.close()  # its call not recorded: the file stays, unlocked, as a dead process's
    staging = AdmissionJournal(tmp_path, destination="/srv/staging/events.db")
    assert list(staging.orphans()) == []
    again = AdmissionJournal(tmp_path, destination="/srv/prod/events.db")
    assert [r["id"] for _, records in again.orphans() for r in records] == [
        "01a24de0-0000-7000-8000-000000000007"
    ]


def test_a_lost_call_journaled_with_labels_outside_todays_bounds_is_still_recorded() -> None:
    # A journal written by a gateway from before labels were bounded: its billed call is recorded.
    from outlay._recording import Recorder
    from outlay.events import new_event_id
    from outlay.gateway._lost import lost_call_event
    from outlay.stream import InMemoryEventLog

    labels = {"ключ": "v", "note": "x" * 5000, **{f"k{i}": "v" for i in range(70)}}
    record = {
        "id": new_event_id(), "at": time.time(), "key": "key-1", "provider": "openai",
        "model": "gpt-4o-mini", "requested": None, "operation": "chat", "estimate": "0.01",
        "priced": True, "holds": [], "ctx": {"tenant": "acme", "environment": "production", "labels": labels},
    }  # fmt: skip
    event = lost_call_event(Recorder(InMemoryEventLog()), record)
    assert {k: v for k, v in event.labels.items() if not k.startswith("gateway.")} == labels
    assert (event.tenant_id, event.cost, event.labels["gateway.key"]) == ("acme", Decimal("0.01"), "key-1")


class _FullDisk:
    """``os`` as :mod:`outlay._journal` sees it, on a disk that has no room for a new
    file's content (a compaction's): what a full disk does, without filling one."""

    def __getattr__(self, name: str) -> object:
        return getattr(os, name)

    @staticmethod
    def write(fd: int, data: bytes) -> int:
        if os.readlink(f"/proc/self/fd/{fd}").endswith(".new"):
            raise OSError(28, "No space left on device")
        return os.write(fd, data)


def test_a_full_disk_does_not_leak_a_file_and_a_descriptor_per_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each completion past the compaction threshold tries to start a new file: on a full disk
    # each attempt left its half-made file open and locked, until the process ran out of
    # descriptors (every call, upstream connections included, then failing) and the disk filled.
    monkeypatch.setattr(_journal, "_COMPACT_AT", 2000)
    journal = AdmissionJournal(tmp_path)
    ids = [f"01a24de0-0000-7000-8000-{n:012d}" for n in range(200)]
    for event_id in ids[:20]:
        journal.admitted(event_id, {"model": "gpt-4o", "pad": "x" * 100})
    monkeypatch.setattr(_journal, "os", _FullDisk())
    descriptors = len(os.listdir("/proc/self/fd"))
    for event_id in ids[:10]:
        journal.recorded(event_id)
    assert len(os.listdir("/proc/self/fd")) == descriptors
    assert [p.name.startswith("inflight-") for p in tmp_path.iterdir()] == [True]  # no .new left
    monkeypatch.setattr(_journal, "os", os)  # room again
    # The journal still knows the calls in flight, and compacts again once there is room.
    for event_id in ids[20:]:
        journal.admitted(event_id, {"model": "gpt-4o"})
        journal.recorded(event_id)
    [path] = list(tmp_path.iterdir())
    assert [r["id"] for r in _unrecorded(path, path.read_bytes())] == ids[10:20]
    assert path.stat().st_size < 6000


class _AlmostFullDisk:
    """``os`` for the journal on a disk with room for ``room`` more bytes, then none."""

    def __init__(self, room: int) -> None:
        self.room = room

    def __getattr__(self, name: str) -> object:
        return getattr(os, name)

    def write(self, fd: int, data: bytes) -> int:
        if self.room <= 0:
            raise OSError(28, "No space left on device")
        written = os.write(fd, data[: self.room])  # a short write: what fits
        self.room -= written
        return written


def test_a_line_cut_short_by_a_full_disk_refuses_its_call_and_spoils_no_other(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # On a full disk write(2) takes what fits. The cut line was taken for noted (its call sent),
    # and the next line, once there was room again, was appended to it: neither call readable.
    journal = AdmissionJournal(tmp_path)
    ids = [f"01a24de0-0000-7000-8000-{n:012d}" for n in range(4)]
    journal.admitted(ids[0], {"model": "gpt-4o"})
    full = _AlmostFullDisk(room=30)
    monkeypatch.setattr(_journal, "os", full)
    monkeypatch.setattr(_journal, "_write", full.write)  # (lines are written by append_held)
    with pytest.raises(BackendError, match="admission journal"):  # the call is refused (503)
        journal.admitted(ids[1], {"model": "gpt-4o"})
    with pytest.raises(BackendError):
        journal.admitted(ids[2], {"model": "gpt-4o"})
    monkeypatch.setattr(_journal, "os", os)  # room again
    monkeypatch.setattr(_journal, "_write", os.write)
    journal.admitted(ids[3], {"model": "gpt-4o"})
    assert journal._path is not None
    assert [r["id"] for r in _unrecorded(journal._path, journal._path.read_bytes())] == [ids[0], ids[3]]


def _plant(path: Path) -> None:
    """A journal file that says tenant ``acme`` spent 900 USD, as anyone could write one."""
    line = {"id": "01a24de0-0000-7000-8000-000000000666", "ctx": {"tenant": "acme"}, "estimate": "900"}
    path.write_bytes(b"+" + json.dumps(line).encode() + b"\n")


def test_a_journal_file_another_user_could_have_written_is_not_recovered(tmp_path: Path) -> None:
    # What a file says is recorded as a tenant's spend and charged to its budget: one in a
    # directory others may write to (group-writable by umask 002, or /tmp) is not the gateway's.
    planted = tmp_path / "inflight-any-planted.log"
    _plant(planted)
    planted.chmod(0o666)
    assert list(AdmissionJournal(tmp_path).orphans()) == []
    assert planted.exists()  # left for the operator to look at
    (tmp_path / "elsewhere.log").write_bytes(planted.read_bytes())
    planted.unlink()
    (tmp_path / "inflight-any-linked.log").symlink_to(tmp_path / "elsewhere.log")
    assert list(AdmissionJournal(tmp_path).orphans()) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a file to another user")
def test_a_journal_file_of_another_user_is_not_recovered(tmp_path: Path) -> None:
    planted = tmp_path / "inflight-any-planted.log"
    _plant(planted)
    planted.chmod(0o600)
    os.chown(planted, 65534, 65534)
    assert list(AdmissionJournal(tmp_path).orphans()) == []


def test_the_journal_directory_is_the_gateway_user_s_alone(tmp_path: Path) -> None:
    journal = AdmissionJournal(tmp_path / "inflight")
    journal.admitted("01a24de0-0000-7000-8000-000000000001", {"model": "gpt-4o"})
    assert (tmp_path / "inflight").stat().st_mode & 0o777 == 0o700
    assert journal._path is not None and journal._path.stat().st_mode & 0o777 == 0o600


_BATCHING_GATEWAY = """
import asyncio, json, sys, time
from outlay._recording import Recorder
from outlay._usage import Usage
from outlay.gateway import AdmissionJournal, Call, GatewayConfig, Outcome, OutlayHooks
from outlay.keys import InMemoryKeyStore
from outlay.stream import SQLiteEventLog

async def main():
    recorder = Recorder(SQLiteEventLog(sys.argv[1] + "/events.db"), mode="batching", max_delay=60)
    keys = InMemoryKeyStore()
    _, secret = keys.create("acme")
    hooks = OutlayHooks(keys, recorder=recorder, journal=AdmissionJournal(sys.argv[1] + "/inflight"))
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 16}
    headers = {"authorization": f"Bearer {secret}"}
    upstream = GatewayConfig.from_env({"OPENAI_API_KEY": "x"}).upstreams["openai"]
    principal = await hooks.authenticate(headers)
    raw = json.dumps(body).encode()
    call = Call("chat", "gpt-4o-mini", "gpt-4o-mini", upstream, False, body, headers, raw=raw)
    admission = await hooks.admit(principal, call)
    usage = Usage(input_tokens=30, output_tokens=16)
    await hooks.complete(admission, Outcome(200, usage, latency_s=0.01, model="gpt-4o-mini"))
    print(admission.reservation.event_id, flush=True)  # answered: the provider billed it
    time.sleep(60)

asyncio.run(main())
"""


def test_a_call_a_batching_recorder_had_only_buffered_is_recovered_after_a_kill(tmp_path: Path) -> None:
    # A batching recorder returns once the event is buffered. The journal was told the call was
    # recorded then, so a kill before the buffer reached the log lost a call the provider billed.
    child = subprocess.Popen([sys.executable, "-c", _BATCHING_GATEWAY, str(tmp_path)], stdout=subprocess.PIPE)
    try:
        assert child.stdout is not None
        event_id = child.stdout.readline().decode().strip()
        assert event_id
    finally:
        child.kill()  # SIGKILL: the buffer dies with it
        child.wait(timeout=10)
        assert child.stdout is not None
        child.stdout.close()
    log = SQLiteEventLog(tmp_path / "events.db")
    try:
        assert log.end_offset() == 0  # the event died in the buffer
        keys = InMemoryKeyStore()
        later = OutlayHooks(keys, recorder=Recorder(log), journal=AdmissionJournal(tmp_path / "inflight"))
        assert later.recover_lost_calls() == 1
        [record] = log.read("test", timeout=1)
        assert json.loads(record.payload)["id"] == event_id
    finally:
        log.close()


class _BatchingGateway:
    """OutlayHooks over a batching recorder (a minute between commits unless flushed) and a
    journal in ``directory``; ``answer()`` admits and completes one call the provider answered."""

    def __init__(self, directory: Path) -> None:
        self.recorder = Recorder(SQLiteEventLog(directory / "events.db"), mode="batching", max_delay=60)
        keys = InMemoryKeyStore()
        _, secret = keys.create("acme")
        self.journal = AdmissionJournal(directory / "inflight")
        self.hooks = OutlayHooks(keys, recorder=self.recorder, journal=self.journal)
        self.headers = {"authorization": f"Bearer {secret}"}
        body = {"model": "gpt-4o-mini", "messages": MESSAGES, "max_tokens": 16}
        upstream = GatewayConfig.from_env({"OPENAI_API_KEY": "x"}).upstreams["openai"]
        self.call = Call("chat", "gpt-4o-mini", "gpt-4o-mini", upstream, False, body, self.headers, raw=b"{}")

    async def answer(self) -> None:
        principal = await self.hooks.authenticate(self.headers)
        done = Outcome(200, Usage(input_tokens=5, output_tokens=16), latency_s=0.0, model="gpt-4o-mini")
        await self.hooks.complete(await self.hooks.admit(principal, self.call), done)

    def open_calls(self) -> int:
        assert self.journal._path is not None
        return len(_unrecorded(self.journal._path, self.journal._path.read_bytes()))


async def test_a_batching_recorder_s_calls_are_durable_before_the_journal_forgets_them(
    tmp_path: Path,
) -> None:
    gateway = _BatchingGateway(tmp_path)
    for _ in range(3):
        await gateway.answer()
    assert gateway.open_calls() == 3  # buffered only
    gateway.recorder.flush()
    await gateway.answer()
    assert gateway.open_calls() == 1  # the three are durable
    await gateway.hooks.aclose()  # flushes the last one: nothing left to recover, no file
    assert list((tmp_path / "inflight").iterdir()) == []
    gateway.recorder.close()


async def test_a_batching_recorder_s_calls_are_noted_done_as_their_buffer_reaches_the_log(
    tmp_path: Path,
) -> None:
    # Told only at the next completion, a gateway that went idle after a burst and was then killed
    # left its answered calls open in the journal: the next start re-recorded each as "lost" (an
    # estimated duplicate in the log, a false warning). The buffer reaching the log now says so.
    gateway = _BatchingGateway(tmp_path)
    for _ in range(3):
        await gateway.answer()
    assert gateway.open_calls() == 3  # buffered only
    gateway.recorder.flush()  # no call after it
    deadline = time.monotonic() + 5
    while gateway.open_calls() and time.monotonic() < deadline:
        time.sleep(0.01)  # (noted on the recorder's thread, just after the commit)
    assert gateway.open_calls() == 0
    await gateway.hooks.aclose()
    gateway.recorder.close()


def test_a_call_whose_event_the_log_refused_is_recorded_at_its_exact_cost_by_the_next_start(
    journaled: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The call was answered by the provider with its usage, and its hold settled at that exact
    # cost; only the append failed (503). The next start recorded it at the reserved worst case:
    # the tenant's ledger (its invoice) said 4,000 output tokens where it used 16.
    recorder = journaled.hooks.recorder

    def refuse(events: object) -> None:
        raise BackendUnavailable("event log disk is full (test)")

    monkeypatch.setattr(recorder, "record_many", refuse)
    with pytest.raises(openai.APIStatusError) as raised:
        journaled.openai().chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=4000)  # type: ignore[arg-type]
    assert raised.value.status_code == 503
    monkeypatch.undo()
    spent, reserved = _spent(journaled)
    assert spent > 0 and reserved == 0  # settled at the exact cost the provider reported
    assert journaled.events() == []
    assert journaled.hooks.journal is not None
    journaled.hooks.journal.close()  # the process ends; its file stays, with the call

    later = OutlayHooks(
        journaled.keys, outlay=journaled.outlay, engine=journaled.engine,
        journal=AdmissionJournal(tmp_path / "inflight"),
    )  # fmt: skip
    assert later.recover_lost_calls() == 1
    [event] = journaled.events()
    assert event.usage.output_tokens == 16 and event.status == "ok"  # what the provider reported
    assert event.cost == spent  # the ledger says what the budget was charged
    assert _spent(journaled) == (spent, Decimal(0))
    assert list((tmp_path / "inflight").iterdir()) == []


@pytest.mark.parametrize("reported", ["m" * 500, "gpt-4o-mini\n2024", "gpt\x00x"])
async def test_a_model_name_no_event_can_hold_does_not_lose_the_billed_call(
    tmp_path: Path, reported: str
) -> None:
    # The provider answered (and billed) but named its model in a way no event can hold: the event
    # failed to build, the call was dropped from the journal and its hold released: never recorded.
    log = SQLiteEventLog(tmp_path / "events.db")
    keys = InMemoryKeyStore()
    _, secret = keys.create("acme")
    journal = AdmissionJournal(tmp_path / "inflight")
    hooks = OutlayHooks(keys, recorder=Recorder(log), journal=journal)
    body = {"model": "gpt-4o-mini", "messages": MESSAGES, "max_tokens": 16}
    headers = {"authorization": f"Bearer {secret}"}
    upstream = GatewayConfig.from_env({"OPENAI_API_KEY": "x"}).upstreams["openai"]
    principal = await hooks.authenticate(headers)
    call = Call("chat", "gpt-4o-mini", "gpt-4o-mini", upstream, False, body, headers, raw=b"{}")
    admission = await hooks.admit(principal, call)
    settled = await hooks.complete(
        admission, Outcome(200, Usage(input_tokens=5, output_tokens=16), latency_s=0.0, model=reported)
    )
    [record] = log.read("test", timeout=1)
    event = json.loads(record.payload)["data"]
    assert (event["model"], event["tenant_id"], event["priced"]) == ("gpt-4o-mini", "acme", True)
    assert event["labels"]["gateway.reported_model"] == ascii(reported)[:200]
    assert settled.cost is not None and settled.cost > 0
    await hooks.aclose()
    log.close()
