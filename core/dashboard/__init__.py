"""The web dashboard: ``/dashboard``, served by the router's own Quart app.

Off unless DASHBOARD_PASSWORD is set (every route answers 404 then). Pages are rendered
on the server from ``templates/``; ``static/`` holds the stylesheet, one small script and
htmx and uPlot vendored from the npm registry with their licences (no CDN, no build).
Nothing here runs on the webhook's path: every read happens when a page asks.

See ``docs/dashboard.md``; sessions and CSRF are in ``core.dashboard.session``, what is
read and how it is shaped in ``core.dashboard.reads``, the risk page's reads of
the kill switch in ``core.dashboard.risk``.
"""

from core.dashboard.views import dashboard_blueprint

__all__ = ["dashboard_blueprint"]
