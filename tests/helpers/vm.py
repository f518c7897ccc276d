"""nvmet-harness/vm's runner.py, loaded once for the host-side tests of the VM tooling."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

VM_DIR = Path(__file__).resolve().parents[2] / "nvmet-harness" / "vm"


def load_runner() -> ModuleType:
    """runner.py as module ``stas_vm_runner`` ('runner' alone is too generic); loaded once."""
    name = "stas_vm_runner"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, VM_DIR / "runner.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module
