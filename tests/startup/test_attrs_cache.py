"""stas.attrs_cache: attrs' generated methods recorded once (``make install``) and handed back
to attrs at a daemon's start, instead of ~115 compile() calls per start (issue 8)."""

from __future__ import annotations

import builtins
import marshal
from pathlib import Path
from types import ModuleType

import attrs
import pytest

from stas import attrs_cache
from tests.startup.helpers import run_fresh

USE = """
import stas.attrs_cache as c, attrs
hook = c.install({table!r})
import stas.main
stas.main._import_trio()  # as the daemons do: without trio's unused parts
import stas.stafd, stas.stacd
from stas.messages import Tid, DcStatus
hits, misses = hook.hits, hook.misses
hook.remove()
import attr._make
t = Tid("tcp", "::1", "8009", "nqn.x")
dc = DcStatus(tid=t, origin="configured")
same = DcStatus(tid=Tid("tcp", "::1", "8009", "nqn.x"), origin="configured")
try:
    dc.state = "x"
    frozen = False
except attrs.exceptions.FrozenInstanceError:
    frozen = True
hashed = hash(t) == hash(Tid(*"tcp ::1 8009 nqn.x".split()))
print(json.dumps({{"hits": hits, "misses": misses, "eq": dc == same, "hash": hashed,
                  "ne": dc != attrs.evolve(dc, state="live"), "frozen": frozen, "repr": repr(t),
                  "hook_left": "compile" in vars(attr._make)}}))
"""


def test_a_recorded_start_up_compiles_no_attrs_class(tmp_path: Path) -> None:
    table = tmp_path / attrs_cache.FILE_NAME
    rec = run_fresh(f"import stas.attrs_cache as c; c.main([{str(table)!r}]); print('{{}}')",
                    tmp_path)  # fmt: skip
    assert rec == {} and table.stat().st_size > 0
    recorded = " ".join(attrs_cache.load(str(table)) or {})
    assert "trio._core._run" in recorded and "trio._dtls" not in recorded  # what a daemon loads
    result = run_fresh(USE.format(table=str(table)), tmp_path)
    assert result["misses"] == 0 and result["hits"] > 50  # trio's classes and ours
    assert result | {"hits": 0, "misses": 0} == {
        "hits": 0, "misses": 0, "eq": True, "hash": True, "ne": True, "frozen": True,
        "repr": "Tid(transport='tcp', traddr='::1', trsvcid='8009', subsysnqn='nqn.x', "
        "host_traddr='', host_iface='', host_nqn='')", "hook_left": False,
    }  # fmt: skip


def test_without_a_table_attrs_compiles_as_usual(tmp_path: Path) -> None:
    assert attrs_cache.install(str(tmp_path / "missing")) is None
    stale = tmp_path / "stale"
    stale.write_bytes(marshal.dumps((b"\0\0\r\n", {})))  # another Python's magic number
    assert attrs_cache.load(str(stale)) is None
    stale.write_bytes(b"not marshal data")
    assert attrs_cache.load(str(stale)) is None


def test_only_the_per_process_hash_salt_is_ignored() -> None:
    src = "def __hash__(self):\n        return hash((\n                {},\n        self.a,\n))\n"
    assert attrs_cache.normalise(src.format(-123)) == attrs_cache.normalise(src.format(456))
    assert attrs_cache.normalise(src.format(1)) != attrs_cache.normalise(src.format(1) + "#")
    plain = "def __init__(self, a):\n    self.a = 12345,\n"
    assert attrs_cache.normalise(plain) == plain


def fake_attrs() -> ModuleType:
    return ModuleType("fake_attr_make")  # no __future__ flags: compile as plain code


def test_a_changed_source_is_compiled_not_served_from_the_table() -> None:
    module = fake_attrs()
    old = builtins.compile("def f():\n    return 1\n", "<attrs generated methods m.C>", "exec")
    hook = attrs_cache.Hook(module, {"<attrs generated methods m.C>": (("def f():\n    return 1\n",
                                                                        old),)})  # fmt: skip
    module.compile = hook
    new = hook("def f():\n    return 2\n", "<attrs generated methods m.C>", "exec")
    ns: dict[str, object] = {}
    exec(new, ns)
    assert ns["f"]() == 2  # type: ignore[operator]
    assert (hook.hits, hook.misses) == (0, 1)
    assert hook("def f():\n    return 1\n", "<attrs generated methods m.C>", "exec") is old
    hook.remove()
    assert "compile" not in vars(module) and hook.table == {}


def test_the_table_is_recorded_with_attrs_future_flags(tmp_path: Path) -> None:
    """attrs' module compiles under its own ``from __future__`` imports; so do the hook's
    compiles (recorded or not), or annotations in generated methods would differ."""
    import attr._make

    hook = attrs_cache.Hook(attr._make, {}, recording=True)
    code = hook("def f(x: int) -> None:\n    pass\n", "<attrs generated methods t.T>", "exec")
    ns: dict[str, object] = {}
    exec(code, ns)
    want = {"x": "int", "return": "None"}  # postponed evaluation, as attrs' own compile gives
    assert ns["f"].__annotations__ == want  # type: ignore[attr-defined]
    assert list(hook.table) == ["<attrs generated methods t.T>"]


