"""Redis budget store: counters and reservations shared by every gateway replica.

Each operation is one Lua script (``_redis_lua.py``), run by ``EVALSHA``: Redis runs scripts one at
a time, so a reserve checks and holds on every key atomically across all replicas. Amounts travel
and are stored as canonical decimal strings and the scripts do exact decimal arithmetic, so money
stays exact; each amount or limit sent may have at most :data:`MAX_INTEGER_DIGITS` integer and
:data:`MAX_FRACTION_DIGITS` fraction digits (anything finer or larger is refused, never rounded).
Reservation deadlines and rolling windows use the Redis server's clock unless a ``clock`` is given.

When Redis cannot be reached, ``on_unavailable`` decides (see docs/redis-budgets.md):
``"deny"`` fails closed (reserve raises :class:`BackendUnavailable`); ``"allow"`` fails open, admitting
at most ``local_cap`` dollars of un-checked spend per process (``_redis_local.py``), reconciled
into Redis when it is back. Settles and releases that cannot reach Redis are queued in either mode.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import re
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final, Literal
from urllib.parse import parse_qs, urlsplit

from outlay._errors import BackendError, BackendUnavailable, ConfigError, InvalidInput
from outlay._money import money_str, to_money

from . import _redis_lua as lua
from ._redis_local import LocalFallback, PendingOp
from ._store import DEFAULT_RETENTION, BudgetStore, KeyLimit, KeyStatus, StoreResult, check_keys

if TYPE_CHECKING:
    import redis

__all__ = ["MAX_FRACTION_DIGITS", "MAX_INTEGER_DIGITS", "RedisBudgetStore"]

_log = logging.getLogger("outlay.budgets")

#: Amounts and limits below 10^15 USD...
MAX_INTEGER_DIGITS: Final = 15
#: ...with at most 40 decimal places (10^-40 USD). 15 + 40 digits stay inside the 60 digits of
#: ``MONEY_CONTEXT``, with room for counters to grow 10^5 times past the largest single amount.
MAX_FRACTION_DIGITS: Final = 40

DEFAULT_PREFIX: Final = "outlay:budgets:"

#: The query options of a budget store URL that outlay reads itself (``open_budget_store``).
_OUTLAY_OPTIONS: Final = ("prefix", "on_unavailable", "local_cap", "timeout", "retry_interval")

#: What redis-py's BlockingConnectionPool raises (a plain ConnectionError) when no connection freed up.
_POOL_EMPTY: Final = "No connection available."

#: Holds this process made and has not finished, remembered so that their cost is still counted if
#: Redis loses them (a restart without persistence, a failover to a replica that had not got them).
_MADE_MAX: Final = 100_000


def _text(amount: Decimal, field: str) -> str:
    """The canonical decimal string the scripts compute with; refuses what they would not hold exactly."""
    text = money_str(amount)
    whole, _, fraction = text.partition(".")
    if len(fraction) > MAX_FRACTION_DIGITS:
        raise InvalidInput(
            f"{text} has {len(fraction)} decimal places; the Redis budget store keeps amounts exact to "
            f"{MAX_FRACTION_DIGITS} places (10^-{MAX_FRACTION_DIGITS}) and will not round",
            field=field,
        )
    if len(whole) > MAX_INTEGER_DIGITS:
        raise InvalidInput(
            f"{text} is too large for the Redis budget store (at most {MAX_INTEGER_DIGITS} integer digits)",
            field=field,
        )
    return text


def _window(window: int | None, field: str) -> int:
    if window is None:
        return 0
    if isinstance(window, bool) or not isinstance(window, int) or window <= 0:
        raise InvalidInput(
            f"a rolling window must be a positive number of seconds, got {window!r}", field=field
        )
    return window


def _until_ms(until: float | None) -> int:
    """A calendar window's end in ms for the scripts (0: none); ``check_keys`` validated it."""
    return 0 if until is None else math.ceil(until * 1000)


