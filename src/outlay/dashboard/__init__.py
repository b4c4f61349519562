"""The web dashboard: server-rendered HTML with inline SVG charts, mounted at ``/dashboard`` by
:func:`outlay.api.create_app`. A finance view for admin tokens and a self-service view per tenant;
nothing is loaded from any other origin. See docs/dashboard.md."""

from ._routes import COOKIE, dashboard_routes
from ._svg import bar_chart, line_chart

__all__ = ["COOKIE", "bar_chart", "dashboard_routes", "line_chart"]