@pytest.mark.parametrize("daemon", ["stafd", "stacd"])
def test_the_daemon_starts_with_the_table_and_runs_without_it(daemon: str, tmp_path: Path) -> None:
    """stas.main serves the daemon's imports from the table, then removes the hook (and the
    table with it: no RSS kept) before the daemon runs."""
    table = tmp_path / attrs_cache.FILE_NAME
    run_fresh(f"import stas.attrs_cache as c; c.main([{str(table)!r}]); print('{{}}')", tmp_path)
    run = "run_stafd" if daemon == "stafd" else "run_stacd_args"
    code = (
        "import stas.attrs_cache as c, stas.main\n"
        f"c.DEFAULT_PATH = {str(table)!r}\n"
        "c.install.__defaults__ = (c.DEFAULT_PATH,)\n"
        "hooks = []\n"
        "orig_install = c.install\n"
        "c.install = lambda *a: hooks.append(orig_install(*a)) or hooks[-1]\n"
        "def fake_run(*a):\n"
        "    import attr._make\n"
        "    print(json.dumps({'hits': hooks[0].hits, 'misses': hooks[0].misses,\n"
        "                      'left': 'compile' in vars(attr._make)}))\n"
        "    return 0\n"
        "orig = __import__('builtins').__import__\n"
        "def spy(name, *a, **k):\n"
        "    mod = orig(name, *a, **k)\n"
        f"    if name == 'stas.{daemon}' and hasattr(sys.modules.get(name), '{run}'):\n"
        f"        setattr(sys.modules[name], '{run}', fake_run)\n"
        "    return mod\n"
        "__import__('builtins').__import__ = spy\n"
        f"stas.main.{daemon}_main(['--sys-conf', 'x'])\n"
    )
    result = run_fresh(code, tmp_path)
    assert result["hits"] > 50 and result["misses"] == 0 and result["left"] is False


def test_attrs_classes_still_work_in_this_process() -> None:
    """The hook is gone after start-up: a class defined later is compiled by the builtin."""

    @attrs.frozen
    class Late:
        a: int

    assert Late(1) == Late(1) and hash(Late(1)) == hash(Late(1))


def test_generated_sources_are_not_kept_after_start_up(tmp_path: Path) -> None:
    """attrs' generated sources (tracebacks only) leave linecache, and later classes add none;
    classes created later still work and their errors still raise with a traceback."""
    code = """
import linecache, traceback, attrs
import stas.main
with stas.main._recorded_attrs_code():
    import stas.stafd
before = [k for k in linecache.cache if str(k).startswith("<attrs generated")]

@attrs.frozen
class Late:
    a: int = attrs.field(validator=attrs.validators.instance_of(int))

try:
    Late("x")
    text = ""
except TypeError:
    text = traceback.format_exc()
import stas.nvme.session  # what stafd imports at its first userspace connection
after = [k for k in linecache.cache if str(k).startswith("<attrs generated")]
print(json.dumps({"before": len(before), "after": len(after), "late": Late(1) == Late(1),
                  "traceback": "attrs generated methods" in text and "'a' must be" in text}))
"""
    assert run_fresh(code, tmp_path) == {"before": 0, "after": 0, "late": True, "traceback": True}


SIGNATURES = """
import attrs, attr._make, stas.attrs_cache as c
real = attr._make._AnnotationExtractor
undo = c.answer_builtin_signatures() if {answer} else (lambda: None)
import stas.nvme.logpage as lp, stas.nvme.dim as dim, stas.nvme.pdu as pdu

def typed(x: int) -> str:
    return str(x)

@attrs.frozen
class Mixed:
    a: str = attrs.field(converter=typed)
    b: tuple = attrs.field(default=(), converter=tuple)
undo()
undone = attr._make._AnnotationExtractor is real
def real_tokenize():  # not stas.deferred's stand-in
    stand_in = vars(sys.modules["tokenize"]).get("__getattr__")
    return getattr(stand_in, "__module__", "") != "stas.deferred"
classes = [Mixed] + [v for m in (lp, dim, pdu) for v in vars(m).values() if attrs.has(v)]
print(json.dumps({{"annotations": {{k.__qualname__: repr(k.__init__.__annotations__)
                                  for k in classes}},
                  "tokenize": real_tokenize(), "undone": undone,
                  "built": repr(lp.ExtAttr(1, bytearray(b"ab"))) == repr(lp.ExtAttr(1, b"ab"))}}))
"""


def test_builtin_converters_get_the_same_init_annotations_without_tokenize() -> None:
    """`converter=bytes`/`tuple` (log pages, DIM, PDUs) give every __init__ the annotations
    inspect would have given, without tokenize; a typed Python converter still lends its
    parameter's type; attrs' own extractor is back afterwards."""
    answered = run_fresh(SIGNATURES.format(answer=True))
    parsed = run_fresh(SIGNATURES.format(answer=False))
    assert answered["annotations"] == parsed["annotations"]
    assert "<class 'int'>" in answered["annotations"]["Mixed"]
    assert (answered["tokenize"], parsed["tokenize"]) == (False, True)
    assert answered["undone"] and answered["built"]
