"""``dashboard-server loadtest``: a load generator that reports its own cost.

Minimal WebSocket clients (:mod:`~dashboard_server.tools.loadtest.wsclient`) spread over worker
processes (:mod:`~dashboard_server.tools.loadtest.worker`), driven by
:func:`~dashboard_server.tools.loadtest.runner.run_loadtest`. docs/performance.md has the method and
the results.
"""

from __future__ import annotations

from dashboard_server.tools.loadtest.runner import (
    LoadtestOptions,
    Report,
    format_report,
    report_json,
    run_loadtest,
)

__all__ = ["LoadtestOptions", "Report", "format_report", "report_json", "run_loadtest"]
