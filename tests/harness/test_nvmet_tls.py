"""nvmet.py's TLS parts: a tcp port with addr_tsas/addr_treq, an allowed host's TLS PSK put
into the .nvme keyring per (host, subsystem), the key never printed, bad values refused."""

from __future__ import annotations

from pathlib import Path

import nvmet
import pytest
from nvmet import InsertPsk, Write, plan_create, render
from nvmet_config import NvmetConfError, parse_nvmet_conf

from stas.nvme.tls_psk import ConfiguredPsk, format_interchange

PSK = format_interchange(ConfiguredPsk(bytes(range(32)), 1))
CFS = Path("/cfs")


def conf(port_extra: str = "'tsas': 'tls1.3'", host: str = f"'psk': '{PSK}'") -> str:
    return f"""{{
 'ports': [{{'id': 2, 'trtype': 'tcp', 'traddr': '127.0.0.1', 'trsvcid': 4420, {port_extra}}}],
 'subsystems': [
   {{'subsysnqn': 'sealed', 'port': 2, 'namespaces': [1],
     'allowed_hosts': [{{'nqn': 'nqn.h1', {host}}}, {{'nqn': 'nqn.h2'}}]}},
   {{'subsysnqn': 'vault', 'port': 2, 'namespaces': [1],
     'allowed_hosts': [{{'nqn': 'nqn.h1'}}]}},
 ]}}"""


def test_tls_port_attributes_come_before_the_port_is_enabled() -> None:
    ops = plan_create(parse_nvmet_conf(conf("'tsas': 'tls1.3', 'treq': 'required'")), CFS)
    port = CFS / "nvmet/ports/2"
    writes = [op.path for op in ops if isinstance(op, Write)]
    tsas, treq = writes.index(port / "addr_tsas"), writes.index(port / "addr_treq")
    assert tsas < treq
    link = next(
        i for i, op in enumerate(ops) if "ports/2/subsystems" in str(getattr(op, "link", ""))
    )
    assert ops.index(Write(port / "addr_treq", "required")) < link  # before the port goes live


def test_a_hosts_psk_is_inserted_for_each_subsystem_naming_it_with_it() -> None:
    ops = plan_create(parse_nvmet_conf(conf()), CFS)
    inserts = [op for op in ops if isinstance(op, InsertPsk)]
    assert [(i.hostnqn, i.subnqn) for i in inserts] == [("nqn.h1", "sealed")]
    shown = render(inserts[0])
    assert shown.startswith("nvme check-tls-key --insert --hostnqn=nqn.h1 --subsysnqn=sealed")
    assert PSK not in shown and PSK not in repr(inserts[0]) and "<secret>" in shown
    hosts = [op for op in ops if getattr(op, "path", None) == CFS / "nvmet/hosts/nqn.h1"]
    assert len(hosts) == 1  # one hosts/<nqn> though the PSK differs per subsystem


def test_dry_run_never_prints_the_psk(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "tls.conf"
    path.write_text(conf())
    cfs = tmp_path / "cfs"
    cfs.mkdir()
    assert nvmet.main(["--configfs", str(cfs), "create", "-d", "-f", str(path)]) == 0
    out = capsys.readouterr().out
    assert "echo -n tls1.3 > " in out and "check-tls-key --insert" in out
    assert PSK not in out and PSK.split(":")[2] not in out


def test_emulated_create_skips_the_keyring(tmp_path: Path) -> None:
    """A plain directory has no keyring with it: the PSK step is a no-op there."""
    path = tmp_path / "tls.conf"
    path.write_text(conf())
    cfs = tmp_path / "cfs"
    cfs.mkdir()
    assert nvmet.main(["--configfs", str(cfs), "--no-modprobe", "create", "-f", str(path)]) == 0
    assert (cfs / "nvmet/ports/2/addr_tsas").read_text() == "tls1.3"


def test_the_conf_round_trips_with_tls() -> None:
    parsed = parse_nvmet_conf(conf("'tsas': 'tls1.3', 'treq': 'not required'"))
    again = parse_nvmet_conf(repr(parsed.as_dict()))
    assert again == parsed
    assert again.ports[0].tsas == "tls1.3" and again.ports[0].treq == "not required"
    assert again.subsystems[0].allowed_hosts[0].psk == PSK
    assert PSK not in repr(parsed)


@pytest.mark.parametrize(
    ("port_extra", "host", "message"),
    [
        ("'tsas': 'tls1.2'", f"'psk': '{PSK}'", "tsas"),
        ("'treq': 'maybe'", f"'psk': '{PSK}'", "treq"),
        ("'tsas': 'tls1.3'", "'psk': 'NVMeTLSkey-1:01:AAAA:'", "is not a TLS PSK"),
        ("'tsas': 'tls1.3'", f"'psk': '{PSK[:20]}B{PSK[21:]}'", "CRC-32"),
    ],
)
def test_bad_tls_values_are_refused_without_echoing_keys(
    port_extra: str, host: str, message: str
) -> None:
    with pytest.raises(NvmetConfError) as info:
        parse_nvmet_conf(conf(port_extra, host))
    assert message in str(info.value)
    assert PSK.split(":")[2][:20] not in str(info.value)


def test_tsas_is_for_tcp_only() -> None:
    text = "{'ports': [{'id': 1, 'trtype': 'loop', 'tsas': 'tls1.3'}], 'subsystems': []}"
    with pytest.raises(NvmetConfError, match="tsas"):
        parse_nvmet_conf(text)