def shown_url(url: str) -> str:
    """``url`` as errors and logs print it: a password — in the userinfo (``redis://user:pw@host``)
    or a ``password=`` option, both of which redis-py reads — replaced by ``***``. Messages naming
    the store reach the log and, through the gateway's 503, its callers."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<the configured Redis URL>"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")
        user, colon, _ = userinfo.partition(":")
        netloc = f"{user}:***@{host}" if colon else netloc
    query = re.sub(r"(^|&)(password=)[^&]*", r"\1\2***", parts.query, flags=re.IGNORECASE)
    shown = url.replace(parts.netloc, netloc, 1) if netloc != parts.netloc else url
    return shown.replace(f"?{parts.query}", f"?{query}", 1) if query != parts.query else shown


def _check_options(client: Any, url: str) -> None:
    """Refuse now a URL option redis-py does not know (a misspelt ``on_unavailable``, say): redis-py
    passes it on to every connection it makes, so it raised a bare TypeError on every call instead,
    while the store ran without the setting. Making a connection object opens no socket."""
    pool = client.connection_pool
    try:
        pool.connection_class(**pool.connection_kwargs)
    except TypeError as exc:
        found = re.search(r"argument '([^']+)'", str(exc))
        name = found.group(1) if found else str(exc)
        raise ConfigError(
            f"invalid Redis URL {shown_url(url)!r}: unknown option {name!r} (outlay reads "
            f"{', '.join(_OUTLAY_OPTIONS)} from $OUTLAY_BUDGET_URL; the others go to redis-py)",
            field="url",
        ) from None


def _import_redis() -> Any:
    try:
        import redis
        import redis.backoff
        import redis.retry
    except ModuleNotFoundError:
        raise ConfigError(
            "the Redis budget store needs the redis client; install outlay[redis]", field="url"
        ) from None
    return redis


class RedisBudgetStore(BudgetStore):
    """Budget counters in Redis, shared by every process that uses the same server and ``prefix``.

    ``url`` (``redis://host:6379/0``) or a ready ``client`` (a ``redis.Redis``; outlay then leaves its
    options and its closing to you). ``timeout`` bounds each call in seconds; after a failure Redis is
    not tried again for ``retry_interval`` seconds (calls go straight to the ``on_unavailable`` path).
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        client: redis.Redis | None = None,
        prefix: str = DEFAULT_PREFIX,
        on_unavailable: Literal["deny", "allow"] = "deny",
        local_cap: object = "0",
        clock: Callable[[], float] | None = None,
        retention: float = DEFAULT_RETENTION,
        timeout: float = 1.0,
        retry_interval: float = 1.0,
    ) -> None:
        module = _import_redis()
        if on_unavailable not in ("deny", "allow"):
            raise InvalidInput(f"expected 'deny' or 'allow', got {on_unavailable!r}", field="on_unavailable")
        if not isinstance(prefix, str) or not prefix:
            raise InvalidInput("expected a non-empty string", field="prefix")
        for name, value in (
            ("retention", retention),
            ("timeout", timeout),
            ("retry_interval", retry_interval),
        ):
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
                or value < 0
            ):
                raise InvalidInput(f"expected a non-negative number of seconds, got {value!r}", field=name)
        self._exc = module.exceptions
        if client is None:
            if not isinstance(url, str) or not url:
                raise InvalidInput("pass a redis:// URL or a client", field="url")
            try:
                # No client-side retries: a retried script would run twice on a lost reply; ours carry
                # nonces instead, and one retry (below) is then safe.
                options: dict[str, Any] = {
                    "decode_responses": True,
                    "socket_timeout": timeout,
                    "socket_connect_timeout": timeout,
                    "retry": module.retry.Retry(module.backoff.NoBackoff(), 1),
                }
                if "max_connections" in parse_qs(urlsplit(url).query):
                    # A bounded pool: a caller waits (up to ``timeout``) for a free connection, as
                    # for Redis itself, instead of failing at once as if Redis were down.
                    pool = module.BlockingConnectionPool.from_url(url, timeout=timeout, **options)
                    client = module.Redis(connection_pool=pool)
                    client.auto_close_connection_pool = True
                else:
                    client = module.Redis.from_url(url, **options)
            except ValueError as exc:
                raise ConfigError(f"invalid Redis URL {shown_url(url)!r}: {exc}", field="url") from None
            _check_options(client, url)
            self._owns_client = True
        else:
            self._owns_client = False
        self._client: redis.Redis = client
        self._where = shown_url(url) if url else "the given client"
        self._prefix = prefix
        self._server_time = clock is None
        self.clock = time.time if clock is None else clock
        self._retention_ms = str(round(retention * 1000))
        self._retry_interval = float(retry_interval)
        self._timeout = float(timeout)
        self._down_until = 0.0
        self._outage = False
        cap = to_money(local_cap, field="local_cap")
        if on_unavailable == "allow" and cap == 0:
            raise ConfigError(
                "on_unavailable=allow admits calls while Redis is down up to local_cap dollars per"
                " process; with a cap of 0 it would deny them all: set local_cap (e.g. 5.00) or use deny",
                field="local_cap",
            )
        self._local = LocalFallback(on_unavailable, cap)
        self._retention = float(retention)
        # id -> (keys, amount text, monotonic time until which Redis must still know the id)
        self._made: dict[str, tuple[tuple[KeyLimit, ...], str, float]] = {}
        self._made_lock = threading.Lock()
        self._reserve = client.register_script(lua.RESERVE)
        self._settle = client.register_script(lua.SETTLE)
        self._release = client.register_script(lua.RELEASE)
        self._status = client.register_script(lua.STATUS)

    # --- plumbing -------------------------------------------------------------------------------

    @property
    def on_unavailable(self) -> str:
        return self._local.mode

    @property
    def pending(self) -> int:
        """Settles/releases waiting for Redis to come back (in this process)."""
        return self._local.pending_count()

    @property
    def local_spend(self) -> Decimal:
        """Spend admitted by this process without Redis (held or settled), not yet reconciled."""
        return self._local.used()

    def _now(self) -> str:
        return "" if self._server_time else str(round(self.clock() * 1000))

    def _hold_key(self, reservation_id: str) -> str:
        return f"{self._prefix}h:{reservation_id}"

    def _call(self, script: Any, keys: list[str], args: list[str]) -> Any:
        """Run a script; translate redis errors to outlay's (the chained cause keeps the detail)."""
        try:
            return script(keys=keys, args=args, client=self._client)
        except (self._exc.ConnectionError, self._exc.TimeoutError) as exc:
            if isinstance(exc, self._exc.MaxConnectionsError) or str(exc) == _POOL_EMPTY:
                # Every connection of a bounded pool (``max_connections``) is busy: this process is
                # saturated, Redis is not down; only this call fails, nothing backs off.
                raise BackendUnavailable(
                    f"budget store: no free connection to Redis at {self._where} within {self._timeout:g} s"
                    " (every connection of the pool, max_connections, is in use)"
                ) from exc
            self._mark_down(exc)
            raise BackendUnavailable(f"budget store: Redis at {self._where} is unreachable: {exc}") from exc
        except self._exc.RedisError as exc:
            raise BackendError(f"budget store: Redis failed: {exc}") from exc

    def _mark_down(self, exc: Exception) -> None:
        self._down_until = time.monotonic() + self._retry_interval
        if not self._outage:
            self._outage = True
            _log.warning(
                "outlay: Redis budget store at %s is unreachable (%s); %s",
                self._where,
                exc,
                self._local.describe(),
            )

    def _reachable(self) -> bool:
        """False while backing off after a failure; else apply queued work first (in order)."""
        if time.monotonic() < self._down_until:
            return False
        if not self._local.pending_count():
            return True
        try:
            self.flush()
        except BackendUnavailable:
            return False
        return True

    def _up(self) -> None:
        if self._outage:
            self._outage = False
            _log.warning("outlay: Redis budget store at %s is reachable again", self._where)

    def flush(self) -> int:
        """Apply queued settles/releases to Redis now, oldest first; returns how many still wait.

        Raises :class:`BackendUnavailable` if Redis is still unreachable.
        """
        with self._local.flush_lock:
            while (op := self._local.next_pending()) is not None:
                if op.kind == "settle":
                    raw = self._call(self._settle, *self._settle_args(op))
                    outcome = str(raw[0])
                else:
                    outcome = str(self._call(self._release, *self._release_args(op)))
                self._local.done(op)
                if outcome == "unknown" and not (op.kind == "release" and op.local):
                    _log.error(
                        "outlay: queued %s of unknown reservation %r dropped", op.kind, op.reservation_id
                    )
                elif outcome == "ok" and op.local and op.kind == "settle":
                    _log.info("outlay: reconciled fail-open spend %s of %r", op.actual, op.reservation_id)
            self._up()
            return self._local.pending_count()

    def _settle_args(self, op: PendingOp) -> tuple[list[str], list[str]]:
        keys = (
            json.dumps([[k.key, _window(k.window, "keys"), _until_ms(k.until)] for k in op.keys])
            if op.keys
            else ""
        )
        return (
            [self._prefix + "expiry", self._hold_key(op.reservation_id)],
            [self._prefix, self._now(), op.reservation_id, op.actual, self._retention_ms, op.nonce, keys,
             op.amount, op.issued],
        )  # fmt: skip

    def _release_args(self, op: PendingOp) -> tuple[list[str], list[str]]:
        return (
            [self._prefix + "expiry", self._hold_key(op.reservation_id)],
            [self._prefix, self._now(), op.reservation_id, self._retention_ms, op.nonce, op.issued,
             op.reserve_nonce],
        )  # fmt: skip

    def _statuses(self, names: Sequence[str], flat: Sequence[Any]) -> tuple[KeyStatus, ...]:
        out = tuple(
            KeyStatus(name, Decimal(flat[2 * i]), Decimal(flat[2 * i + 1])) for i, name in enumerate(names)
        )
        self._local.remember(out)
        return out

    # --- the seam -------------------------------------------------------------------------------

    def reserve(
        self, reservation_id: str, keys: Sequence[KeyLimit], amount: Decimal, ttl: float
    ) -> StoreResult:
        check_keys(keys, amount)
        if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not math.isfinite(ttl) or ttl < 0:
            raise InvalidInput(f"expected a non-negative number of seconds, got {ttl!r}", field="ttl")
        requests = []
        for kl in keys:
            limit = "" if kl.limit is None else _text(kl.limit, "keys")
            if kl.limit is not None and kl.limit < 0:
                raise InvalidInput(f"limit of {kl.key!r} is negative", field="keys")
            requests.append([kl.key, limit, _window(kl.window, "keys"), _until_ms(kl.until)])
        amount_text = _text(amount, "amount")
        cause: BackendUnavailable | None = None
        nonce = uuid.uuid4().hex
        if self._reachable():
            # Redis keeps the id at least until its deadline plus the retention (as an expired hold)
            known_until = time.monotonic() + ttl + self._retention
            args = [self._prefix, self._now(), reservation_id, amount_text, str(math.ceil(ttl * 1000)),
                    self._retention_ms, nonce, json.dumps(requests)]  # fmt: skip
            try:
                raw = self._call(
                    self._reserve, [self._prefix + "expiry", self._hold_key(reservation_id)], args
                )
            except BackendUnavailable as exc:
                cause = exc
            else:
                self._up()
                if raw[0] == "exists":
                    raise InvalidInput(
                        f"reservation {reservation_id!r} already exists", field="reservation_id"
                    )
                statuses = self._statuses([kl.key for kl in keys], raw[2:])
                if raw[0] == "denied":
                    return StoreResult(False, statuses, int(raw[1]))
                with self._made_lock:
                    self._made[reservation_id] = (tuple(keys), amount_text, known_until)
                    if len(self._made) > _MADE_MAX:
                        del self._made[next(iter(self._made))]
                return StoreResult(True, statuses)
        if cause is not None and self._local.mode == "deny":
            # The script may have run although its reply was lost (a timeout, Redis paused): the
            # call is refused, so that hold must not stay, nor be charged at its deadline. Take it
            # back when Redis answers again (only the hold this reserve made: its nonce).
            op = PendingOp("release", reservation_id, uuid.uuid4().hex, local=True, reserve_nonce=nonce)
            op.issued = self._issued()
            self._local.queue(op)
        self._local.admit(
            reservation_id,
            tuple(keys),
            amount=amount,
            amount_text=amount_text,
            where=self._where,
            cause=cause,
        )
        return StoreResult(True, ())  # admitted un-checked: no counter status is known

    def settle(self, reservation_id: str, actual: Decimal | None) -> StoreResult:
        if actual is not None:
            if not isinstance(actual, Decimal) or not actual.is_finite() or actual < 0:
                raise InvalidInput(f"expected a non-negative Decimal, got {actual!r}", field="actual")
            actual_text = _text(actual, "actual")
        else:
            actual_text = ""
        if self._local.settle_local(reservation_id, actual, actual_text):
            self._reachable()  # if Redis is back, this reconciles the call at once
            return StoreResult(True, ())
        op = PendingOp("settle", reservation_id, uuid.uuid4().hex, actual=actual_text)
        made = self._forget(reservation_id)
        if made is not None:
            # A hold of ours that Redis does not know although it must (it lost it: a restart
            # without persistence, a failover) is recorded from these, charged in full: the call
            # was made, and its cost must count (unknown is not zero).
            op.keys, op.amount = made
        if self._reachable():
            try:
                raw = self._call(self._settle, *self._settle_args(op))
            except BackendUnavailable:
                pass
            else:
                self._up()
                if raw[0] == "unknown":
                    raise InvalidInput(
                        f"unknown (or long-expired) reservation {reservation_id!r}", field="reservation"
                    )
                names = [str(held[0]) for held in json.loads(raw[1])]  # [key, window, end]
                return StoreResult(raw[0] == "ok", self._statuses(names, raw[2:]))
        # Redis is down: the spend is applied when it is back (no counter status is known meanwhile),
        # as of now: should the hold expire meanwhile, its expiry charge is taken back then.
        op.issued = self._issued()
        return StoreResult(self._local.queue(op), ())

    def _forget(self, reservation_id: str) -> tuple[tuple[KeyLimit, ...], str] | None:
        """The keys and amount of a hold this process made, if Redis must still know its id."""
        with self._made_lock:
            made = self._made.pop(reservation_id, None)
        if made is None or time.monotonic() >= made[2]:
            return None  # not ours, or Redis may have forgotten it by now (no second charge)
        return made[0], made[1]

    def release(self, reservation_id: str) -> bool:
        if self._local.release_local(reservation_id):
            self._reachable()  # if Redis is back, drop a hold the failed reserve may have left there
            return True
        op = PendingOp("release", reservation_id, uuid.uuid4().hex)
        # A hold of ours that Redis lost holds nothing there: releasing it is done, not an error.
        op.local = self._forget(reservation_id) is not None
        if self._reachable():
            try:
                outcome = self._call(self._release, *self._release_args(op))
            except BackendUnavailable:
                pass
            else:
                self._up()
                if outcome == "unknown" and op.local:
                    return True
                if outcome == "unknown":
                    raise InvalidInput(
                        f"unknown (or long-expired) reservation {reservation_id!r}", field="reservation"
                    )
                return bool(outcome == "ok")
        op.issued = self._issued()
        return self._local.queue(op)

    def _issued(self) -> str:
        """Now in ms on the deadlines' clock: the injected one, else this host's (Redis ``TIME``
        is out of reach when an operation is queued; a skew only moves the cut by as much)."""
        return self._now() or str(int(time.time() * 1000))

    def status(self, key: str, window: int | None = None) -> KeyStatus:
        args = [self._prefix, self._now(), key, str(_window(window, "window")), self._retention_ms]
        cause: BackendUnavailable | None = None
        if self._reachable():
            try:
                spent, reserved = self._call(self._status, [self._prefix + "expiry"], args)
            except BackendUnavailable as exc:
                cause = exc
            else:
                self._up()
                return self._statuses([key], [spent, reserved])[0]
        return self._local.last_status(key, self._where, cause)

    def close(self) -> None:
        """Try once more to apply queued work (logging what is lost), then close the connections."""
        if self.pending:
            with contextlib.suppress(BackendError):  # still down: log_unapplied says what is lost
                self.flush()
            self._local.log_unapplied()
        if self._owns_client:
            self._client.close()

    def clear(self) -> int:
        """Delete every key under this store's prefix (tests, or retiring a prefix); returns the count."""
        deleted = 0
        try:
            batch: list[str] = []
            for name in self._client.scan_iter(match=_glob_escape(self._prefix) + "*", count=500):
                batch.append(str(name))
                if len(batch) >= 500:
                    deleted += int(self._client.delete(*batch))
                    batch = []
            if batch:
                deleted += int(self._client.delete(*batch))
        except (self._exc.ConnectionError, self._exc.TimeoutError) as exc:
            raise BackendUnavailable(f"budget store: Redis at {self._where} is unreachable: {exc}") from exc
        return deleted


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)
