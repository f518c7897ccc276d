"""stacd tests reuse the stafd end-to-end fixtures (private bus, processes, host files)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "stafd"))

from stas_bus_fixture import bus_address  # noqa: F401 - fixture
from test_e2e_stafd import world  # noqa: F401 - fixture
