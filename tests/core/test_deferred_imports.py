"""stas.deferred.defer_imports: a daemon that uses no TLS does not map OpenSSL (issue 8 RSS),
and everything that needs ssl/hmac/hashlib still gets the real modules on first use.

Each check runs a fresh interpreter (the test process has imported ssl long ago).
"""

from __future__ import annotations

from tests.startup.helpers import run_fresh

# the daemons' own import path, as stas.main takes it (attrs' converters answered)
DAEMON_IMPORTS = """
import stas.main
with stas.main._recorded_attrs_code():
    stas.main._import_trio()
    import trio, stas.stacd, stas.stafd, stas.nvme.session, stas.nvme.host_ops
"""


def real_modules(names: tuple[str, ...]) -> str:
    """Code for the names among ``names`` that are loaded for real (not a stand-in)."""
    stand_in = "getattr(vars(sys.modules[m]).get('__getattr__'), '__module__', '')"
    return f"[m for m in {names!r} if m in sys.modules and {stand_in} != 'stas.deferred']"


def test_the_daemons_imports_load_no_openssl() -> None:
    """trio (ssl, hmac), both daemons and stafd's userspace host (DH-HMAC-CHAP included)
    imported after logging is set up: no libssl, no libcrypto."""
    code = DAEMON_IMPORTS + (
        "maps = open('/proc/self/maps').read()\n"
        "exts = ('_ssl', '_hashlib', '_bz2', '_lzma')\n"
        "print(json.dumps({'ext': [m for m in exts if m in sys.modules],\n"
        "                  'libcrypto': 'libcrypto' in maps}))\n"
    )
    assert run_fresh(code) == {"ext": [], "libcrypto": False}


def test_deferred_modules_work_on_first_use() -> None:
    """TLS context, HMAC, hashes and compression through names bound before the real import
    happened."""
    code = (
        "import trio._ssl as tssl, hmac, hashlib\n"
        "import ssl\n"
        "ctx = ssl.create_default_context()\n"
        "same = tssl._stdlib_ssl.SSLContext is type(ctx)\n"
        "mac = hmac.new(b'k', b'm', 'sha256').hexdigest()[:8]\n"
        "from hashlib import sha256\n"
        "import bz2, lzma\n"
        "packed = lzma.decompress(lzma.compress(bz2.decompress(bz2.compress(b'x'))))\n"
        "print(json.dumps({'same': same, 'mac': mac, 'sha': sha256(b'').hexdigest()[:8],\n"
        "                  'real': type(sys.modules['ssl'].SSLContext).__name__,\n"
        "                  'loaded': '_ssl' in sys.modules, 'packed': packed.decode()}))\n"
    )
    assert run_fresh(code) == {
        "same": True, "mac": "b60090e3", "sha": "e3b0c442", "real": "type", "loaded": True,
        "packed": "x",
    }  # fmt: skip


def test_a_module_already_imported_is_left_alone() -> None:
    code = (
        "import json, ssl\n"
        "from stas.deferred import defer_imports\n"
        "before = ssl\n"
        "print(json.dumps({'deferred': defer_imports(), 'same': __import__('ssl') is before}))\n"
    )
    result = run_fresh(code, prelude="")
    assert "ssl" not in result["deferred"]  # type: ignore[operator]
    assert result["same"] is True


def test_the_daemons_imports_spawn_nothing_and_leave_process_helpers_out() -> None:
    """trio's thread-name lookup no longer runs `ldconfig -p` (a fork and exec at every start)
    nor imports subprocess/tempfile/locale; idna waits for a non-ASCII host name; shutil waits
    for the ownership registry's first removal."""
    code = (
        "spawned = []\n"
        "sys.addaudithook(lambda ev, args: ev in ('subprocess.Popen', 'os.posix_spawn')\n"
        "                 and spawned.append(str(args[0])))\n" + DAEMON_IMPORTS +
        "import trio._core._thread_cache as tc\n"
        "real = [m for m in ('subprocess', 'tempfile', 'locale', 'idna.core', 'shutil')\n"
        "        if m in sys.modules and '__getattr__' not in vars(sys.modules[m])]\n"
        "print(json.dumps({'spawned': spawned, 'loaded': real,\n"
        "                  'thread names': tc.set_os_thread_name is not None}))\n"
    )
    assert run_fresh(code) == {"spawned": [], "loaded": [], "thread names": True}


