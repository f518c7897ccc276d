"""The userspace discovery host against hostile peers over real loopback TCP.

Each fault comes from the simulator (``sim_faults``) or from the hostile proxy in front of it
(``sim_hostile``). The host must end with one clear error naming the peer, never hang past
its timeouts, never allocate what a peer claims, and never take a broken page as valid.
Timeouts are real here (real sockets), so they are kept short.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import trio

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "nvmet-harness"))

from nvmet_config import parse_nvmet_conf  # noqa: E402
from sim_faults import Faults  # noqa: E402
from sim_hostile import HostileError, open_hostile_proxy, parse_mode  # noqa: E402
from sim_server import open_simulator  # noqa: E402

from stas.nvme.errors import (  # noqa: E402
    ConnectionLost,
    DiscoveryError,
    NvmeStatusError,
    ProtocolError,
    StepTimeout,
)
from stas.nvme.host_ops import SessionOptions  # noqa: E402
from stas.nvme.session import DiscoverySession  # noqa: E402
from tests.helpers.sim import host_identity  # noqa: E402

HOST = host_identity("00000000-0000-4000-8000-0000000000f1")
CONF = (
    "{'ports': [{'id': 1, 'traddr': '::1', 'trsvcid': 8009, 'trtype': 'tcp'}],"
    " 'subsystems': [{'subsysnqn': 'klingons', 'port': 1, 'namespaces': [1]},"
    " {'subsysnqn': 'starfleet', 'port': 1, 'namespaces': [1]}]}"
)
FAST = SessionOptions(kato_ms=0, connect_timeout=1.0, command_timeout=1.0, register=False)


NO_FAULTS = Faults()


async def fetch(
    mode: str, faults: Faults = NO_FAULTS, options: SessionOptions = FAST, dctype: str = "ddc"
) -> tuple[object, int]:
    """(log page or the exception raised, connections the proxy accepted)."""
    async with (
        open_simulator(parse_nvmet_conf(CONF), ephemeral=True, faults=faults, dctype=dctype) as sim,
        open_hostile_proxy(sim.endpoint(1), mode) as proxy,
    ):
        try:
            with trio.fail_after(10):  # the host's own timeouts must end it well before
                async with DiscoverySession.open(
                    "::1", proxy.port, host=HOST, options=options
                ) as session:
                    result: object = await session.get_log_page()
        except (DiscoveryError, ProtocolError, NvmeStatusError, OSError) as exc:
            result = exc
        return result, proxy.accepted


async def test_pass_through_proxy_is_transparent() -> None:
    page, accepted = await fetch("pass")
    assert {e.subnqn for e in page.entries} == {"klingons", "starfleet"}
    assert accepted == 1


async def test_digests_survive_the_proxy() -> None:
    page, _ = await fetch("pass", options=SessionOptions(**{**_fields(FAST), "hdgst": True}))
    assert len(page.entries) == 2


def _fields(opts: SessionOptions) -> dict[str, object]:
    import attrs

    return attrs.asdict(opts, recurse=False)


@pytest.mark.parametrize(
    ("mode", "expected", "text"),
    [
        ("never-answer", StepTimeout, ""),
        ("reset-mid-pdu", (ConnectionLost, OSError), ""),
        ("drop-mid-log-page", ConnectionLost, ""),
        ("numrec=18446744073709551615", ProtocolError, "18446744073709551615"),
        ("numrec=100000", ProtocolError, "100000"),
    ],
)
async def test_hostile_peer_ends_in_one_clear_error(mode: str, expected, text: str) -> None:
    result, accepted = await fetch(mode)
    assert isinstance(result, expected), result
    assert text in str(result)
    assert accepted == 1  # the session itself never retries behind the caller's back


async def test_bad_header_digest_is_refused() -> None:
    options = SessionOptions(**{**_fields(FAST), "hdgst": True})
    result, _ = await fetch("bad-digest", options=options)
    assert isinstance(result, (ProtocolError, ConnectionLost)), result
    assert "digest" in str(result).lower()


async def test_genctr_that_always_moves_gives_up_after_bounded_tries() -> None:
    options = SessionOptions(**{**_fields(FAST), "max_genctr_retries": 3})
    result, _ = await fetch("pass", faults=Faults(genctr_bump_on_read=10**6), options=options)
    assert isinstance(result, (ProtocolError, DiscoveryError)), result
    assert "GENCTR" in str(result) or "genctr" in str(result).lower()


async def test_corrupt_page_is_refused_not_allocated() -> None:
    result, _ = await fetch("pass", faults=Faults(corrupt_log_page=True))
    assert isinstance(result, ProtocolError), result


async def test_cdc_that_rejects_dim_is_still_read(caplog: pytest.LogCaptureFixture) -> None:
    """As upstream: the refusal is logged once with its status, the log page is read."""
    options = SessionOptions(**{**_fields(FAST), "register": True})
    result, accepted = await fetch("dim-reject", options=options, dctype="cdc")
    assert {e.subnqn for e in result.entries} == {"klingons", "starfleet"}, result
    assert accepted == 1
    refused = [r.getMessage() for r in caplog.records if "DIM registration refused" in r.message]
    assert len(refused) == 1 and "Invalid Field" in refused[0]


def test_mode_parsing_names_the_bad_value() -> None:
    assert parse_mode("numrec=0x10") == ("numrec", 16)
    with pytest.raises(HostileError, match="'nope'"):
        parse_mode("nope")
    with pytest.raises(HostileError, match="'x'"):
        parse_mode("numrec=x")
    with pytest.raises(HostileError, match="takes no value"):
        parse_mode("pass=1")
