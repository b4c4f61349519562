"""The inline SVG charts: well-formed for any amounts, exact in their titles, unknown never zero."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from outlay._money import money_str
from outlay.dashboard import bar_chart, line_chart

NS = "{http://www.w3.org/2000/svg}"
amounts = st.one_of(
    st.none(), st.decimals(min_value=0, max_value=10**9, places=18, allow_nan=False, allow_infinity=False)
)


@given(st.lists(amounts, max_size=60))
def test_line_chart_is_valid_svg_with_a_point_per_known_day(costs: list[Decimal | None]) -> None:
    points = [(f"day-{i}", c) for i, c in enumerate(costs)]
    svg = ET.fromstring(line_chart(points, title="t"))
    circles = svg.findall(f"{NS}circle")
    assert len(circles) == sum(c is not None for c in costs)
    titles = [c.find(f"{NS}title").text for c in circles]  # type: ignore[union-attr]
    assert titles == [f"{d}: {money_str(c)}" for d, c in points if c is not None]  # exact, plain
    unknown = [t for t in svg.findall(f"{NS}text") if t.get("class") == "unknown"]
    assert len(unknown) == sum(c is None for c in costs)


@given(st.lists(st.tuples(st.text(min_size=1, max_size=40), amounts), max_size=30))
def test_bar_chart_is_valid_svg_and_bars_never_exceed_the_track(
    bars: list[tuple[str, Decimal | None]],
) -> None:
    svg = ET.fromstring(bar_chart(bars, title="<&>", width=1000, limit=12))
    widths = [Decimal(r.get("width", "0")) for r in svg.findall(f"{NS}rect")]
    assert all(0 <= w <= 1000 - 180 - 110 for w in widths)
    labels = [t for t in svg.findall(f"{NS}text") if t.get("class") == "label"]
    assert len(labels) == min(len(bars), 12) + (1 if len(bars) > 12 else 0)


def test_the_biggest_bar_fills_the_track_and_others_scale_exactly() -> None:
    svg = ET.fromstring(bar_chart([("a", Decimal("10")), ("b", Decimal("2.5")), ("c", None)], title="t"))
    widths = [r.get("width") for r in svg.findall(f"{NS}rect")]
    assert widths == ["710", "177.5"]  # c is unknown: no bar at all, labelled "unknown"
    assert "unknown" in [t.text for t in svg.findall(f"{NS}text")]


def test_many_bars_are_summed_into_one_exactly() -> None:
    bars = [(f"t{i}", Decimal("0.1")) for i in range(15)]
    svg = ET.fromstring(bar_chart(bars, title="t", limit=12))
    last = svg.findall(f"{NS}rect")[-1].find(f"{NS}title")
    assert last is not None and last.text == "3 others: 0.3"
