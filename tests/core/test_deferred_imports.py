"""stas.logsetup.defer_imports: a daemon that uses no TLS does not map OpenSSL (issue 8 RSS),
and everything that needs ssl/hmac/hashlib still gets the real modules on first use.

Each check runs a fresh interpreter (the test process has imported ssl long ago).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_python(code: str) -> dict[str, object]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, timeout=60)  # fmt: skip
    assert out.returncode == 0, out.stderr
    result: dict[str, object] = json.loads(out.stdout.splitlines()[-1])
    return result


PRELUDE = """
import io, json, sys
from stas.logsetup import setup_logging
setup_logging("stacd", syslog=False, tron=False, stream=io.StringIO())
"""


def test_the_daemons_imports_load_no_openssl() -> None:
    """trio (ssl, hmac), both daemons and stafd's userspace host (DH-HMAC-CHAP included)
    imported after logging is set up: no libssl, no libcrypto."""
    code = PRELUDE + (
        "import trio, stas.stacd, stas.stafd, stas.nvme.session, stas.nvme.host_ops\n"
        "maps = open('/proc/self/maps').read()\n"
        "exts = ('_ssl', '_hashlib', '_bz2', '_lzma')\n"
        "print(json.dumps({'ext': [m for m in exts if m in sys.modules],\n"
        "                  'libcrypto': 'libcrypto' in maps}))\n"
    )
    assert run_python(code) == {"ext": [], "libcrypto": False}


def test_deferred_modules_work_on_first_use() -> None:
    """TLS context, HMAC, hashes and compression through names bound before the real import
    happened."""
    code = PRELUDE + (
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
    assert run_python(code) == {
        "same": True, "mac": "b60090e3", "sha": "e3b0c442", "real": "type", "loaded": True,
        "packed": "x",
    }  # fmt: skip


def test_a_module_already_imported_is_left_alone() -> None:
    code = (
        "import json, ssl\n"
        "from stas.logsetup import defer_imports\n"
        "before = ssl\n"
        "print(json.dumps({'deferred': defer_imports(), 'same': __import__('ssl') is before}))\n"
    )
    result = run_python(code)
    assert "ssl" not in result["deferred"]  # type: ignore[operator]
    assert result["same"] is True


def test_the_daemons_imports_spawn_nothing_and_leave_process_helpers_out() -> None:
    """trio's thread-name lookup no longer runs `ldconfig -p` (a fork and exec at every start)
    nor imports subprocess/tempfile/locale; idna waits for a non-ASCII host name; shutil waits
    for the ownership registry's first removal."""
    code = PRELUDE + (
        "spawned = []\n"
        "sys.addaudithook(lambda ev, args: ev in ('subprocess.Popen', 'os.posix_spawn')\n"
        "                 and spawned.append(str(args[0])))\n"
        "import trio, stas.stacd, stas.stafd, stas.nvme.session, stas.nvme.host_ops\n"
        "import trio._core._thread_cache as tc\n"
        "real = [m for m in ('subprocess', 'tempfile', 'locale', 'idna.core', 'shutil')\n"
        "        if m in sys.modules and '__getattr__' not in vars(sys.modules[m])]\n"
        "print(json.dumps({'spawned': spawned, 'loaded': real,\n"
        "                  'thread names': tc.set_os_thread_name is not None}))\n"
    )
    assert run_python(code) == {"spawned": [], "loaded": [], "thread names": True}


def test_process_helpers_work_on_first_use() -> None:
    """subprocess, tempfile, idna and ctypes.util through names bound before the real import;
    trio names its threads (shown in /proc) with the library the stand-in named."""
    code = PRELUDE + (
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
    assert run_python(code) == {
        "pthread": True, "libc": "libc.so.6", "out": "hi\n", "named": True,
        "idna": "xn--bcher-kva.example", "thread": True,
    }  # fmt: skip
