"""dashboard-server: aggregate live trading state and stream it to WebSocket dashboards."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
