"""Shared pytest setup: make nvmet-harness/ importable (its name has a dash)."""

import sys
from pathlib import Path

HARNESS = Path(__file__).resolve().parent.parent / "nvmet-harness"
if str(HARNESS) not in sys.path:
    sys.path.insert(0, str(HARNESS))
