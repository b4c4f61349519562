"""Lost calls: what the admission journal keeps of a call, and the event recorded when its process
died before recording the call itself.

A lost call's event is ``status="estimated"``, dated when the call was admitted, attributed as the
call was (tenant, workspace, feature, user, run, agent, key, model after any downgrade), with its
usage unknown (``complete=False`` and the reason why) and a label saying so: ``gateway.lost``
(:data:`LOST_REASON`) for a gateway's call, ``outlay.lost`` (:data:`METERED_REASON`) for one
metered in process. Its cost is the worst case the call reserved, flagged as such by
``gateway.estimate`` / ``outlay.estimate`` (unknown is never zero); a model with no price stays
unpriced with the catalog's reason, to be re-rated.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from types import MappingProxyType
from typing import Any, Final

from outlay._recording import Recorder
from outlay._usage import Usage
from outlay.budgets import Reservation
from outlay.context import CostContext
from outlay.context._context import STR_FIELDS, derive
from outlay.events import CostEvent

__all__ = [
    "LOST_ESTIMATE",
    "LOST_REASON",
    "METERED_ESTIMATE",
    "METERED_REASON",
    "journal_record",
    "lost_call_event",
]

#: Why a gateway's lost call's usage is unknown (its event's usage reason and ``gateway.lost`` label).
LOST_REASON: Final = (
    "the gateway stopped (killed or crashed) during the call, or could not record it; "
    "the provider may have billed it"
)
#: The ``gateway.estimate`` label of a lost call priced at its hold.
LOST_ESTIMATE: Final = "reserved worst case: the call's outcome was never seen"
#: Why the usage of a call metered in process (an SDK call, ``outlay.meter``) whose process died
#: is unknown (its usage reason and ``outlay.lost`` label).
METERED_REASON: Final = (
    "the process stopped (killed or crashed) during the metered call, or could not record it; "
    "the provider may have billed it"
)
#: The ``outlay.estimate`` label of such a call priced at its hold.
METERED_ESTIMATE: Final = LOST_ESTIMATE


def journal_record(
    *,
    context: CostContext,
    key_id: str | None,
    provider: str,
    model: str,
    requested_model: str | None,
    operation: str,
    estimate: Decimal,
    priced: bool,
    holds: Sequence[Reservation],
) -> dict[str, Any]:
    """What the journal keeps of an admitted call: enough to record it if it is lost."""
    ctx: dict[str, Any] = {
        name: value for name in STR_FIELDS if (value := getattr(context, name)) is not None
    }
    if context.labels:
        ctx["labels"] = dict(context.labels)
    if context.run_path:
        ctx["run_path"] = list(context.run_path)
    return {
        "at": time.time(),
        "ctx": ctx,
        "key": key_id,
        "provider": provider,
        "model": model,
        "requested": requested_model,
        "operation": operation,
        "estimate": str(estimate),
        "priced": priced,
        # Only holds the store keeps (a call under no budget holds nothing there).
        "holds": [hold.id for hold in holds if hold.keys],
    }


def lost_call_event(recorder: Recorder, record: Mapping[str, Any], *, metered: bool = False) -> CostEvent:
    """The event of a call admitted and never recorded, from its journal ``record``: a gateway's,
    or (``metered``) one metered in process, labelled ``outlay.*`` and kept as its process would
    have recorded it (its ``origin`` and ``source``, if it had them)."""
    if metered:
        return _metered_event(recorder, record)
    context = _journal_context(record)
    labels = {k: v for k, v in context.labels.items() if not k.startswith("gateway.")}
    if record.get("key") is not None:
        labels["gateway.key"] = record["key"]
    if record.get("requested") is not None:
        labels["gateway.requested_model"] = record["requested"]
    labels["gateway.lost"] = LOST_REASON
    return _at_hold(recorder, record, context, labels, LOST_REASON, ("gateway.estimate", LOST_ESTIMATE), {})


def _journal_context(record: Mapping[str, Any]) -> CostContext:
    raw_ctx = dict(record["ctx"])
    if "run_path" in raw_ctx:
        raw_ctx["run_path"] = tuple(raw_ctx["run_path"])
    # The labels were checked as the call was admitted, under the bounds of the process that admitted
    # it (an older one's may be looser): its billed call is recorded as it was, never refused now.
    journal_labels = raw_ctx.pop("labels", None) or {}
    context = CostContext(**raw_ctx)
    if journal_labels:
        context = derive(context, {"labels": MappingProxyType(dict(journal_labels))})
    return context


def _metered_event(recorder: Recorder, record: Mapping[str, Any]) -> CostEvent:
    context = _journal_context(record)
    labels = {**context.labels, "outlay.lost": METERED_REASON}
    fields = {name: record[name] for name in ("origin", "source") if record.get(name) is not None}
    return _at_hold(
        recorder, record, context, labels, METERED_REASON, ("outlay.estimate", METERED_ESTIMATE), fields
    )


def _at_hold(
    recorder: Recorder,
    record: Mapping[str, Any],
    context: CostContext,
    labels: dict[str, str],
    reason: str,
    estimate_label: tuple[str, str],
    fields: Mapping[str, Any],
) -> CostEvent:
    """The lost call's ``estimated`` event, at the worst case it held where its model is priced."""
    event = recorder.build(
        operation=record["operation"],
        provider=record["provider"],
        model=record["model"],
        usage=Usage(complete=False, reason=reason),
        at=datetime.fromtimestamp(float(record["at"]), UTC),
        context=context,
        status="estimated",
        labels=labels,
        event_id=record["id"],
        **fields,
    )
    if (
        record["priced"]
        and event.price_version is not None
        and (event.unpriced_reason or "").startswith("usage incomplete")
    ):
        labels[estimate_label[0]] = estimate_label[1]
        event = replace(
            event, priced=True, cost=Decimal(record["estimate"]), unpriced_reason=None, labels=labels
        )
    return event
