"""Virtual keys: stores (in memory and SQLite), hashing, budgets, and the ``outlay keys`` commands."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from click.testing import CliRunner

from outlay._errors import InvalidInput
from outlay.cli._gateway import keys
from outlay.keys import (
    InMemoryKeyStore,
    KeyStore,
    SQLiteKeyStore,
    default_keys_url,
    hash_secret,
    open_key_store,
    parse_budget,
)


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[KeyStore]:
    built: KeyStore = (
        InMemoryKeyStore() if request.param == "memory" else SQLiteKeyStore(tmp_path / "keys.db")
    )
    yield built
    built.close()


def test_create_then_lookup_by_secret(store: KeyStore) -> None:
    key, secret = store.create("acme", workspace="ws1", feature="chat", name="prod", budget="25.00/month")
    assert secret.startswith("olk_") and len(secret) >= 4 + 43  # 32 random bytes, URL-safe base64
    assert key.prefix == secret[: len(key.prefix)] and len(key.prefix) < len(secret) // 2
    found = store.lookup(secret)
    assert found == key
    assert (found.tenant, found.workspace, found.feature, found.name) == ("acme", "ws1", "chat", "prod")
    assert (found.budget, found.period) == (Decimal("25.00"), "month")
    assert store.lookup(secret + "x") is None
    assert store.lookup("") is None


def test_a_keys_budget_limits_its_tenant_and_its_feature_per_tenant(store: KeyStore) -> None:
    key, _ = store.create("acme", feature="chat", budget="5/day")
    tenant, feature = key.policies
    assert (tenant.scope, tenant.key, tenant.limit, tenant.period) == ("tenant", "acme", Decimal(5), "day")
    assert (feature.scope, feature.key) == ("feature", "acme/chat")
    assert store.create("acme")[0].policies == ()
    # tenant x, feature y/chat and tenant x/y, feature chat: two counters, not one
    one, _ = store.create("x", feature="y/chat", budget="1/day")
    two, _ = store.create("x/y", feature="chat", budget="1/day")
    assert one.feature_key == "x/y%2Fchat" and two.feature_key == "x%2Fy/chat"


def test_revoke_is_permanent_idempotent_and_named(store: KeyStore) -> None:
    key, secret = store.create("acme")
    other, other_secret = store.create("globex")
    revoked = store.revoke(key.id)
    assert revoked.revoked
    assert store.revoke(key.id).revoked_at == revoked.revoked_at
    found = store.lookup(secret)
    assert found is not None and found.revoked
    assert not store.lookup(other_secret).revoked  # type: ignore[union-attr]
    with pytest.raises(InvalidInput) as caught:
        store.revoke("key_nope")
    assert caught.value.field == "key_id"
    assert [k.id for k in store.list_keys(tenant="globex")] == [other.id]
    assert {k.id for k in store.list_keys()} == {key.id, other.id}


@pytest.mark.parametrize(
    ("budget", "field"),
    [
        ("abc", "budget"),
        ("-1/month", "budget"),
        ("0", "budget"),
        ("5/fortnight", "period"),
        ("1e3", "budget"),
    ],
)
def test_bad_budget_is_refused_naming_the_field(store: KeyStore, budget: str, field: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        store.create("acme", budget=budget)
    assert caught.value.field == field
    assert store.list_keys() == []


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("tenant", ""),
        ("tenant", "x" * 201),
        ("feature", " "),
        ("tenant", "evil\nkey_fake\tolk_FAKE"),  # would forge a row in `outlay keys list`
        ("workspace", "a\x00b"),
    ],
)
def test_bad_names_are_refused(store: KeyStore, name: str, value: str) -> None:
    kwargs = {"tenant": "acme", name: value}
    with pytest.raises(InvalidInput) as caught:
        store.create(**kwargs)  # type: ignore[arg-type]
    assert caught.value.field == name


def test_budget_text() -> None:
    assert parse_budget("25.00/month") == (Decimal("25.00"), "month")
    assert parse_budget("3") == (Decimal(3), "month")
    assert parse_budget("0.5/rolling:1h") == (Decimal("0.5"), "rolling:1h")


def test_sqlite_stores_only_the_hash_and_is_shared_between_threads(tmp_path: Path) -> None:
    path = tmp_path / "keys.db"
    store = SQLiteKeyStore(path)
    secrets: list[str] = []
    lock = threading.Lock()

    def create() -> None:
        for _ in range(10):
            _, secret = store.create("acme")
            with lock:
                secrets.append(secret)

    threads = [threading.Thread(target=create) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    store.close()
    reopened = SQLiteKeyStore(path)
    assert len(reopened.list_keys()) == 80
    assert all(reopened.lookup(s) is not None for s in secrets)
    reopened.close()
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    assert not any(s.encode() in raw for s in secrets)  # never the secret, at rest
    assert hash_secret(secrets[0]).encode() in raw


def test_default_location_is_beside_the_ledger(tmp_path: Path) -> None:
    assert default_keys_url({"OUTLAY_KEYS_URL": "memory://"}) == "memory://"
    assert default_keys_url({"OUTLAY_URL": str(tmp_path / "outlay.db")}) == str(tmp_path / "keys.db")
    assert default_keys_url({"OUTLAY_URL": "postgresql://db/x"}) == str(Path(".outlay") / "keys.db")
    assert isinstance(open_key_store("memory://"), InMemoryKeyStore)
    with pytest.raises(InvalidInput):
        open_key_store("redis://localhost")


# -- the CLI --------------------------------------------------------------------------------------


def test_cli_create_list_revoke(tmp_path: Path) -> None:
    url = f"sqlite:{tmp_path / 'keys.db'}"
    runner = CliRunner()
    created = runner.invoke(keys, ["create", "--tenant", "acme", "--budget", "25.00/month", "--keys", url])
    assert created.exit_code == 0, created.output
    secret = created.stdout.strip()
    assert secret.startswith("olk_") and "\n" not in secret
    store = open_key_store(url)
    key = store.lookup(secret)
    assert key is not None and key.budget == Decimal("25.00")
    listed = runner.invoke(keys, ["list", "--keys", url])
    assert key.id in listed.stdout and key.prefix in listed.stdout
    assert secret not in listed.stdout
    as_json = json.loads(runner.invoke(keys, ["list", "--format", "json", "--keys", url]).stdout)
    assert as_json[0]["budget"] == "25.00/month" and as_json[0]["revoked_at"] is None
    revoked = runner.invoke(keys, ["revoke", key.id, "--keys", url])
    assert revoked.exit_code == 0 and key.id in revoked.stdout
    assert store.lookup(secret).revoked  # type: ignore[union-attr]
    store.close()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        # a mistyped store path is said so, never read as an empty store (nor created)
        (["revoke", "key_missing"], "no key store"),
        (["list"], "no key store"),
        (["create", "--tenant", "acme", "--budget", "lots"], "budget"),
        (["create"], "--tenant"),
    ],
)
def test_cli_errors_are_clear_and_not_tracebacks(tmp_path: Path, args: list[str], needle: str) -> None:
    result = CliRunner().invoke(keys, [*args, "--keys", str(tmp_path / "typo" / "keys.db")])
    assert result.exit_code == 2
    assert needle in result.output
    assert "Traceback" not in result.output
    if args[0] != "create":  # only create makes a store
        assert not (tmp_path / "typo").exists()


def test_cli_revoke_of_an_unknown_key_names_it(tmp_path: Path) -> None:
    url = str(tmp_path / "keys.db")
    runner = CliRunner()
    assert runner.invoke(keys, ["create", "--tenant", "acme", "--keys", url]).exit_code == 0
    result = runner.invoke(keys, ["revoke", "key_missing", "--keys", url])
    assert result.exit_code == 2 and "key_id" in result.output


def test_default_location_follows_a_home_not_created_yet(tmp_path: Path) -> None:
    # A home named before it exists (README: ".outlay", "data/prod") is the directory the ledger will
    # be created in: keys created first must be found there once the gateway has created the ledger,
    # or every key is unknown (401) after a restart.
    home = tmp_path / "data" / "prod"
    before = default_keys_url({"OUTLAY_URL": str(home)})
    home.mkdir(parents=True)
    assert before == default_keys_url({"OUTLAY_URL": str(home)}) == str(home / "keys.db")
    assert default_keys_url({"OUTLAY_URL": str(tmp_path / "prod.db")}) == str(tmp_path / "keys.db")


@pytest.mark.parametrize("args", [["create", "--tenant", "acme"], ["list"], ["revoke", "k_x"]])
def test_the_keys_cli_refuses_an_in_memory_store(args: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """A key created in memory:// printed a secret (and "store it now") for a key gone as the command
    ended, which no gateway could ever accept."""
    result = CliRunner().invoke(keys, [*args, "--keys", "memory://"])
    assert result.exit_code == 2 and "lasts only as long as this command" in result.output
    assert "olk_" not in result.output
    monkeypatch.setenv("OUTLAY_KEYS_URL", "memory://")  # the same when the environment names it
    assert CliRunner().invoke(keys, args).exit_code == 2
