"""attrs' generated methods compiled once, at install time, instead of at every start (issue 8).

attrs writes the source of each class's ``__init__``, ``__repr__``, ``__eq__`` and ``__hash__``
and compiles it when the class is created, at import: about 115 ``compile()`` calls in a
daemon's imports (trio's classes and ours), a quarter of the instructions the imports take.
``make install`` records them once with the launchers' interpreter (``record``), beside the
package like its ``.pyc`` files; a starting daemon then hands attrs the stored code object when
attrs compiles the very same source (compared character for character), and compiles as usual
otherwise (attrs, Python or a class changed: the entry is simply not used).

The one part of a source that differs between two processes is the first item of the
``__hash__`` tuple, a per-class salt that attrs takes from ``hash()`` of a string (randomised per
process). It is left out of the comparison: the stored code keeps the recording run's salt,
which does the same job (the same value for every instance of the class in the process).
Only a daemon's start-up uses the table: it is dropped before the daemon runs (no RSS kept).

``drop_sources``: attrs also keeps every generated source in ``linecache`` (for tracebacks and
pdb only), about 3 KB a class, 0.4-0.5 MB of a daemon's heap; a daemon does without them (a
traceback through a generated ``__init__`` shows its file and line, not the text).
"""

from __future__ import annotations
import __future__

import builtins
import marshal
import os
import re
import sys
from collections.abc import Callable
from importlib.util import MAGIC_NUMBER
from types import CodeType, ModuleType
from typing import Any

FILE_NAME = "attrs-code.cache"
DEFAULT_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), FILE_NAME)
_SALT = re.compile(r"(hash\(\(\n *)-?\d+,")

Table = dict[str, tuple[tuple[str, CodeType], ...]]


def normalise(source: str) -> str:
    """The source without the per-process ``__hash__`` salt."""
    return _SALT.sub(r"\1SALT,", source) if "def __hash__" in source else source


def _future_flags(module: ModuleType) -> int:
    """The ``from __future__`` flags attrs' own ``compile()`` call inherits from its module."""
    return sum(f.compiler_flag for f in vars(module).values() if isinstance(f, __future__._Feature))


def _compile_as(module: ModuleType) -> Any:
    flags = _future_flags(module)

    def compile_(source: Any, filename: Any, mode: str, *args: Any, **kwargs: Any) -> Any:
        if args or kwargs:  # attrs passes three arguments; anything else is not ours to change
            return builtins.compile(source, filename, mode, *args, **kwargs)
        return builtins.compile(source, filename, mode, flags, True)

    return compile_


class Hook:
    """``compile`` as seen by attrs' class builder while the hook is installed."""

    def __init__(self, module: ModuleType, table: Table, recording: bool = False) -> None:
        self.module = module
        self.table = table
        self.recording = recording
        self.hits = self.misses = 0
        self._compile = _compile_as(module)

    def __call__(self, source: Any, filename: Any, mode: str, *args: Any, **kwargs: Any) -> Any:
        usable = isinstance(source, str) and isinstance(filename, str) and mode == "exec"
        if not usable or args or kwargs:
            return self._compile(source, filename, mode, *args, **kwargs)
        key = normalise(source)
        for known, code in self.table.get(filename, ()):
            if known == key:
                self.hits += 1
                return code
        self.misses += 1
        code = self._compile(source, filename, mode)
        if self.recording:
            self.table[filename] = (*self.table.get(filename, ()), (key, code))
        return code

    def remove(self) -> None:
        """attrs compiles with the builtin again; the table is released."""
        if vars(self.module).get("compile") is self:
            del self.module.compile
        self.table = {}