def test_process_helpers_work_on_first_use() -> None:
    """subprocess, tempfile, idna and ctypes.util through names bound before the real import;
    trio names its threads (shown in /proc) with the library the stand-in named."""
    code = (
        "import os, subprocess, tempfile, ctypes, ctypes.util, idna, trio\n"
        "from ctypes.util import find_library\n"
        "pthread = find_library('pthread')\n"
        "libc = ctypes.util.find_library('c')\n"
        "out = subprocess.run(['echo', 'hi'], capture_output=True, text=True).stdout\n"
        "with tempfile.NamedTemporaryFile() as f:\n"
        "    named = os.path.exists(f.name)\n"
        "async def main():\n"
        "    return await trio.to_thread.run_sync(lambda: open(\n"
        "        f'/proc/self/task/{__import__(\"threading\").get_native_id()}/comm').read())\n"
        "comm = trio.run(main)\n"
        "print(json.dumps({'pthread': os.path.exists(pthread), 'libc': libc, 'out': out,\n"
        "                  'named': named, 'idna': idna.encode('bücher.example').decode(),\n"
        "                  'thread': comm.startswith('<lambda> from')}))\n"
    )
    assert run_fresh(code) == {
        "pthread": True, "libc": "libc.so.6", "out": "hi\n", "named": True,
        "idna": "xn--bcher-kva.example", "thread": True,
    }  # fmt: skip


SELDOM = ("tokenize", "platform", "urllib.parse")


def test_the_daemons_imports_leave_tokenize_platform_and_urllib_out() -> None:
    """Deferred before logging's own imports: tokenize (linecache, inspect) until a traceback
    shows source lines; platform, whose two answers attrs and uuid read at import need none of
    its parsers; urllib.parse until pathlib's as_uri. stafd's `converter=bytes` needs no
    tokenize either (stas.attrs_cache.answer_builtin_signatures)."""
    code = DAEMON_IMPORTS + f"print(json.dumps({real_modules(SELDOM)}))\n"
    assert run_fresh(code) == []


ASK = """
import pathlib, platform, traceback, uuid, urllib.parse, attr._compat
answers = [platform.python_implementation(), platform.system(), attr._compat.PYPY,
           uuid._LINUX, urllib.parse.urlsplit('nvme+tcp://h:4420/p').port,
           pathlib.PurePosixPath('/a b').as_uri(), platform.machine()]
try:
    json.loads('{')
except ValueError as exc:
    answers.append(bool(traceback.extract_tb(exc.__traceback__)[-1].line))  # source shown
answers.append(""" + real_modules(SELDOM) + ")\n" + "print(json.dumps(answers))\n"


def test_the_stand_ins_answer_as_the_real_modules_and_load_on_first_use() -> None:
    """The same answers with and without the stand-ins; afterwards all three are real."""
    deferred = run_fresh(ASK)
    real = run_fresh(ASK, prelude="import json, sys\n")
    assert deferred == real
    assert deferred[:6] == ["CPython", "Linux", False, True, 4420, "file:///a%20b"]
    assert deferred[-2:] == [True, list(SELDOM)]


def test_a_dotted_stand_in_is_reached_through_its_package() -> None:
    """`import urllib.parse` binds urllib: its attribute is the stand-in, then the module."""
    code = (
        "import urllib\n"
        "stub = urllib.parse\n"
        "first = '__getattr__' in vars(stub)\n"
        "parts = urllib.parse.urlsplit('http://x/y')\n"
        "print(json.dumps([first, parts.path, urllib.parse is sys.modules['urllib.parse'],\n"
        "                  stub.urlsplit is urllib.parse.urlsplit]))\n"
    )
    assert run_fresh(code) == [True, "/y", True, True]
