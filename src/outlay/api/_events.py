"""The event ledger, read page by page with an opaque cursor, and run trees."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Final

import orjson

from outlay._errors import InvalidInput, NotFound
from outlay.events import CostEvent, to_cloudevent
from outlay.ledger import LedgerEntry, Window
from outlay.ledger._rows import time_us

from ._endpoint import Call, Endpoint
from ._ingest import ingest
from ._params import FILTER_KEYS, Filters, parse_limit
from ._query import add_cost, cost_text
from ._usage import window_json

__all__ = ["ENDPOINTS", "entry_json", "matching_entries"]

#: At most this many ledger entries are read per request, so a sparse filter over a huge ledger
#: answers in bounded time: the page may then be short, with a cursor to continue from.
MAX_SCAN: Final = 20_000
_FIELD_OF: Final = {"tenant": "tenant_id"}
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


def entry_json(entry: LedgerEntry) -> dict[str, Any]:
    """An event as recorded plus its *effective* rating (``cost`` includes re-rating adjustments)."""
    envelope = to_cloudevent(entry.event)
    row: dict[str, Any] = {"event_id": envelope["id"], "time": envelope["time"], "source": envelope["source"]}
    row.update(envelope["data"])
    row["recorded_cost"] = row.pop("cost", None)
    row["cost"] = cost_text(entry.cost)
    row["priced"] = entry.priced
    row["price_version"] = entry.price_version
    row["unpriced_reason"] = entry.unpriced_reason
    row["adjustments"] = entry.adjustments
    return row


def _value(event: CostEvent, name: str) -> str | None:
    if name == "origin" and event.tenant_id is not None:
        # As in the rollups (rollup_key): an origin counts for unattributed spend only, so that
        # /events?origin= lists exactly the events /usage/*?origin= adds up.
        return None
    value: str | None = getattr(event, _FIELD_OF.get(name, name))
    return value


def _matches(entry: LedgerEntry, filters: Filters) -> bool:
    event = entry.event
    return all(_value(event, name) == value for name, value in filters.values.items())


def _fingerprint(window: Window, filters: Filters) -> str:
    text = orjson.dumps([window.start.isoformat(), window.end.isoformat(), sorted(filters.values.items())])
    return hashlib.sha256(text).hexdigest()[:16]


def _encode_cursor(us: int, event_id: str, query: str) -> str:
    raw = orjson.dumps({"t": us, "id": event_id, "q": query})
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(text: str, query: str, window: Window) -> tuple[int, str]:
    try:
        data = orjson.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
        us, event_id, owner = data["t"], data["id"], data["q"]
        if type(us) is not int or not isinstance(event_id, str) or not isinstance(owner, str):
            raise ValueError
    except (ValueError, KeyError, TypeError, orjson.JSONDecodeError):
        raise InvalidInput("not a cursor this API returned", field="cursor") from None
    if owner != query:
        raise InvalidInput(
            "this cursor belongs to another query (same filters and window, please)", field="cursor"
        )
    # The query's fingerprint is no secret: a cursor made by hand may name any instant. One this
    # API returned names an entry inside the window (and one out of datetime's range was a 500).
    if not time_us(window.start) <= us < time_us(window.end):
        raise InvalidInput("not a cursor this API returned", field="cursor")
    return us, event_id


def _after(entries: Iterator[LedgerEntry], us: int, event_id: str) -> Iterator[LedgerEntry]:
    """``entries`` (from instant ``us`` on) after the one with ``event_id``. Ties at one instant
    keep their recording order in every ledger, so the position is stable; should the event not be
    found, the entries at that instant are all given again (duplicates, never a gap)."""
    held: list[LedgerEntry] = []
    entries = iter(entries)
    for entry in entries:
        if time_us(entry.event.time) != us:
            yield from held
            held = []
            yield entry
            yield from entries
            return
        if entry.event.event_id == event_id:
            held = []
            yield from entries
            return
        held.append(entry)
    yield from held


def matching_entries(
    call: Call, window: Window, filters: Filters, start: datetime, skip: tuple[int, str] | None
) -> Iterator[LedgerEntry]:
    call.reports()  # catch the ledger up with the log first
    entries = call.outlay.ledger.entries(start, window.end, tenant=filters.get("tenant"))
    return _after(entries, *skip) if skip else entries


def list_events(call: Call) -> dict[str, Any]:
    window = call.query.window(all_time=True)
    filters = call.filters()
    limit = parse_limit(call.query.get("limit"), default=100, maximum=1000)
    query = _fingerprint(window, filters)
    cursor_text = call.query.get("cursor")
    start, skip = window.start, None
    if cursor_text is not None:
        us, event_id = _decode_cursor(cursor_text, query, window)
        skip = (us, event_id)
        start = max(window.start, _EPOCH + timedelta(microseconds=us))
    page: list[dict[str, Any]] = []
    scanned, last = 0, None
    exhausted = True
    for entry in matching_entries(call, window, filters, start, skip):
        if len(page) >= limit or scanned >= MAX_SCAN:
            exhausted = False
            break
        scanned += 1
        last = entry
        if _matches(entry, filters):
            page.append(entry_json(entry))
    next_cursor = None
    if not exhausted and last is not None:
        next_cursor = _encode_cursor(time_us(last.event.time), last.event.event_id, query)
    return {
        "window": window_json(window),
        "filters": dict(filters.values),
        "events": page,
        "next_cursor": next_cursor,
        "scanned": scanned,
    }


def _prune(tree: dict[str, Any], tenant: str) -> dict[str, Any] | None:
    """The subtree a tenant may see: its own runs, and structure-only runs that lead to them.
    Iterative, children before their parent: a tree may be deeper than Python's recursion limit."""
    stack: list[tuple[dict[str, Any], Iterator[dict[str, Any]], list[dict[str, Any]]]] = [
        (tree, iter(tree["children"]), [])
    ]
    while True:
        node, pending, kept = stack[-1]
        child = next(pending, None)
        if child is not None:
            stack.append((child, iter(child["children"]), []))
            continue
        stack.pop()
        pruned = _prune_node(node, kept, tenant)
        if not stack:
            return pruned
        if pruned is not None:
            stack[-1][2].append(pruned)


