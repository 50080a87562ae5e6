"""Fixtures of the web tests: the helpers of this directory are importable as ``webtools``."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
