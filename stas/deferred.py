"""Modules a daemon imports but seldom uses, loaded at their first use instead (issue 8).

A daemon's imports (trio, attrs, logging, pathlib, uuid) bring modules that only a rare path
uses: ssl and hmac (TLS, DTLS: libssl and libcrypto mapped, 4.5 MB), hashlib, bz2 and lzma
(shutil's archives), subprocess and tempfile (trio.run_process, ctypes.util), idna (non-ASCII
host names), tokenize (source lines in a traceback, inspect.getsource), platform (attrs and uuid
ask two questions at import that need no parsing) and urllib.parse (pathlib's ``as_uri``).
Each gets a stand-in in ``sys.modules`` until something reads an attribute the stand-in does
not answer; then the real module is imported into the stand-in, so every name bound to the
stand-in meanwhile works as the real module.

Standard library only, and nothing heavy: this runs first, before logging and argparse.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any

# Imported at module level, used only inside functions (see the module docstring).
DEFERRED = (
    "ssl", "hmac", "hashlib", "bz2", "lzma", "subprocess", "tempfile", "idna", "tokenize",
    "platform", "urllib.parse",
)  # fmt: skip


def _platform_answers(load: Callable[[], ModuleType]) -> dict[str, Callable[..., Any]]:
    """attrs (``python_implementation``) and uuid (``system``) call these at import; the
    answers are what platform returns, read without its version-string parsers (nine regular
    expressions compiled at import). Anything unusual goes to the real module."""

    def python_implementation() -> str:
        if sys.implementation.name == "cpython":
            return "CPython"
        return load().python_implementation()  # type: ignore[no-any-return]

    def system() -> str:
        name = os.uname().sysname
        if name == "Linux":
            return name
        return load().system()  # type: ignore[no-any-return]

    return {"python_implementation": python_implementation, "system": system}


def _forward(*names: str) -> Callable[[Callable[[], ModuleType]], dict[str, Callable[..., Any]]]:
    """Functions another module binds with ``from m import name`` at import: a forwarder
    that imports the real module when called."""

    def answers(load: Callable[[], ModuleType]) -> dict[str, Callable[..., Any]]:
        def forwarder(name: str) -> Callable[..., Any]:
            def call(*args: Any, **kwargs: Any) -> Any:
                return getattr(load(), name)(*args, **kwargs)

            call.__name__ = call.__qualname__ = name
            return call

        return {name: forwarder(name) for name in names}

    return answers


# what importers read from a stand-in at import time, answered without the real module
ANSWERS: dict[str, Callable[[Callable[[], ModuleType]], dict[str, Callable[..., Any]]]] = {
    "platform": _platform_answers,
    "urllib.parse": _forward("quote_from_bytes"),  # pathlib
}


def defer_imports(names: tuple[str, ...] = DEFERRED) -> list[str]:
    """Put a stand-in in ``sys.modules`` for each module not imported yet; the first
    attribute looked up on it that it does not answer imports the real module into the
    stand-in (so the names bound by ``import ssl`` elsewhere keep working). Returns the names
    deferred.

    Not ``importlib.util.LazyLoader``: under 3.11 the import statement itself reads
    ``__spec__`` of a module found in ``sys.modules``, which makes a lazy module load.
    """
    import importlib.util

    deferred = []
    for name in names:
        if name in sys.modules:
            continue
        spec = importlib.util.find_spec(name)  # imports the parent package of a dotted name
        if spec is None:
            continue
        stub = _stand_in(name, spec, ANSWERS.get(name))
        sys.modules[name] = stub
        parent, _, child = name.rpartition(".")
        if parent:  # `import urllib.parse` binds urllib, whose attribute is read next
            setattr(sys.modules[parent], child, stub)
        deferred.append(name)
    return deferred


def answer_pthread_lookup() -> bool:
    """trio names its worker threads with pthread_setname_np, which it looks up when imported
    with ``ctypes.util.find_library("pthread")``: that runs ``/sbin/ldconfig -p`` (a fork and
    an exec at every start, slow under emulation) and imports subprocess, tempfile and shutil.
    The library is mapped in this process already: a stand-in ``ctypes.util`` answers
    "pthread" with its path from /proc/self/maps, and hands any other name (or attribute) to
    the real module, imported then. Returns whether the stand-in was put in place."""
    import importlib.util

    if "ctypes.util" in sys.modules or not sys.platform.startswith("linux"):
        return False
    spec = importlib.util.find_spec("ctypes.util")
    if spec is None:
        return False
    import ctypes

    stub = _stand_in("ctypes.util", spec)

    def find_library(name: str) -> str | None:
        if name == "pthread":
            path = _mapped_library(("/libpthread.so", "/libc.so"))
            if path:
                return path
        real: Any = stub.__getattr__("find_library")
        return real(name)  # type: ignore[no-any-return]

    stub.find_library = find_library  # type: ignore[attr-defined]
    sys.modules["ctypes.util"] = stub
    ctypes.util = stub  # `import ctypes.util` binds ctypes
    return True


def _mapped_library(prefer: tuple[str, ...]) -> str | None:
    """The path of the first of ``prefer`` (``/libname.so`` parts) mapped in this process."""
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if ".so" in line}
    except OSError:
        return None
    for part in prefer:
        for path in sorted(paths):
            if part in path:
                return path
    return None


def _stand_in(
    name: str,
    spec: Any,
    answers: Callable[[Callable[[], ModuleType]], dict[str, Callable[..., Any]]] | None = None,
) -> ModuleType:
    stub = ModuleType(name)
    stub.__spec__ = spec
    stub.__file__ = spec.origin
    loaded: list[ModuleType] = []

    def load() -> ModuleType:
        """The real module, imported into the stand-in the first time."""
        if not loaded:
            import importlib

            if sys.modules.get(name) is stub:
                del sys.modules[name]
            loaded.append(importlib.import_module(name))
            stub.__dict__.update(loaded[0].__dict__)
        return loaded[0]

    def __getattr__(attr: str) -> Any:  # only called for names the stub does not have yet
        if attr == "__path__" and spec.submodule_search_locations is None:
            raise AttributeError(attr)  # `from m import x` asks whether m is a package
        return getattr(load(), attr)

    stub.__getattr__ = __getattr__  # type: ignore[method-assign]
    if answers is not None:
        stub.__dict__.update(answers(load))
    return stub


# trio's parts a daemon never uses: TLS and DTLS streams, subprocesses, async files and paths
# (with their attrs classes and enums, 16 M instructions of each daemon's imports)
TRIO_PARTS = (
    "trio._dtls", "trio._highlevel_ssl_helpers", "trio._ssl", "trio._subprocess", "trio._path",
    "trio._file_io",
)  # fmt: skip


# trio namespace -> (the module, its names bound at first use) (import_trio)
_PENDING: dict[str, tuple[ModuleType, dict[str, _Unbound]]] = {}


class _Unbound:
    """What trio's ``from ._ssl import SSLStream`` binds while trio is imported lazily;
    replaced by a lookup at first use before anything can read it (``import_trio``)."""

    __slots__ = ("module", "name")

    def __init__(self, module: str, name: str) -> None:
        self.module = module
        self.name = name


def import_trio(parts: tuple[str, ...] = TRIO_PARTS) -> ModuleType:
    """``import trio`` without loading ``parts``: trio's ``__init__`` (and ``trio.lowlevel``)
    bind names from them at import; they get those names from a stand-in, which leaves the
    namespaces as soon as trio is imported. The first lookup of such a name (``trio.Path``,
    ``trio.lowlevel.open_process``, ``trio._ssl``) imports the part and binds its names, with
    the public ``__module__`` and ``__qualname__`` trio gives them. When trio is imported
    already, nothing changes."""
    if "trio" in sys.modules:
        return sys.modules["trio"]
    parts = tuple(p for p in parts if p not in sys.modules)
    for part in parts:
        placeholder = ModuleType(part)
        placeholder.__getattr__ = _unbound_names(part)  # type: ignore[method-assign]
        sys.modules[part] = placeholder
    try:
        import trio
    finally:
        for part in parts:
            del sys.modules[part]
    for module in [m for n, m in list(sys.modules.items()) if n == "trio" or n.startswith("trio.")]:
        unbound = {k: v for k, v in vars(module).items() if isinstance(v, _Unbound)}
        if unbound or module is trio:
            _bind_at_first_use(module, unbound, parts)
    return trio


def _unbound_names(part: str) -> Callable[[str], _Unbound]:
    def __getattr__(name: str) -> _Unbound:
        if name.startswith("__"):  # the import system asking whether it is a package
            raise AttributeError(name)
        return _Unbound(part, name)

    return __getattr__


def _bind_at_first_use(module: ModuleType, unbound: dict[str, _Unbound],
                       parts: tuple[str, ...]) -> None:  # fmt: skip
    """Drop ``unbound`` from ``module``; its ``__getattr__`` (after trio's own) imports the
    part a name came from, then binds every name that part gives each trio namespace."""
    for name in unbound:
        delattr(module, name)
    earlier = vars(module).get("__getattr__")
    submodules = {p.rpartition(".")[2]: p for p in parts} if module.__name__ == "trio" else {}

    def __getattr__(name: str) -> Any:
        import importlib

        if name in unbound:
            _bind_part(unbound[name].module)
            return vars(module)[name]
        if name in submodules:  # `trio._ssl`, as after an eager import
            return importlib.import_module(submodules[name])
        if earlier is not None:
            return earlier(name)
        raise AttributeError(f"module {module.__name__!r} has no attribute {name!r}")

    module.__getattr__ = __getattr__  # type: ignore[method-assign]
    _PENDING[module.__name__] = (module, unbound)


def _bind_part(part: str) -> None:
    """Import ``part`` and bind its names in every trio namespace that bound them, as trio's
    ``fixup_module_metadata`` would have at import (trio first, then its submodules)."""
    import importlib

    real = importlib.import_module(part)
    from trio._util import fixup_module_metadata

    for module, unbound in sorted(_PENDING.values(), key=lambda e: e[0].__name__ != "trio"):
        names = {k: getattr(real, v.name) for k, v in unbound.items() if v.module == part}
        if names:
            vars(module).update(names)
            fixup_module_metadata(module.__name__, names)
