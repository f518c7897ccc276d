"""stafd's userspace NVMe/TCP host, as loaded for a first DC connection without
authentication or digests (issue 8 RSS): no DH-HMAC-CHAP protocol modules, no CRC32C tables;
both arrive when used."""

from __future__ import annotations

from pathlib import Path

from tests.startup.helpers import run_fresh


def test_the_host_loads_no_auth_protocol_and_no_crc_tables_until_used(tmp_path: Path) -> None:
    code = (
        "import stas.stafd, stas.nvme.session, stas.nvme.host_ops\n"
        "from stas.nvme import crc32c\n"
        "before = {'auth': [m for m in ('stas.nvme.auth', 'stas.nvme.auth_exchange')\n"
        "                   if m in sys.modules], 'tables': len(crc32c._TABLES)}\n"
        "check = crc32c.crc32c(b'123456789')  # the CRC-32C check value: E3069283\n"
        "from stas.nvme.auth import auth_required\n"
        "from stas.nvme.auth_exchange import authenticate\n"
        "print(json.dumps({'before': before, 'check': hex(check),\n"
        "                  'tables': len(crc32c._TABLES), 'asks': auth_required(1 << 17)}))\n"
    )
    assert run_fresh(code, tmp_path) == {
        "before": {"auth": [], "tables": 0}, "check": "0xe3069283", "tables": 8, "asks": True,
    }  # fmt: skip


def test_connecting_and_resolving_do_not_load_the_idna_codec(tmp_path: Path) -> None:
    """A str host handed to the standard library's getaddrinfo is encoded with the "idna"
    codec (stringprep and Unicode tables: ~0.8 MB of RSS); an ASCII host goes as bytes."""
    code = (
        "import trio, stas.stafd, stas.nvme.session\n"
        "from stas.nvme.host_ops import open_stream\n"
        "from stas.resolve import _getaddrinfo\n"
        "async def main():\n"
        "    sock = trio.socket.socket()\n"  # not open_tcp_listeners: it resolves a str
        "    await sock.bind(('127.0.0.1', 0))\n"
        "    sock.listen()\n"
        "    listener = trio.SocketListener(sock)\n"
        "    port = sock.getsockname()[1]\n"
        "    stream = await open_stream('127.0.0.1', str(port))\n"
        "    peer = stream.socket.getpeername()[1] == port\n"
        "    await stream.aclose()\n"
        "    await listener.aclose()\n"
        "    return peer, await _getaddrinfo('localhost')\n"
        "peer, addresses = trio.run(main)\n"
        "print(json.dumps({'peer': peer, 'loopback': bool(set(addresses) & {'127.0.0.1', '::1'}),\n"
        "                  'codec': 'encodings.idna' in sys.modules}))\n"
    )
    assert run_fresh(code, tmp_path) == {"peer": True, "loopback": True, "codec": False}
