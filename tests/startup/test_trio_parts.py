"""stas.deferred.import_trio: trio's TLS, DTLS, subprocess and async-file parts stay unloaded
in a daemon that does not use them (12-13 M instructions of each daemon's imports, issue 8),
and the names trio binds from them work, with trio's public metadata, when first used."""

from __future__ import annotations

from stas.deferred import TRIO_PARTS
from tests.startup.helpers import run_fresh

NAMES = (
    "DTLSChannel", "DTLSChannelStatistics", "DTLSEndpoint", "open_file", "wrap_file",
    "open_ssl_over_tcp_listeners", "open_ssl_over_tcp_stream", "serve_ssl_over_tcp", "Path",
    "PosixPath", "WindowsPath", "NeedHandshakeError", "SSLListener", "SSLStream", "Process",
    "run_process",
)  # fmt: skip

USE = f"""
import trio, trio.lowlevel
def meta(obj):
    return [obj.__module__, obj.__qualname__]
names = {{n: meta(getattr(trio, n)) for n in {NAMES!r}}}
names["lowlevel.open_process"] = meta(trio.lowlevel.open_process)
async def main():
    done = await trio.run_process(["echo", "hi"], capture_stdout=True)
    async with await trio.open_file("/proc/self/comm") as f:
        comm = await f.read()
    proc = await trio.lowlevel.open_process(["true"])
    return [done.stdout.decode(), comm == await trio.Path("/proc/self/comm").read_text(),
            await proc.wait()]
used = trio.run(main)
import trio._ssl, trio._path
same = [trio._ssl.SSLStream is trio.SSLStream, trio._path.Path is trio.Path,
        trio._dtls.DTLSEndpoint is trio.DTLSEndpoint]
print(json.dumps({{"names": names, "used": used, "same": same}}))
"""

LAZY = f"""
import stas.main
with stas.main._recorded_attrs_code():
    stas.main._import_trio()
    import stas.stafd, stas.stacd
loaded = [p for p in {TRIO_PARTS!r} if p in sys.modules]
"""


def test_the_daemons_imports_leave_trios_unused_parts_out() -> None:
    code = LAZY + "print(json.dumps(loaded))\n"
    assert run_fresh(code) == []


def test_the_parts_work_on_first_use_with_trios_metadata() -> None:
    """Subprocesses, async files and paths run; every name has the __module__/__qualname__ of
    an eager `import trio` (compared with one); the parts' own modules hold the same objects."""
    lazy = run_fresh(LAZY + USE)
    eager = run_fresh(USE, prelude="import json, sys\n")
    assert lazy == eager
    assert lazy["used"] == ["hi\n", True, 0] and lazy["same"] == [True, True, True]
    assert lazy["names"]["SSLStream"] == ["trio", "SSLStream"]
    assert lazy["names"]["lowlevel.open_process"] == ["trio.lowlevel", "open_process"]


def test_other_attributes_still_reach_trios_own_lookup() -> None:
    """An unknown name is still trio's AttributeError; trio's deprecation hook stays first."""
    code = LAZY + (
        "import trio\n"
        "try:\n"
        "    trio.no_such_name\n"
        "    text = ''\n"
        "except AttributeError as exc:\n"
        "    text = str(exc)\n"
        "print(json.dumps([text, trio.sleep.__module__, 'Path' in vars(trio)]))\n"
    )
    assert run_fresh(code) == ["module 'trio' has no attribute 'no_such_name'", "trio", False]
