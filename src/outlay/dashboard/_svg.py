"""Inline SVG charts: a daily area/line chart, a horizontal bar chart and budget gauges.

Charts are plain SVG strings embedded in the page, so the dashboard needs no script, font or
stylesheet from anywhere. Amounts stay exact ``Decimal`` values; only pixel geometry is rounded
(in its own context, never the money one). A day whose cost is unknown is drawn as a gap with a
``?`` marker, never as a zero.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Context, Decimal
from html import escape
from typing import Final

from outlay._money import MONEY_CONTEXT, money_str, money_sum

__all__ = ["Bar", "BudgetBar", "bar_chart", "budget_chart", "line_chart", "short_money"]

_GEOMETRY: Final = Context(prec=12)  # pixel maths only: rounding here is harmless
_PIXEL: Final = Decimal("0.1")

Bar = tuple[str, Decimal | None]


def short_money(amount: Decimal | None) -> str:
    """A compact label for a chart (tables show the exact amount)."""
    if amount is None:
        return "unknown"
    if amount == 0:
        return "$0"
    if abs(amount) >= Decimal("0.01"):
        return f"${amount:,.2f}"
    return f"${amount:.2e}"


def _text(raw: str) -> str:
    """Escaped text with control characters replaced: they are not allowed in XML at all."""
    return escape("".join(c if c.isprintable() else "\ufffd" for c in raw))


def _px(value: Decimal) -> str:
    # Plain notation always: normalize() would write 710 as "7.1E+2", which SVG cannot read.
    text = f"{_GEOMETRY.quantize(value, _PIXEL):f}".removesuffix(".0")
    return "0" if text in ("0", "-0") else text


def _scale(value: Decimal, top: Decimal, span: int) -> Decimal:
    return _GEOMETRY.divide(_GEOMETRY.multiply(value, Decimal(span)), top) if top > 0 else Decimal(0)


def line_chart(
    points: Sequence[tuple[str, Decimal | None]], *, title: str, width: int = 1000, height: int = 240
) -> str:
    """A daily spend chart: ``points`` are ``(day, cost)`` with ``None`` for an unknown cost."""
    left, right, top_pad, bottom = 64, 12, 12, 28
    inner_w, inner_h = width - left - right, height - top_pad - bottom
    known = [c for _, c in points if c is not None]
    top = max(known, default=Decimal(0))
    step = _GEOMETRY.divide(Decimal(inner_w), Decimal(max(len(points) - 1, 1)))
    parts = [
        f'<svg class="chart" role="img" viewBox="0 0 {width} {height}" width="{width}" height="{height}"'
        f' xmlns="http://www.w3.org/2000/svg"><title>{_text(title)}</title>',
        f'<line class="axis" x1="{left}" y1="{top_pad + inner_h}" x2="{width - right}"'
        f' y2="{top_pad + inner_h}"/>',
    ]
    for fraction in (Decimal(0), Decimal("0.5"), Decimal(1)):  # gridlines and their labels
        y = _px(Decimal(top_pad + inner_h) - fraction * inner_h)
        parts.append(f'<line class="grid" x1="{left}" y1="{y}" x2="{width - right}" y2="{y}"/>')
        parts.append(
            f'<text class="tick" x="{left - 6}" y="{y}" text-anchor="end" dy="4">'
            f"{_text(short_money(_GEOMETRY.multiply(top, fraction)))}</text>"
        )
    segments: list[list[tuple[str, str]]] = [[]]
    base = Decimal(top_pad + inner_h)
    for i, (day, cost) in enumerate(points):
        x = _px(Decimal(left) + step * i)
        if cost is None:  # unknown: break the line and mark it, rather than draw a zero
            segments.append([])
            parts.append(
                f'<text class="unknown" x="{x}" y="{_px(base - 4)}" text-anchor="middle">?'
                f"<title>{_text(day)}: cost unknown (unpriced)</title></text>"
            )
            continue
        y = _px(base - _scale(cost, top, inner_h))
        segments[-1].append((x, y))
        parts.append(
            f'<circle class="pt" cx="{x}" cy="{y}" r="2.5">'
            f"<title>{_text(day)}: {_text(money_str(cost))}</title></circle>"
        )
    for segment in segments:
        if not segment:
            continue
        line = " ".join(f"{x},{y}" for x, y in segment)
        area = f"{segment[0][0]},{_px(base)} {line} {segment[-1][0]},{_px(base)}"
        parts.insert(2, f'<polygon class="area" points="{area}"/><polyline class="line" points="{line}"/>')
    if points:  # first, middle and last day under the axis
        last = len(points) - 1
        for i in sorted({0, len(points) // 2, last}):
            x = _px(Decimal(left) + step * i)
            anchor = "start" if i == 0 else "end" if i == last else "middle"  # keep labels inside
            parts.append(
                f'<text class="tick" x="{x}" y="{height - 8}" text-anchor="{anchor}">'
                f"{_text(points[i][0])}</text>"
            )
    parts.append("</svg>")
    return "".join(parts)


def bar_chart(bars: Sequence[Bar], *, title: str, width: int = 1000, limit: int = 12) -> str:
    """Horizontal bars, biggest first as given; past ``limit`` the rest are summed into one bar
    (``None`` costs are listed as unknown, with no bar)."""
    shown = list(bars[:limit])
    rest = bars[limit:]
    unknown_rest = sum(1 for _, c in rest if c is None)
    if rest:
        known = [c for _, c in rest if c is not None]
        shown.append((f"{len(rest)} others", money_sum(known) if known else None))
    row_h, label_w, value_w = 22, 180, 110
    height = row_h * len(shown) + 8
    span = width - label_w - value_w
    top = max((c for _, c in shown if c is not None), default=Decimal(0))
    parts = [
        f'<svg class="chart" role="img" viewBox="0 0 {width} {height}" width="{width}" height="{height}"'
        f' xmlns="http://www.w3.org/2000/svg"><title>{_text(title)}</title>'
    ]
    for i, (label, cost) in enumerate(shown):
        y = 4 + i * row_h
        name = label if len(label) <= 26 else label[:25] + "…"
        parts.append(
            f'<text class="label" x="{label_w - 8}" y="{y + 15}" text-anchor="end">'
            f"{_text(name)}<title>{_text(label)}</title></text>"
        )
        # The summed bar leaves out what is unknown in it: say so, rather than pass it off as 0.
        partial = rest and i == len(shown) - 1 and cost is not None and unknown_rest
        if cost is not None:
            w = _px(max(_scale(cost, top, span), Decimal(1) if cost > 0 else Decimal(0)))
            exact = money_str(cost) + (f" + {unknown_rest} unknown (unpriced)" if partial else "")
            parts.append(
                f'<rect class="bar" x="{label_w}" y="{y + 3}" width="{w}" height="{row_h - 6}">'
                f"<title>{_text(label)}: {_text(exact)}</title></rect>"
            )
        value = short_money(cost) + (" + unknown" if partial else "")
        parts.append(f'<text class="value" x="{width - value_w + 6}" y="{y + 15}">{_text(value)}</text>')
    parts.append("</svg>")
    return "".join(parts)


@dataclass(frozen=True, slots=True)
class BudgetBar:
    """One budget's counter: settled ``spent`` and in-flight ``reserved`` against its limits."""

    label: str
    spent: Decimal
    reserved: Decimal
    limit: Decimal | None
    soft: Decimal | None


