"""Provider reconciliation: POST a provider's usage or cost export, get outlay's totals beside it.

Admin only: the answer is every tenant's spend on a provider, per model and day.
"""

from __future__ import annotations

from typing import Any, Final

from outlay._errors import InvalidInput
from outlay.events import ENVIRONMENTS
from outlay.finance import reconcile

from ._endpoint import Call, Endpoint
from ._openapi import PARAMETERS

__all__ = ["ENDPOINTS"]


def reconcile_export(call: Call) -> dict[str, Any]:
    provider = call.query.get("provider")
    if provider is None:
        raise InvalidInput("is required (the provider whose export this is: openai, anthropic, ...)",
                           field="provider")  # fmt: skip
    if not call.body.strip():
        raise InvalidInput("must be the provider's CSV export (send it as the request body)", field="body")
    environment = call.query.get("environment")
    if environment is not None and environment not in ENVIRONMENTS:
        raise InvalidInput(f"must be one of {', '.join(sorted(ENVIRONMENTS))}", field="environment")
    result = reconcile(
        call.reports().ledger,  # caught up with the event log first
        provider,
        call.body,
        start=call.query.get("from"),
        end=call.query.get("to"),
        columns=call.query.get("columns"),
        tolerance=call.query.get("tolerance") or "0.01",
        environment=environment,
    )
    return result.to_json()


PARAMETERS.update({
    "tolerance": ("USD within which ours and the provider's amount match (default 0.01).",
                  {"type": "string", "pattern": r"^\d+(\.\d+)?$"}),
    "columns": ("Map another CSV's headers: date=Day,model=Model,cost=Spend[,tokens=Tokens].",
                {"type": "string"}),
})  # fmt: skip

ENDPOINTS: Final = (
    Endpoint("POST", "/api/v1/finance/reconcile", reconcile_export,
             "Our cost per model and UTC day against a provider's export; from/to default to the "
             "export's days", ("provider", "from", "to", "environment", "tolerance", "columns"),
             tag="finance", admin_only=True,
             body="The provider's usage or cost export as CSV text (OpenAI, Anthropic or date,model,cost)",
             body_media="text/csv",
             responses={400: "a malformed export: the message names the line and column"}),
)  # fmt: skip
