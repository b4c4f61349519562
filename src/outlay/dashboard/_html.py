"""Page skeleton, tables and forms. Every value from the ledger goes through ``escape`` — a feature
or model name is user data and must never become markup."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from html import escape
from typing import Any, Final
from urllib.parse import urlencode

__all__ = [
    "LOGIN_REFERRER",
    "Link",
    "confirm_login_page",
    "login_page",
    "message_page",
    "page",
    "refused_login_page",
    "table",
    "url",
]

_CSS: Final = """
*{box-sizing:border-box}body{font:14px/1.45 system-ui,sans-serif;margin:0;color:#1d2430;background:#f5f6f8}
header{background:#1d2430;color:#fff;padding:10px 24px;display:flex;gap:18px;align-items:center}
header a{color:#cfe0ff}header .who{margin-left:auto;opacity:.8}main{padding:16px 24px;max-width:1100px}
h1{font-size:20px;margin:8px 0}h2{font-size:16px;margin:22px 0 8px}
section{background:#fff;border:1px solid #dde1e7;border-radius:6px;padding:12px 16px;margin:12px 0}
table{border-collapse:collapse;width:100%}
th,td{padding:4px 8px;border-bottom:1px solid #eceff3;text-align:left}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}.muted{color:#6b7380}
.kpis{display:flex;gap:12px;flex-wrap:wrap}.kpi{background:#fff;border:1px solid #dde1e7;border-radius:6px;
padding:10px 14px;min-width:150px}.kpi b{display:block;font-size:20px}
form.filters{margin:0 0 12px;display:flex;gap:8px;align-items:end;flex-wrap:wrap}
label{display:flex;flex-direction:column;font-size:12px}
input,select,button{font:inherit;padding:3px 6px}.error{color:#a40000}
svg.chart{max-width:100%;height:auto;display:block}.axis{stroke:#6b7380}.grid{stroke:#eceff3}
.area{fill:#3b82f6;fill-opacity:.15}.line{fill:none;stroke:#2563eb;stroke-width:2}.pt{fill:#2563eb}
.bar{fill:#3b82f6}.tick,.label,.value{font-size:11px;fill:#1d2430}.unknown{fill:#a40000;font-size:12px}
"""


def url(path: str, params: Mapping[str, str | None]) -> str:
    """``path`` with the non-empty ``params`` as a query string (escape it before use in HTML)."""
    kept = {k: v for k, v in params.items() if v}
    return f"{path}?{urlencode(kept)}" if kept else path


def page(
    title: str,
    body: str,
    *,
    who: str | None = None,
    nav: Sequence[tuple[str, str]] = (),
    referrer: str = "no-referrer",
) -> str:
    links = "".join(f'<a href="{escape(href)}">{escape(text)}</a>' for text, href in nav)
    user = ""
    if who is not None:
        user = (
            f'<span class="who">{escape(who)}</span><form method="post" action="/dashboard/logout">'
            '<button type="submit">Log out</button></form>'
        )
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f'<meta name="referrer" content="{escape(referrer)}">'
        f"<title>{escape(title)} · outlay</title><style>{_CSS}</style></head><body>"
        f"<header><strong>outlay</strong>{links}{user}</header><main><h1>{escape(title)}</h1>{body}</main>"
        "</body></html>"
    )


@dataclass(frozen=True, slots=True)
class Link:
    """A table cell that links somewhere (both parts escaped when rendered)."""

    text: str
    href: str

    def __str__(self) -> str:  # how it reads in a CSV or a test: just the text
        return self.text


def _cell(value: Any) -> str:
    if value is None:
        return '<span class="muted">—</span>'
    if isinstance(value, Link):
        return f'<a href="{escape(value.href)}">{escape(value.text)}</a>'
    return escape(str(value))


def table(
    columns: Sequence[tuple[str, str]],
    rows: Sequence[Mapping[str, Any]],
    *,
    numeric: Sequence[str] = (),
    empty: str = "nothing in this window",
) -> str:
    """An HTML table of ``rows``; ``columns`` are ``(key, heading)``; ``None`` shows as a dash."""
    if not rows:
        return f'<p class="muted">{escape(empty)}</p>'
    head = "".join(f'<th class="{"n" if k in numeric else ""}">{escape(h)}</th>' for k, h in columns)
    body = "".join(
        "<tr>"
        + "".join(f'<td class="{"n" if k in numeric else ""}">{_cell(r.get(k))}</td>' for k, _ in columns)
        + "</tr>"
        for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def message_page(title: str, message: str, *, field: str | None = None, back: str = "/dashboard") -> str:
    detail = f" (parameter <code>{escape(field)}</code>)" if field else ""
    body = (
        f'<section><p class="error">{escape(message)}{detail}</p>'
        f'<p><a href="{escape(back)}">Back to the dashboard</a></p></section>'
    )
    return page(title, body)


#: The referrer policy of every page holding a login form. Not ``no-referrer``: under it a browser
#: sends ``Origin: null`` with the form's POST, and where it sends no ``Sec-Fetch-Site`` (plain HTTP
#: to a host other than localhost) that is what a cross-site form sends too, so the login would be
#: refused. ``strict-origin`` sends our origin and never a path or query (so never a token).
LOGIN_REFERRER: Final = "strict-origin"


def login_page(message: str | None = None, *, next_path: str = "/dashboard") -> str:
    note = f'<p class="error">{escape(message)}</p>' if message else ""
    body = (
        f"<section>{note}<p>Paste an API token (admin or tenant). It is kept in an HttpOnly cookie for "
        "this browser session only.</p>"
        '<form method="post" action="/dashboard/login" class="filters">'
        f'<input type="hidden" name="next" value="{escape(next_path)}">'
        '<label>Token<input type="password" name="token" autocomplete="off" size="48" required></label>'
        '<button type="submit">Log in</button></form></section>'
    )
    return page("Log in", body, referrer=LOGIN_REFERRER)


def confirm_login_page(who: str, pending: str, *, next_path: str) -> str:
    """What a login link leads to: the account it logs in to and one button, which POSTs the
    parked login's ``pending`` nonce (the token stays in its cookie; the nonce makes sure the login
    is the one this page named). Following a link must not log a browser in by itself: another
    site could then log its visitor in to the other site's own tenant (login CSRF), and the visitor
    would take it for theirs."""
    body = (
        f"<section><p>Log in to the outlay dashboard as <strong>{escape(who)}</strong>?</p>"
        '<p class="muted">Only continue if you asked for this link: whoever made it chose the account, '
        "and everything you then see and do is in that account.</p>"
        '<form method="post" action="/dashboard/login" class="filters">'
        f'<input type="hidden" name="pending" value="{escape(pending)}">'
        f'<input type="hidden" name="next" value="{escape(next_path)}">'
        '<button type="submit">Log in</button></form></section>'
    )
    return page("Log in", body, referrer=LOGIN_REFERRER)


def refused_login_page() -> str:
    body = (
        '<section><p class="error">This login was sent by another web site, so it was refused: a site '
        "could otherwise log your browser in to an account of its choosing.</p>"
        '<p>To log in, open <a href="/dashboard/login">the login page</a> and paste your token.</p></section>'
    )
    return page("Login refused", body)