def answer_builtin_signatures() -> Callable[[], None]:
    """attrs reads the signature of each converter, for the annotations of ``__init__``; for a
    builtin type (``converter=bytes``, ``tuple``) ``inspect.signature`` parses its text
    signature with tokenize (a regular expression of every Python token compiled at the first
    one: 19 M instructions of stafd's start with tokenize's import). A builtin type's text
    signature carries no annotations: until the returned undo is called, attrs gets the answer
    "none" without the parsing, as the parsing would conclude. Other converters as usual."""
    module = _attrs_builder()
    real = getattr(module, "_AnnotationExtractor", None)
    if not isinstance(real, type) or "sig" not in getattr(real, "__slots__", ()):
        return lambda: None  # another attrs: leave it alone

    class BuiltinAware(real):  # type: ignore[misc, valid-type]
        __slots__ = ()

        def __init__(self, callable: Any) -> None:
            if isinstance(callable, type) and callable.__module__ == "builtins":
                self.sig = None  # type: ignore[misc]  # a slot of the attrs class
            else:
                super().__init__(callable)

    module._AnnotationExtractor = BuiltinAware  # type: ignore[attr-defined]

    def undo() -> None:
        if vars(module).get("_AnnotationExtractor") is BuiltinAware:
            module._AnnotationExtractor = real  # type: ignore[attr-defined]

    return undo


class _Unkept(dict[Any, Any]):
    """``linecache.cache`` as attrs sees it after ``drop_sources``: nothing is kept."""

    def setdefault(self, key: Any, default: Any = None) -> Any:
        return default


def drop_sources() -> int:
    """Forget the generated sources attrs put in ``linecache``, and keep none from now on
    (attrs' other uses of ``linecache``, if any, reach the real module). Returns how many."""
    import linecache

    keys = [k for k in linecache.cache if isinstance(k, str) and k.startswith("<attrs generated")]
    for key in keys:
        del linecache.cache[key]
    module = _attrs_builder()
    if not isinstance(getattr(module.linecache, "cache", None), _Unkept):
        shim = ModuleType("linecache")
        shim.cache = _Unkept()  # type: ignore[attr-defined]
        shim.__getattr__ = lambda name: getattr(linecache, name)  # type: ignore[method-assign]
        module.linecache = shim  # type: ignore[attr-defined]
    return len(keys)


def _attrs_builder() -> ModuleType:
    import attr._make

    return attr._make


def load(path: str = DEFAULT_PATH) -> Table | None:
    """The stored table, or None (no file, unreadable, or from another Python version)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
        magic, table = marshal.loads(data)
    except (OSError, ValueError, EOFError, TypeError):
        return None
    if magic != MAGIC_NUMBER or not isinstance(table, dict):
        return None
    return table


def install(path: str = DEFAULT_PATH) -> Hook | None:
    """Serve attrs' compiles from the stored table until ``Hook.remove``; None without one."""
    table = load(path)
    if table is None:
        return None
    module = _attrs_builder()
    hook = Hook(module, table)
    module.compile = hook  # type: ignore[attr-defined]  # found before the builtin
    return hook


def record(path: str, modules: list[str], first: Callable[[], object] | None = None) -> int:
    """Import ``modules`` with recording on (after ``first()``, if given: what the daemons do
    first); write the table; the number of entries."""
    module = _attrs_builder()
    hook = Hook(module, {}, recording=True)
    module.compile = hook  # type: ignore[attr-defined]
    try:
        if first is not None:
            first()
        for name in modules:
            __import__(name)
    finally:
        table = hook.table
        hook.remove()
    tmp = f"{path}.tmp"
    with open(tmp, "wb") as f:
        f.write(marshal.dumps((MAGIC_NUMBER, table)))
    os.replace(tmp, path)
    return sum(len(v) for v in table.values())


# what a daemon imports before it runs (stas.main imports the rest of each daemon's start-up)
START_UP_MODULES = ["stas.main", "stas.stafd", "stas.stacd"]


def main(argv: list[str] | None = None) -> int:
    """``python -m stas.attrs_cache [FILE]``: record the daemons' start-up classes into FILE
    (default: beside this module), as ``make install`` does."""
    args = sys.argv[1:] if argv is None else argv
    path = args[0] if args else DEFAULT_PATH
    from stas.deferred import defer_imports, import_trio

    defer_imports()  # record what the daemons import, in the order they import it
    count = record(path, START_UP_MODULES, first=import_trio)  # not trio's unused parts
    print(f"{path}: {count} attrs classes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
