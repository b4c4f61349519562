"""open_event_log: URLs from configuration to an event log."""

from __future__ import annotations

from pathlib import Path

import pytest

from outlay._errors import ConfigError
from outlay.stream import InMemoryEventLog, SQLiteEventLog, open_event_log


def test_memory_url_gives_a_fresh_memory_log() -> None:
    first, second = open_event_log("memory://"), open_event_log("memory://")
    assert isinstance(first, InMemoryEventLog)
    first.append([b"1"])
    assert second.end_offset() == 0


def test_absolute_sqlite_url(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    with open_event_log(f"sqlite://{path}") as log:
        assert isinstance(log, SQLiteEventLog)
        assert log.path == str(path)
        log.append([b"1"])
    with SQLiteEventLog(path) as log:
        assert log.end_offset() == 1


def test_relative_sqlite_url_is_relative_to_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with open_event_log("sqlite://relative.db") as log:
        log.append([b"1"])
    assert (tmp_path / "relative.db").exists()


@pytest.mark.parametrize("as_path", [False, True])
def test_a_plain_path_is_a_sqlite_log(tmp_path: Path, as_path: bool) -> None:
    path = tmp_path / "plain.db"
    with open_event_log(path if as_path else str(path)) as log:
        assert isinstance(log, SQLiteEventLog)


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("nats://127.0.0.1:4222?bogus=1", r"unknown option 'bogus'.*expected ack_wait"),
        ("nats://127.0.0.1:4222?ack_wait=abc", r"'ack_wait' must be a number, got 'abc'"),
    ],
)
def test_bad_nats_options_are_refused_before_connecting(url: str, says: str) -> None:
    # (nats:// URLs that open a NatsEventLog are tested against the real server in test_stream_nats.py)
    with pytest.raises(ConfigError, match=says) as info:
        open_event_log(url)
    assert info.value.field == "url"


@pytest.mark.parametrize(
    "url", ["", "   ", "kafka://broker:9092", "sqlite://", "sqlite:///:memory:", "memory://x", 42, None]
)
def test_bad_urls_are_config_errors_naming_the_url(url: object) -> None:
    with pytest.raises(ConfigError) as info:
        open_event_log(url)  # type: ignore[arg-type]
    assert info.value.field == "url"
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("url", ["nats:/127.0.0.1:4222", "nats:127.0.0.1:4222", "tls//host:4222"])
def test_a_mistyped_nats_url_is_refused_not_taken_for_a_local_file(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Taken as a path, OUTLAY_STREAM_URL=nats:/host made every recorder append to a local SQLite
    # file named after the URL: nothing reached the stream the workers read, and nothing said so.
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="neither a URL") as info:
        open_event_log(url)
    assert info.value.field == "url"
    assert list(tmp_path.iterdir()) == []


def test_nats_event_log_refuses_url_options_it_would_ignore() -> None:
    # NatsEventLog("nats://h:4222?stream=BILLING") used to connect and use OUTLAY_EVENTS: its
    # events went to another stream than asked, and a reader of BILLING saw nothing.
    pytest.importorskip("nats")
    from outlay.stream import NatsEventLog

    for url in ("nats://127.0.0.1:1?stream=BILLING", "nats://127.0.0.1:1/BILLING"):
        with pytest.raises(ConfigError, match="from_url") as info:
            NatsEventLog(url)
        assert info.value.field == "url"
