"""Shared pytest setup: make nvmet-harness/ importable (its name has a dash)."""

import sys
from pathlib import Path

HARNESS = Path(__file__).resolve().parent.parent / "nvmet-harness"
if str(HARNESS) not in sys.path:
    sys.path.insert(0, str(HARNESS))

import os  # noqa: E402

from hypothesis import settings  # noqa: E402

# No per-example deadline (a loaded CI machine is not a bug); in CI the examples are derived
# from each test's name, so a run is reproducible, while local runs keep exploring.
settings.register_profile("stas", deadline=None)
settings.register_profile("stas-ci", deadline=None, derandomize=True)
settings.load_profile("stas-ci" if os.environ.get("CI") else "stas")
