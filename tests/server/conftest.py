"""Server tests: puts ``server_helpers`` on the import path.

The engine fixtures (``engine_name``, ``engine``) come from tests/conftest.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the tests import server_helpers
