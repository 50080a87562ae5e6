"""Fixtures of the packaging and operations tests (wheel, sdist, Dockerfile, deploy/, help)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the tests import pkgtools
