"""``python -m dashboard_server``: the same as the ``dashboard-server`` command."""

from __future__ import annotations

import sys

from dashboard_server.cli import main

if __name__ == "__main__":
    sys.exit(main())
