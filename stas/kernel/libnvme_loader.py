"""Import PyPI's ``libnvme`` bindings despite the wheel's missing ``libnvme.so.1`` soname link.

The wheel ships ``.libnvme.mesonpy.libs/libnvme.so.1.16.2`` but ``_nvme`` asks the dynamic
loader for ``libnvme.so.1``, which nothing provides. Loading the real file first with
``RTLD_GLOBAL`` satisfies that dependency. This is the only place that knows about it.
(Debian's python3-nvme is deliberately not used: libnvme 1.3 corrupts the heap on disconnect.)
"""

from __future__ import annotations

import ctypes
import importlib
import importlib.util
from pathlib import Path
from types import ModuleType

LIB_DIR_NAME = ".libnvme.mesonpy.libs"


class LibnvmeUnavailable(ImportError):
    """libnvme's Python bindings are not installed or cannot be loaded."""


def find_shared_library(site_dir: Path) -> Path | None:
    """Return the versioned ``libnvme.so.1.*`` shipped beside the package, if any."""
    libs = sorted((site_dir / LIB_DIR_NAME).glob("libnvme.so.1*"))
    return libs[-1] if libs else None


def load_libnvme() -> ModuleType:
    """Return ``libnvme.nvme``, preloading the shared library when the wheel needs it."""
    spec = importlib.util.find_spec("libnvme")
    if spec is None or not spec.submodule_search_locations:
        raise LibnvmeUnavailable(
            "the libnvme Python package is not installed (pip install libnvme)"
        )
    site_dir = Path(next(iter(spec.submodule_search_locations))).parent
    shared = find_shared_library(site_dir)
    if shared is not None:
        ctypes.CDLL(str(shared), mode=ctypes.RTLD_GLOBAL)
    try:
        return importlib.import_module("libnvme.nvme")
    except ImportError as exc:
        raise LibnvmeUnavailable(f"libnvme bindings cannot be loaded: {exc}") from exc
