"""tests/kernel run only inside the test VM (nvmet-harness/vm/runner.py sets STAS_IN_VM=1).

They drive the real kernel's nvmet target and nvme-tcp host through configfs and nvme-cli, which
the development machines' own kernel lacks; elsewhere every test here is skipped. Run them with
``make test-kernel``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
SKIP_REASON = "needs the real Linux kernel: run inside the VM (make test-kernel)"


def in_vm() -> bool:
    return os.environ.get("STAS_IN_VM") == "1"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark (and outside the VM skip) the tests of this directory only: the hook sees all items."""
    for item in items:
        if not item.path.is_relative_to(HERE):
            continue
        item.add_marker(pytest.mark.kernel)
        if not in_vm():
            item.add_marker(pytest.mark.skip(reason=SKIP_REASON))


# The nvmet target fixtures live beside the tests that introduced them; share them here.
from test_nvmet_kernel import clean_kernel, target  # noqa: E402, F401
