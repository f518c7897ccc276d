#!/usr/bin/env python3
"""Install (or remove) a .pth hook so every Python process of the venv records coverage when
COVERAGE_PROCESS_START is set: the daemons and CLIs the tests start as subprocesses count too.
Costs nothing when the variable is unset (coverage is not even imported then)."""

from __future__ import annotations

import sys
import sysconfig
from pathlib import Path

HOOK = Path(sysconfig.get_paths()["purelib"]) / "stas-coverage.pth"
LINE = (
    "import os; os.environ.get('COVERAGE_PROCESS_START') and "
    "__import__('coverage').process_startup()\n"
)


def main(argv: list[str]) -> int:
    if argv[1:] == ["install"]:
        HOOK.write_text(LINE)
    elif argv[1:] == ["remove"]:
        HOOK.unlink(missing_ok=True)
    else:
        print("usage: coverage_hook.py install|remove", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
