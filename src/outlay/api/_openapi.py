"""The OpenAPI 3.1 document, generated from the route table, and a self-contained ``/docs`` page
(no CDN, no script: nothing is fetched at run time)."""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from typing import Any, Final

from outlay.ledger import GROUP_KEYS

from ._endpoint import Endpoint

__all__ = ["docs_html", "openapi_document"]

_STRING: Final = {"type": "string"}
# A plain date (its UTC midnight) or a date-time: what the docs show, and what is accepted.
_INSTANT: Final = {"anyOf": [{"type": "string", "format": "date"}, {"type": "string", "format": "date-time"}]}
PARAMETERS: Final[dict[str, tuple[str, dict[str, Any]]]] = {
    "from": ("Window start, inclusive: ISO date or datetime (UTC if no offset). Default: `to` - 30 days.",
             _INSTANT),
    "to": ("Window end, exclusive. Default: the end of today (UTC).", _INSTANT),
    "tenant": ("Only this tenant (a tenant token is always limited to its own).", _STRING),
    "environment": ("production, staging, development or test.",
                    {"type": "string", "enum": ["production", "staging", "development", "test"]}),
    "feature": ("Only this feature.", _STRING),
    "agent": ("Only this agent.", _STRING),
    "model": ("Only this model.", _STRING),
    "provider": ("Only this provider.", _STRING),
    "operation": ("Only this operation (chat, embedding, tool, decision:denied, ...).", _STRING),
    "origin": ("Only unattributed spend from this origin.", _STRING),
    "by": (f"Comma-separated group-by keys: {', '.join(GROUP_KEYS)}.", _STRING),
    "cursor": ("The next_cursor of the previous page (opaque).", _STRING),
    "limit": ("Page size, 1 to 1000 (default 100).", {"type": "integer", "minimum": 1, "maximum": 1000}),
    "what": ("invoice (lines, the default) or entries (every ledger entry).", {"type": "string",
             "enum": ["invoice", "entries"]}),
    "period": ("Billing month, YYYY-MM.", {"type": "string", "pattern": r"^\d{4}-\d{2}$"}),
    "kind": ("Decision kind: soft_exceeded, denied, downgraded, run_stopped, throttled, not_entitled.",
             _STRING),
}  # fmt: skip
_ERROR: Final = {
    "type": "object",
    "properties": {"error": _STRING, "field": {"type": ["string", "null"]}, "message": _STRING},
    "required": ["error", "message"],
}
_STANDARD: Final = {
    "400": "bad input: the field and what is wrong with it",
    "401": "missing or unknown token",
    "403": "the token may not see or write this",
}


def _operation(endpoint: Endpoint) -> dict[str, Any]:
    params: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": _STRING}
        for name in re.findall(r"{(\w+)}", endpoint.path)
    ]
    for name in endpoint.params:
        description, schema = PARAMETERS[name]
        params.append({"name": name, "in": "query", "required": name == "period", "description": description,
                       "schema": schema})  # fmt: skip
    error = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    answer = {
        "content": {
            endpoint.media: {"schema": {"type": "string", "contentMediaType": endpoint.media}}
            if endpoint.media != "application/json"
            else {}
        }
    }
    responses: dict[str, Any] = {"200": {"description": "OK", **answer}}
    for code, text in {**_STANDARD, **{str(k): v for k, v in endpoint.responses.items()}}.items():
        # a success (201 sealed, 207 partly accepted) answers like a 200; only failures are Errors
        responses[code] = {"description": text, **(answer if code.startswith("2") else error)}
    op: dict[str, Any] = {
        "summary": endpoint.summary + (" (admin tokens only)" if endpoint.admin_only else ""),
        "operationId": f"{endpoint.method.lower()}_{re.sub(r'[^a-z0-9]+', '_', endpoint.path).strip('_')}",
        "tags": [endpoint.tag],
        "parameters": params,
        "responses": responses,
        "security": [{"bearer": []}],
    }
    if endpoint.body is not None:
        op["requestBody"] = {
            "required": True,
            "description": endpoint.body,
            "content": {
                endpoint.body_media: {
                    "schema": dict(endpoint.body_schema)
                    if endpoint.body_media == "application/json"
                    else {"type": "string"}
                }
            },
        }
    return op


def openapi_document(endpoints: Sequence[Endpoint], version: str) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for endpoint in endpoints:
        paths.setdefault(endpoint.path, {})[endpoint.method.lower()] = _operation(endpoint)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "outlay reporting API",
            "version": version,
            "description": "Per-tenant AI cost: usage, runs, the event ledger, invoices, budgets, ingest. "
            "Money is a decimal string; `cost: null` means unknown (unpriced), never zero.",
        },
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Error": _ERROR},
        },
    }


def docs_html(document: dict[str, Any]) -> str:
    """A readable, self-contained listing of ``document``."""
    out = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        "<meta name=viewport content='width=device-width,initial-scale=1'>",
        f"<title>{html.escape(document['info']['title'])}</title>",
        "<style>body{font:15px/1.5 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}"
        "code{background:#f3f3f3;padding:0 .25rem}section{border-top:1px solid #ddd;padding:.5rem 0}"
        ".m{font-weight:700;display:inline-block;width:4rem}"
        "td{padding:.1rem .6rem;vertical-align:top}</style>",
        f"</head><body><h1>{html.escape(document['info']['title'])}</h1>",
        f"<p>{html.escape(document['info']['description'])}</p>",
        "<p>Send <code>Authorization: Bearer &lt;token&gt;</code>. Machine-readable: "
        "<a href='/openapi.json'>/openapi.json</a>.</p>",
    ]
    for path, methods in document["paths"].items():
        for method, op in methods.items():
            out.append(
                f"<section id='{html.escape(op['operationId'])}'><p><span class=m>{method.upper()}</span>"
            )
            out.append(f"<code>{html.escape(path)}</code> — {html.escape(op['summary'])}</p>")
            if op["parameters"]:
                out.append("<table>")
                for p in op["parameters"]:
                    text = p.get("description", "path parameter")
                    out.append(f"<tr><td><code>{html.escape(p['name'])}</code></td><td>{html.escape(p['in'])}"
                               f"</td><td>{html.escape(text)}</td></tr>")  # fmt: skip
                out.append("</table>")
            if "requestBody" in op:
                out.append(f"<p>Body: {html.escape(op['requestBody']['description'])}</p>")
            out.append("</section>")
    out.append("</body></html>")
    return "\n".join(out)
