"""``Endpoint``: one row of the route table, which builds the routes, the OpenAPI document and the
isolation test matrix alike — an endpoint cannot exist without being described and tested."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from outlay._errors import NotFound

from ._auth import Principal
from ._params import Filters, Query
from ._query import tenant_known

if TYPE_CHECKING:
    from outlay import Outlay
    from outlay.reporting import Reports

__all__ = ["Call", "Endpoint", "Reply"]


@dataclass(frozen=True, slots=True)
class Reply:
    """A response other than a 200 JSON object: another status, or another media type."""

    body: Any
    status: int = 200
    media_type: str = "application/json"
    headers: Mapping[str, str] = field(default_factory=dict)


def attachment(filename: str) -> str:
    """A ``Content-Disposition`` for a download named ``filename`` — a tenant's name may hold any
    printable character: an ASCII ``filename`` with the others replaced by ``_`` (quotes and
    backslashes too), and the exact name as RFC 6266/8187 ``filename*=UTF-8''...`` for clients that
    read it (every current browser and curl)."""
    plain = "".join(c if " " <= c <= "~" and c not in '"\\%' else "_" for c in filename)
    exact = quote(filename, safe="")
    return f"attachment; filename=\"{plain}\"; filename*=UTF-8''{exact}"


@dataclass(frozen=True, slots=True)
class Call:
    """What a handler gets: who calls, the checked query string, path parameters and body."""

    outlay: Outlay
    principal: Principal
    query: Query
    path: Mapping[str, str]
    body: bytes
    catch_up_lock: threading.Lock

    def reports(self) -> Reports:
        """Reports over the ledger, caught up with the event log (one writer at a time)."""
        with self.catch_up_lock:
            return self.outlay.reports()

    def filters(self) -> Filters:
        """The request's filters with the tenant forced to the caller's own for a tenant token."""
        filters = self.query.filters()
        tenant = self.principal.scope_tenant(filters.get("tenant"))
        if self.principal.is_admin and tenant is not None:
            self.check_tenant(tenant)
        return filters.with_tenant(tenant)

    def check_tenant(self, tenant: str) -> None:
        """404 for a tenant that never recorded anything (admins only; a tenant knows itself)."""
        if self.principal.is_admin and not tenant_known(self.reports().ledger, tenant):
            raise NotFound(f"no events were ever recorded for tenant {tenant!r}", field="tenant")


Handler = Callable[[Call], Any]


@dataclass(frozen=True, slots=True)
class Endpoint:
    """``handler`` runs in a worker thread (the ledger is synchronous) and returns a JSON-ready
    value or a :class:`Reply`. ``params`` are the query parameters it accepts, nothing else."""

    method: str
    path: str
    handler: Handler
    summary: str
    params: tuple[str, ...] = ()
    tag: str = "usage"
    admin_only: bool = False
    body: str | None = None  # description of the request body, if any
    body_media: str = "application/json"  # its media type (a JSON array of objects, or text)
    # the JSON Schema of a JSON body (default: an object)
    body_schema: Mapping[str, Any] = field(default_factory=lambda: {"type": "object"})
    responses: Mapping[int, str] = field(default_factory=dict)
    media: str = "application/json"  # the media type of its 200 answer (CSV and Parquet downloads)
