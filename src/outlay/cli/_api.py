"""``outlay api``: serve the reporting API (and its docs) with uvicorn."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import click

from outlay._errors import BackendError, InvalidInput, OutlayError

if TYPE_CHECKING:
    from outlay import Outlay

__all__ = ["api"]


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=8790, show_default=True, type=click.IntRange(1, 65535), help="TCP port.")
@click.option(
    "--tokens",
    "tokens_file",
    metavar="FILE",
    help="Tokens file (TOML or JSON, tokens stored as SHA-256); default $OUTLAY_API_TOKENS.",
)
@click.option(
    "--url", metavar="URL", help="outlay home (ledger) URL; default $OUTLAY_URL or .outlay/outlay.db"
)
@click.option(
    "--budgets",
    "budgets_file",
    metavar="FILE",
    envvar="OUTLAY_BUDGETS_FILE",
    help="[[budget]] policies file (the gateway's) for /api/v1/budgets/status; default "
    "$OUTLAY_BUDGETS_FILE. Counters are read from $OUTLAY_BUDGET_URL, else budgets.db beside the keys.",
)
@click.option(
    "--keys",
    "keys_url",
    metavar="URL",
    help="The gateway's key store, for key budgets; default $OUTLAY_KEYS_URL, else keys.db beside "
    "the ledger if it exists.",
)
@click.option(
    "--hash-token", "to_hash", metavar="TOKEN", help="Print the sha256 to store for TOKEN and exit."
)
@click.option(
    "--new-token", "make_token", is_flag=True, help="Print a fresh random token and its hash, and exit."
)
def api(
    *,
    host: str,
    port: int,
    tokens_file: str | None,
    url: str | None,
    budgets_file: str | None,
    keys_url: str | None,
    to_hash: str | None,
    make_token: bool,
) -> None:
    """Serve the reporting API under /api/v1 (OpenAPI at /openapi.json, docs at /docs)."""
    from outlay.api import create_app, hash_token, load_tokens, new_token

    if to_hash is not None:
        click.echo(hash_token(to_hash))
        return
    if make_token:
        token = new_token()
        click.echo(f"token  = {token}\nsha256 = {hash_token(token)}")
        return
    try:
        import uvicorn
    except ModuleNotFoundError:  # pragma: no cover - depends on the install
        raise click.ClickException("serving the API needs uvicorn: pip install 'outlay[api]'") from None
    from outlay import Outlay

    try:
        tokens = load_tokens(tokens_file)
        outlay = Outlay(url)
    except InvalidInput as exc:
        raise click.UsageError(str(exc)) from None
    except OutlayError as exc:
        raise click.ClickException(str(exc)) from None
    try:
        _open_ledger_now(outlay)
    except OutlayError as exc:
        outlay.close(catch_up=False)
        raise click.ClickException(str(exc)) from None
    keys, store = _gateway_budgets(url, keys_url, budgets_file)
    try:
        app = create_app(outlay, tokens=tokens, budgets=budgets_file, budget_store=store, keys=keys)
    except (InvalidInput, BackendError) as exc:
        outlay.close()
        raise click.ClickException(str(exc)) from None
    try:
        uvicorn.run(app, host=host, port=port, log_level="info")
    finally:
        outlay.close()


def _open_ledger_now(outlay: Outlay) -> None:
    """Open the ledger before serving: a wrong URL, an unreachable server or wrong credentials are
    an error at start, not a 503 on every request. On a shared stream the workers write (and
    create) the ledger and the API only reads it, so a schema or file holding no ledger (a typo in
    ``?schema=``) is refused rather than created empty and reported as "no spend"."""
    from outlay.ledger import open_ledger

    if not outlay.embedded:
        open_ledger(outlay.ledger_url, create=False).close()
    outlay.ledger  # noqa: B018  # opened now, for the reason above


def _gateway_budgets(
    url: str | None, keys_url: str | None, budgets_file: str | None
) -> tuple[str | None, str | None]:
    """``(keys, budget store)`` as the gateway finds them: the key store from --keys or
    ``$OUTLAY_KEYS_URL``, else keys.db beside the ledger if it exists (its key budgets are reported);
    the store from ``$OUTLAY_BUDGET_URL``, else budgets.db beside the key store."""
    from outlay.api._budgets import default_store_url
    from outlay.keys import default_keys_url

    env = dict(os.environ)
    if url:
        env["OUTLAY_URL"] = url
    default = default_keys_url(env)
    keys = keys_url or env.get("OUTLAY_KEYS_URL") or (default if Path(default).is_file() else None)
    if keys is None and budgets_file is None:
        return None, None  # nothing configured: nothing to open
    return keys, env.get("OUTLAY_BUDGET_URL") or default_store_url(keys or default)
