"""Shared pytest setup: hypothesis profiles. The repository root, nvmet-harness/ and scripts/
are importable through pyproject's ``pythonpath``; shared helpers live in tests/helpers."""

import os

from hypothesis import settings

# No per-example deadline (a loaded CI machine is not a bug); in CI the examples are derived
# from each test's name, so a run is reproducible, while local runs keep exploring.
settings.register_profile("stas", deadline=None)
settings.register_profile("stas-ci", deadline=None, derandomize=True)
settings.load_profile("stas-ci" if os.environ.get("CI") else "stas")
