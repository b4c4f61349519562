"""Who a gateway call is for: the key's tenant, plus what the client says inside that tenant.

Clients attribute calls with W3C ``baggage`` (``outlay.inject``) and/or ``X-Outlay-*`` headers (the
headers win over baggage). Both are trusted only *within* the key's tenant: a claim of another
tenant is refused (403, never applied — it would bill one customer for another's calls), and so is
a workspace or feature that contradicts the one the key is bound to.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from outlay._errors import Forbidden, InvalidInput
from outlay.context import ENVIRONMENTS, CostContext, extract
from outlay.context._context import MAX_LABELS

__all__ = ["CLIENT_LABELS", "GATEWAY_LABELS", "HEADERS", "attribute"]

#: The labels the gateway itself may put on a call's event: its word on the call, never a client's.
GATEWAY_LABELS: Final = (
    "gateway.key", "gateway.requested_model", "gateway.error", "gateway.status",
    "gateway.reported_model", "gateway.estimate", "gateway.lost",
)  # fmt: skip
#: How many labels a client may send: the gateway's own must fit beside them within MAX_LABELS, or
#: its events would carry more labels than any entry point takes (an exported event re-sent to the
#: ingest API would be refused).
CLIENT_LABELS: Final = MAX_LABELS - len(GATEWAY_LABELS)

#: ``X-Outlay-*`` request headers and the cost-context field each one sets.
HEADERS: Final[Mapping[str, str]] = {
    "x-outlay-tenant": "tenant",
    "x-outlay-workspace": "workspace",
    "x-outlay-feature": "feature",
    "x-outlay-user": "user",
    "x-outlay-billing-unit": "billing_unit",
    "x-outlay-environment": "environment",
    "x-outlay-request-id": "request_id",
    "x-outlay-workflow-id": "workflow_id",
    "x-outlay-run-id": "run_id",
    "x-outlay-parent-run-id": "parent_run_id",
    "x-outlay-root-run-id": "root_run_id",
    "x-outlay-agent": "run_name",
    "x-outlay-run-kind": "run_kind",
}
_FIELDS: Final = (
    "tenant", "workspace", "user", "billing_unit", "feature", "environment", "request_id",
    "workflow_id", "run_id", "parent_run_id", "root_run_id", "run_name", "run_kind", "run_path", "labels",
)  # fmt: skip


def _header_text(header: str, value: str) -> str:
    """A header value as the client wrote it. The ASGI server hands header bytes over decoded as
    latin-1, while clients send text as UTF-8: read as latin-1, a feature ``café`` would be recorded
    as ``cafÃ©``, and a key's own non-ASCII tenant would look like a forged one (403)."""
    if value.isascii():
        return value
    try:
        return value.encode("latin-1").decode("utf-8")
    except UnicodeEncodeError:
        return value  # already text: a caller that decoded the header itself
    except UnicodeDecodeError:
        raise InvalidInput(
            "is not UTF-8 text; send non-ASCII values as UTF-8 (or percent-encoded in baggage)", field=header
        ) from None


def _claims(headers: Mapping[str, str]) -> dict[str, Any] | None:
    """What the request says about itself, or ``None`` when it says nothing (the common case)."""
    values: dict[str, Any] | None = None
    if "baggage" in headers:
        # Malformed baggage raises InvalidBaggage (an InvalidInput: a 400 naming the header).
        remote = extract(headers).context
        if remote is not None:
            values = {name: getattr(remote, name) for name in _FIELDS}
            values = {k: v for k, v in values.items() if v is not None}
    for header, name in HEADERS.items():
        value = headers.get(header)
        if value is not None:
            if values is None:
                values = {}
            values[name] = _header_text(header, value)
    if values and values.get("run_path") and values["run_path"][-1] != values.get("parent_run_id"):
        del values["run_path"]  # an X-Outlay-* header moved the run: the baggage's ancestors are not its
    if values and values.get("labels"):
        # gateway.* labels are the gateway's word on the call: a client's own are dropped.
        labels = {k: v for k, v in values["labels"].items() if not k.startswith("gateway.")}
        if len(labels) > CLIENT_LABELS:
            raise InvalidInput(
                f"at most {CLIENT_LABELS} labels through the gateway, which adds up to"
                f" {len(GATEWAY_LABELS)} of its own (gateway.*), got {len(labels)}",
                field="labels",
            )
        values["labels"] = labels
    return values


def _bind(values: dict[str, Any], name: str, bound: str | None, what: str) -> None:
    claimed = values.get(name)
    if bound is None:
        return
    if claimed is not None and claimed != bound:
        raise Forbidden(
            f"the request attributes the call to {name} {claimed!r}, but this API key is bound to"
            f" {name} {bound!r} ({what}); remove the {name} from the baggage/X-Outlay-* headers",
            reason="forged_attribution",
        )
    values[name] = bound


def attribute(
    tenant: str | None,
    workspace: str | None,
    feature: str | None,
    headers: Mapping[str, str],
    *,
    environment: str = "production",
    default: CostContext | None = None,
) -> CostContext:
    """The call's cost context. ``default`` (the key's own context) is returned as is when the
    request carries no attribution, so the common case builds nothing."""
    values = _claims(headers)
    if values is None and default is not None:
        return default
    values = values or {}
    _bind(values, "tenant", tenant, "a key attributes only to its own tenant")
    if tenant is None and values.get("tenant") is not None:
        raise Forbidden(
            "this gateway runs without tenant keys; a tenant may not be claimed by a header",
            reason="forged_attribution",
        )
    _bind(values, "workspace", workspace, "set when the key was created")
    _bind(values, "feature", feature, "set when the key was created")
    if tenant is not None and values.get("environment") in ENVIRONMENTS:
        # The environment is the operator's (the gateway's setting), not the customer's: a tenant
        # naming "development" would take its calls off its production invoice and margins. (An
        # unknown environment stays a 400 below.)
        _bind(values, "environment", environment, "the gateway's environment setting")
    values.setdefault("environment", environment)
    return CostContext(**values)  # validates every value, naming the field (a 400)
