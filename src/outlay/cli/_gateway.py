"""``outlay gateway`` (serve the LLM gateway) and ``outlay keys create/list/revoke``."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

from outlay._errors import BackendError, InvalidInput

__all__ = ["gateway", "keys"]

_EXTRA = "the gateway needs the 'gateway' extra: pip install 'outlay[gateway]'"


@contextmanager
def _clean_errors() -> Iterator[None]:
    """outlay errors become one clear CLI line, never a traceback."""
    try:
        yield
    except InvalidInput as exc:
        raise click.UsageError(str(exc)) from None
    except BackendError as exc:
        raise click.ClickException(str(exc)) from None


def _keys_option(func: Any) -> Any:
    return click.option(
        "--keys",
        "keys_url",
        metavar="URL",
        help="Key store: a path or sqlite:PATH (default $OUTLAY_KEYS_URL, else beside the ledger).",
    )(func)


def _open_keys(keys_url: str | None, *, create: bool = True) -> Any:
    """The key store the gateway reads: never an in-memory one, which would vanish with this
    command (a key created there would print a secret that no gateway could ever accept)."""
    from outlay.keys import InMemoryKeyStore, open_key_store

    store = open_key_store(keys_url, create=create)
    if isinstance(store, InMemoryKeyStore):
        store.close()
        raise click.UsageError(
            "an in-memory key store (memory://) lasts only as long as this command: give a file with --keys"
        )
    return store


@click.group()
def keys() -> None:
    """Virtual keys: gateway credentials that stand for a tenant and its budget."""


@keys.command("create")
@click.option("--tenant", required=True, help="The tenant every call with this key is billed to.")
@click.option("--workspace", help="Bind the key to a workspace (requests may not claim another).")
@click.option("--feature", help="Bind the key to a feature (requests may not claim another).")
@click.option(
    "--budget",
    metavar="AMOUNT[/PERIOD]",
    help="Hard limit, e.g. 25.00/month (hour, day, month, rolling:<n>[smhd]).",
)
@click.option("--name", help="A label to recognise the key by.")
@_keys_option
def create_key(
    *,
    tenant: str,
    workspace: str | None,
    feature: str | None,
    budget: str | None,
    name: str | None,
    keys_url: str | None,
) -> None:
    """Create a key and print its secret — once: only its hash is stored."""
    with _clean_errors(), _open_keys(keys_url) as store:
        key, secret = store.create(tenant, workspace=workspace, feature=feature, name=name, budget=budget)
    click.echo(secret)
    detail = f"key {key.id} for tenant {key.tenant}"
    if key.budget is not None:
        detail += f", budget {key.budget}/{key.period}"
    click.echo(f"{detail}. Store the secret now: it cannot be shown again.", err=True)


@keys.command("list")
@click.option("--tenant", help="Only this tenant's keys.")
@click.option("--format", "fmt", type=click.Choice(("table", "json")), default="table", show_default=True)
@_keys_option
def list_keys(tenant: str | None, fmt: str, keys_url: str | None) -> None:
    """List keys (never their secrets)."""
    with _clean_errors(), _open_keys(keys_url, create=False) as store:
        rows = [key.to_dict() for key in store.list_keys(tenant=tenant)]
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2))
        return
    columns = ("id", "prefix", "name", "tenant", "workspace", "feature", "budget", "created_at", "revoked_at")
    click.echo("\t".join(columns))
    for row in rows:
        click.echo("\t".join("-" if row[c] is None else str(row[c]) for c in columns))


@keys.command("revoke")
@click.argument("key_id")
@_keys_option
def revoke_key(key_id: str, keys_url: str | None) -> None:
    """Revoke a key: gateways refuse it with 401 (within their key cache TTL, 1 s by default)."""
    with _clean_errors(), _open_keys(keys_url, create=False) as store:
        key = store.revoke(key_id)
    click.echo(f"revoked {key.id} ({key.prefix}...) of tenant {key.tenant}")


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=4000, show_default=True, type=click.IntRange(0, 65535))
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 512))
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="Gateway config file (TOML).")
@click.option("--log-level", default="warning", show_default=True)
def gateway(host: str, port: int, workers: int, config_path: str | None, log_level: str) -> None:
    """Serve the OpenAI- and Anthropic-compatible gateway: keys, budgets and a cost event per call."""
    try:
        import uvicorn

        from outlay.gateway import create_app, load_settings
        from outlay.gateway._server import CONFIG_ENV
    except ImportError as exc:
        raise click.ClickException(f"{_EXTRA} ({exc.name} is missing)") from None
    with _clean_errors():
        settings = load_settings(config_path)  # fail here, once, not in every worker
    if workers > 1 and settings.budget_store in ("memory://", "memory:"):
        raise click.UsageError(
            f"budget_store memory:// keeps budgets in each worker's own memory: with --workers {workers}"
            " every worker would admit calls up to the whole limit. Use a SQLite file or redis:// with"
            " several workers",
            ctx=click.get_current_context(),
        )
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "log_level": log_level,
        "access_log": False,
        "lifespan": "on",
        # On SIGTERM/SIGINT: stop accepting, let in-flight calls (streams too) finish, then the
        # lifespan shutdown closes the pools and flushes the recorder.
        "timeout_graceful_shutdown": 30,
    }
    if workers > 1:
        # Each worker process builds its own app (pools, stores, recorder) from the same config.
        # Built once here first: a store that cannot open fails now, as one line, instead of in
        # every worker (a traceback each, and a parent left serving nothing).
        with _clean_errors():
            asyncio.run(create_app(settings).aclose())
        if config_path:
            os.environ[CONFIG_ENV] = os.path.abspath(config_path)
        uvicorn.run("outlay.gateway:app_from_env", factory=True, workers=workers, **options)
        return
    with _clean_errors():
        app = create_app(settings)
    click.echo(f"outlay gateway on http://{host}:{port} (keys: {settings.keys})", err=True)
    uvicorn.run(app, **options)
