"""Keep the Dask dashboard's own errors out of the user's terminal.

The dashboard is served by the local scheduler, in tilesky's process. Some
of its pages and plots fail on their own while a run is going: ``/groups`` answers
500 with a ``KeyError`` on a task group the scheduler has just forgotten,
its periodic Bokeh callbacks raise on such groups too, and closing a
``/status`` tab can end a callback with an ``AssertionError``. tornado and
Bokeh log each with a full traceback on stderr, although the run is fine.
These records are dropped (still shown with ``--debug``); nothing else that
tornado or Bokeh logs is.
"""

from __future__ import annotations

import logging

__all__ = ["quiet_dashboard_logs"]

#: logger name -> message prefixes of the dashboard's own failures.
_DROPPED = {
    "tornado.application": ("Uncaught exception GET /", "Exception in callback"),
    "bokeh.util.tornado": ("Error thrown from periodic callback",),
    "bokeh.server.protocol_handler": ("error handling message",),
    "bokeh.server.views.ws": ("",),
    # The dashboard's plots (distributed.utils.log_errors): nothing but them.
    "distributed.dashboard.components.scheduler": ("",),
}


class _DashboardErrors(logging.Filter):
    def __init__(self, prefixes: tuple[str, ...]) -> None:
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            msg = record.getMessage()
        except Exception:  # a record that cannot be formatted is not ours
            return True
        if msg.startswith("Traceback"):
            # bokeh.util.tornado logs the traceback as a record of its own.
            return False
        return not any(msg.startswith(p) for p in self.prefixes)


def quiet_dashboard_logs(enabled: bool = True) -> None:
    """Drop (or, with ``enabled=False``, keep) the dashboard's error records.

    Parameters
    ----------
    enabled : bool
        Install the filters; False removes them.
    """
    for name, prefixes in _DROPPED.items():
        logger = logging.getLogger(name)
        for old in [f for f in logger.filters if isinstance(f, _DashboardErrors)]:
            logger.removeFilter(old)
        if enabled:
            logger.addFilter(_DashboardErrors(prefixes))