# Colours as presentation attributes: the page stylesheet styles only the other charts' classes.
_TRACK: Final = "#eceff3"
_HELD: Final = "#93c5fd"
_OVER: Final = "#dc2626"
_SOFT: Final = "#b45309"


def _maybe(amount: Decimal | None) -> str:
    return "none" if amount is None else money_str(amount)


def _budget_value(bar: BudgetBar) -> str:
    text = short_money(bar.spent)
    if bar.reserved:
        text += f" + {short_money(bar.reserved)} held"
    if bar.limit is not None:
        return f"{text} of {short_money(bar.limit)}"
    return f"{text} (soft {short_money(bar.soft)})" if bar.soft is not None else f"{text} (no limit)"


def budget_chart(bars: Sequence[BudgetBar], *, title: str, width: int = 1000) -> str:
    """A gauge per budget, each on its own scale (its hard limit, else its soft limit): spent, then
    held, a tick at the soft limit; red once the hard limit is reached. Spend past the scale fills
    the track (the label says by how much)."""
    row_h, label_w, value_w = 26, 220, 250
    span = width - label_w - value_w
    height = row_h * len(bars) + 8
    parts = [
        f'<svg class="chart" role="img" viewBox="0 0 {width} {height}" width="{width}" height="{height}"'
        f' xmlns="http://www.w3.org/2000/svg"><title>{_text(title)}</title>'
    ]
    for i, bar in enumerate(bars):
        y = 4 + i * row_h
        used = MONEY_CONTEXT.add(bar.spent, bar.reserved)
        full = bar.limit if bar.limit is not None else bar.soft if bar.soft is not None else used
        name = bar.label if len(bar.label) <= 32 else bar.label[:31] + "…"
        exact = (
            f"spent {money_str(bar.spent)}, held {money_str(bar.reserved)}, limit {_maybe(bar.limit)},"
            f" soft limit {_maybe(bar.soft)}"
        )
        parts.append(
            f'<text class="label" x="{label_w - 8}" y="{y + 17}" text-anchor="end">'
            f"{_text(name)}<title>{_text(bar.label)}</title></text>"
            f'<rect x="{label_w}" y="{y + 4}" width="{span}" height="{row_h - 8}" fill="{_TRACK}">'
            f"<title>{_text(bar.label)}: {_text(exact)}</title></rect>"
        )
        over = bar.limit is not None and used >= bar.limit
        if full > 0:
            spent_w = min(_scale(bar.spent, full, span), Decimal(span))
            used_w = min(_scale(used, full, span), Decimal(span))
        else:  # a zero limit: anything at all fills it
            spent_w = Decimal(span) if bar.spent > 0 else Decimal(0)
            used_w = Decimal(span) if used > 0 else Decimal(0)
        fill = f'fill="{_OVER}"' if over else 'class="bar"'
        if spent_w > 0:
            parts.append(
                f'<rect {fill} x="{label_w}" y="{y + 4}" width="{_px(spent_w)}" height="{row_h - 8}">'
                f"<title>spent {_text(money_str(bar.spent))}</title></rect>"
            )
        if used_w > spent_w:
            parts.append(
                f'<rect fill="{_OVER if over else _HELD}" x="{_px(Decimal(label_w) + spent_w)}" y="{y + 4}"'
                f' width="{_px(used_w - spent_w)}" height="{row_h - 8}">'
                f"<title>held by calls in flight {_text(money_str(bar.reserved))}</title></rect>"
            )
        if bar.soft is not None and full > 0:
            x = _px(Decimal(label_w) + min(_scale(bar.soft, full, span), Decimal(span)))
            parts.append(
                f'<line class="soft" x1="{x}" y1="{y + 1}" x2="{x}" y2="{y + row_h - 1}" stroke="{_SOFT}"'
                f' stroke-width="2"><title>soft limit {_text(money_str(bar.soft))}</title></line>'
            )
        parts.append(
            f'<text class="value" x="{width - value_w + 6}" y="{y + 17}">{_text(_budget_value(bar))}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)
