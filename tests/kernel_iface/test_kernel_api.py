"""Kernel interface: option validation (no injection possible), matching, sysfs, the fake."""

from __future__ import annotations

import errno

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from stas.kernel.api import ConnectRequest, KernelController, KernelError, controller_matches
from stas.kernel.fake import FakeKernel
from stas.kernel.options import InvalidOption
from stas.kernel.sysfs import parse_address, read_controllers

HOSTNQN = "nqn.2014-08.org.nvmexpress:uuid:0c9e3a3e-5b0f-4c4e-9d0e-2e1c6a1b7f10"
SECRET = "DHHC-1:00:ia6zGodOr5SEG8f+M2DLUeJFMJ4UUJpo1iwxX2mzBRGrRmlq:"


def req(**kw) -> ConnectRequest:
    base = dict(
        transport="tcp", traddr="::1", trsvcid="4420", subsysnqn="klingons", hostnqn=HOSTNQN
    )
    return ConnectRequest(**(base | kw))


def test_option_string_exact() -> None:
    r = req(
        hostid="0c9e3a3e-5b0f-4c4e-9d0e-2e1c6a1b7f10",
        host_iface="eth0",
        kato=30,
        ctrl_loss_tmo=-1,
        hdr_digest=True,
        dhchap_secret=SECRET,
    )
    assert r.option_string() == (
        f"transport=tcp,traddr=::1,trsvcid=4420,nqn=klingons,hostnqn={HOSTNQN},"
        "hostid=0c9e3a3e-5b0f-4c4e-9d0e-2e1c6a1b7f10,host_iface=eth0,keep_alive_tmo=30,"
        "ctrl_loss_tmo=-1,hdr_digest,dhchap_secret=<redacted>"
    )
    assert SECRET in r.option_string(redact=False)
    assert SECRET not in repr(r)


@pytest.mark.parametrize(
    "field,value",
    [
        ("subsysnqn", "klingons,hostnqn=nqn.evil"),
        ("subsysnqn", "a=b"),
        ("subsysnqn", "line\nbreak"),
        ("subsysnqn", "x" * 224),
        ("traddr", "1.2.3.4,ctrl_loss_tmo=0"),
        ("traddr", "::1%eth0"),
        ("trsvcid", "4420,x"),
        ("trsvcid", "0"),
        ("host_iface", "eth0,nr_io_queues=1"),
        ("host_iface", "a/b"),
        ("hostnqn", "not-an-nqn"),
        ("hostid", "1234"),
        ("dhchap_secret", "DHHC-1:00:abc,=:"),
        ("queue_size", 8),
        ("kato", -5),
    ],
)
def test_bad_values_are_refused_by_name(field: str, value: object) -> None:
    with pytest.raises(InvalidOption) as info:
        req(**{field: value})
    assert info.value.field.startswith(field.split("_")[0]) or field in str(info.value)
    if "secret" in field:
        assert str(value) not in str(info.value)


TEXT = st.text(alphabet=st.characters(codec="utf-8"), max_size=60)


@given(
    field=st.sampled_from(
        ["traddr", "trsvcid", "subsysnqn", "hostnqn", "host_iface", "host_traddr", "hostid"]
    ),
    value=TEXT,
)
def test_no_value_can_inject_options(field: str, value: str) -> None:
    good = req(host_iface="eth0", host_traddr="::2", hostid="0c9e3a3e-5b0f-4c4e-9d0e-2e1c6a1b7f10")
    try:
        r = req(
            **{
                "host_iface": "eth0",
                "host_traddr": "::2",
                "hostid": "0c9e3a3e-5b0f-4c4e-9d0e-2e1c6a1b7f10",
                field: value,
            }
        )
    except InvalidOption:
        return
    s = r.option_string()
    if value == "":
        return
    assert s.count(",") == good.option_string().count(",")
    assert "\n" not in s and "\0" not in s
    assert all(tok.count("=") <= 1 for tok in s.split(","))