def _prune_node(node: dict[str, Any], kids: list[dict[str, Any]], tenant: str) -> dict[str, Any] | None:
    """``node`` as ``tenant`` may see it, given its children pruned already."""
    own = node["tenant"] == tenant
    # Any run not the tenant's own — one with no events, several tenants' (whose totals are no one
    # tenant's), a platform job's (no tenant) or another tenant's — is kept as structure only when
    # it leads to the tenant's own runs: a tenant's steps under a nightly job are reachable from
    # the job. One tenant's run is then shown as a run never recorded (nothing of it, not even
    # that it has events), so a tenant cannot tell another's run id from an unused one.
    if not own and not kids:
        return None
    foreign = not own and not node["several_tenants"]
    total = None if not own or node["cost"] is None else Decimal(node["cost"])
    for kid in kids:
        total = add_cost(total, None if kid["total_cost"] is None else Decimal(kid["total_cost"]))
    events, unpriced = (node["events"], node["unpriced_events"]) if own else (0, 0)
    return {
        **node,
        # A structure-only node is another tenant's run (or a mix): its agent is not this tenant's
        # to see either, only that the tenant's own runs hang under it.
        "agent": node["agent"] if own else None,
        "tenant": node["tenant"] if own else None,
        "inferred": True if foreign else node["inferred"],
        "events": events,
        "unpriced_events": unpriced,
        "cost": node["cost"] if own else None,
        "children": kids,
        "total_events": events + sum(k["total_events"] for k in kids),
        "total_unpriced_events": unpriced + sum(k["total_unpriced_events"] for k in kids),
        "total_cost": cost_text(total),
    }


def run_tree(call: Call) -> dict[str, Any]:
    run_id = call.path["run_id"]
    missing = NotFound(f"no events recorded for run {run_id!r} or any run under it", field="run_id")
    try:
        tree = call.reports().run_tree(run_id)
    except NotFound:
        raise
    except InvalidInput:
        raise missing from None
    tenant = call.principal.tenant
    if tenant is not None:
        pruned = _prune(tree, tenant)
        if pruned is None:
            raise missing  # another tenant's run: as if it did not exist
        tree = pruned
    return tree


_EVENT_PARAMS: Final = ("from", "to", "cursor", "limit", *FILTER_KEYS)

ENDPOINTS: Final = (
    Endpoint("GET", "/api/v1/events", list_events, "The event ledger in time order, cursor-paginated",
             _EVENT_PARAMS, tag="ledger"),
    Endpoint("POST", "/api/v1/events", ingest, "Ingest a batch of CloudEvents cost events", (), tag="ledger",
             body="A JSON array of CloudEvents (or {\"events\": [...]}), at most 1000",
             body_schema={"oneOf": [{"type": "array", "items": {"type": "object"}, "maxItems": 1000},
                                    {"type": "object", "required": ["events"],
                                     "properties": {"events": {"type": "array", "items": {"type": "object"},
                                                               "maxItems": 1000}}}]},
             responses={207: "some events accepted, some refused", 403: "every event is another tenant's",
                        422: "no event was accepted"}),
    Endpoint("GET", "/api/v1/runs/{run_id}", run_tree, "A run and its descendants with rolled-up cost", (),
             tag="ledger", responses={404: "no such run (or not this tenant's)"}),
)  # fmt: skip