def test_matching_rules() -> None:
    c = KernelController(
        device="nvme3",
        transport="tcp",
        traddr="::ffff:10.0.0.1",
        trsvcid="4420",
        subsysnqn="klingons",
        hostnqn=HOSTNQN,
        src_addr="10.0.0.9",
        host_iface="eth1",
    )
    kw = dict(
        transport="tcp", traddr="10.0.0.1", trsvcid="4420", subsysnqn="klingons", hostnqn=HOSTNQN
    )
    assert controller_matches(c, **kw)
    assert controller_matches(c, **kw, host_traddr="10.0.0.9", host_iface="eth1")
    assert not controller_matches(c, **kw | {"host_traddr": "10.0.0.8"})
    assert not controller_matches(c, **kw | {"host_iface": "eth2"})
    assert not controller_matches(c, **kw | {"hostnqn": "nqn.other"})
    assert not controller_matches(c, **kw | {"trsvcid": "4421"})
    fc = KernelController(
        device="nvme4", transport="fc", traddr="nn-0x20000090FA:pn-0x1", subsysnqn="s"
    )
    assert controller_matches(
        fc,
        transport="fc",
        traddr="NN-0x20000090fa:PN-0x1",
        trsvcid="",
        subsysnqn="s",
        hostnqn=HOSTNQN,
    )


def test_sysfs_reader(tmp_path) -> None:
    def ctrl(name: str, **attrs: str) -> None:
        d = tmp_path / name
        d.mkdir()
        for k, v in attrs.items():
            (d / k).write_text(v + "\n")

    ctrl(
        "nvme0",
        transport="tcp",
        subsysnqn="nqn.2014-08.org.nvmexpress.discovery",
        address="traddr=::1,trsvcid=8009,src_addr=::1",
        cntrltype="discovery",
        state="live",
    )
    ctrl(
        "nvme2",
        transport="tcp",
        subsysnqn="klingons",
        cntrltype="io",
        address="traddr=10.0.0.1,trsvcid=4420,host_traddr=none,host_iface=eth0",
        hostnqn=HOSTNQN,
    )
    ctrl("nvme10", transport="pcie", subsysnqn="nqn.local", address="0000:01:00.0")
    (tmp_path / "nvme10" / "nvme10n1").mkdir()
    (tmp_path / "nvme-fabrics").mkdir()
    found = read_controllers(tmp_path)
    assert [c.device for c in found] == ["nvme0", "nvme2", "nvme10"]
    assert found[0].is_discovery_controller and found[0].src_addr == "::1"
    assert found[1].is_io_controller and found[1].host_iface == "eth0"
    assert found[1].host_traddr == "" and found[1].dctype == ""  # 'none' and a missing attr
    assert found[2].has_namespaces and found[2].is_io_controller
    assert parse_address("traddr=1.2.3.4,trsvcid=none") == {"traddr": "1.2.3.4", "trsvcid": ""}
    assert read_controllers(tmp_path / "missing") == []


async def test_fake_kernel_behaves_like_the_kernel() -> None:
    k = FakeKernel()
    a = await k.connect(req())
    assert a.device == "nvme0" and a.is_io_controller
    with pytest.raises(KernelError) as info:
        await k.connect(req())
    assert info.value.errno == errno.EALREADY
    k.fail_next(errno.ECONNREFUSED, when=lambda r: r.subsysnqn == "starfleet")
    with pytest.raises(KernelError):
        await k.connect(req(subsysnqn="starfleet"))
    b = await k.connect(req(subsysnqn="starfleet"))
    assert b.device == "nvme1"
    await k.disconnect("nvme0")
    c = await k.connect(req(subsysnqn="x"))
    assert c.device == "nvme0"  # lowest free name, like the kernel
    events = []
    while True:
        try:
            events.append(k.events.receive_nowait())
        except trio.WouldBlock:
            break
    assert [(e.action, e.device) for e in events] == [
        ("add", "nvme0"),
        ("add", "nvme1"),
        ("remove", "nvme0"),
        ("add", "nvme0"),
    ]
    k.emit_aen("nvme1")
    assert k.events.receive_nowait().aen == 0x70F002
