"""nvmet.py against a plain directory standing in for configfs (--configfs, --no-modprobe)."""

from __future__ import annotations

import os
import tempfile
from ast import literal_eval
from pathlib import Path

import nvmet
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nvmet import (
    Executor,
    Mkdir,
    Modprobe,
    ModprobeRemove,
    NvmetError,
    Rmdir,
    Symlink,
    Unlink,
    Write,
    plan_clean,
    plan_create,
    read_state,
    render,
)
from nvmet_config import AllowedHost, NvmetConf, Port, Subsystem, load_nvmet_conf

from tests.helpers.secrets import dhchap_key
from tests.helpers.sim import DELL

KEY = "DHHC-1:00:ia6zGodOr4SEG0Zzaw398rpY0wqipUWj4jWjUh4HWUz6aQ2n:"
# A 48-byte controller secret with its CRC-32, as nvme gen-dhchap-key -l 48 -m 2 prints it.
CTRL_KEY = dhchap_key(b"c" * 48, "02")
AUTH_CONF = f"""{{
 'ports': [{{'id': 2, 'trtype': 'tcp', 'traddr': '127.0.0.1', 'trsvcid': '4420'}},
           {{'id': 3, 'trtype': 'loop'}}],
 'subsystems': [
   {{'subsysnqn': 'secure', 'port': 2, 'namespaces': [1, 2],
     'allowed_hosts': [{{'nqn': 'nqn.host1', 'key': '{KEY}', 'ctrl_key': '{CTRL_KEY}',
                        'hash': 'sha384', 'dhgroup': 'ffdhe2048'}},
                       {{'nqn': 'nqn.host2'}}]}},
   {{'subsysnqn': 'looped', 'port': 3, 'namespaces': [5]}},
   {{'subsysnqn': 'hidden', 'namespaces': []}},
 ]}}"""


def tree(root: Path) -> dict[str, object]:
    """Every entry under root: dirs as 'dir', files as their text, symlinks as ('->', target)."""
    out: dict[str, object] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            if path.is_symlink():
                out[rel] = ("->", os.readlink(path))
            elif path.is_dir():
                out[rel] = "dir"
            else:
                out[rel] = path.read_text()
    return out


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = nvmet.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def cfs(tmp_path: Path) -> Path:
    d = tmp_path / "configfs"
    d.mkdir()
    return d


@pytest.fixture
def auth_conf(tmp_path: Path) -> Path:
    p = tmp_path / "auth.conf"
    p.write_text(AUTH_CONF)
    return p


def _subsys(nqn: str, dev: int) -> dict[str, object]:
    s = f"nvmet/subsystems/{nqn}"
    return {
        s: "dir",
        f"{s}/attr_allow_any_host": "1",
        f"{s}/namespaces": "dir",
        f"{s}/namespaces/1": "dir",
        f"{s}/namespaces/1/device_path": f"/dev/nullb{dev}",
        f"{s}/namespaces/1/enable": "1",
        f"nvmet/ports/1/subsystems/{nqn}": ("->", f"../../../subsystems/{nqn}"),
    }


DEFAULT_TREE = {
    "nvmet": "dir",
    "nvmet/ports": "dir",
    "nvmet/ports/1": "dir",
    "nvmet/ports/1/addr_trtype": "tcp",
    "nvmet/ports/1/addr_traddr": "::1",
    "nvmet/ports/1/addr_trsvcid": "8009",
    "nvmet/ports/1/addr_adrfam": "ipv6",
    "nvmet/ports/1/subsystems": "dir",
    "nvmet/subsystems": "dir",
    **_subsys(DELL, 0),
    **_subsys("klingons", 1),
    **_subsys("starfleet", 2),
}


def test_create_default_conf_builds_exact_tree(
    cfs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "--configfs", str(cfs), "--no-modprobe", "create")
    assert (code, err) == (0, "")
    assert tree(cfs) == DEFAULT_TREE
    # Links resolve to the subsystem directories, as configfs links do.
    link = cfs / "nvmet/ports/1/subsystems/klingons"
    assert link.resolve() == (cfs / "nvmet/subsystems/klingons").resolve()
    assert out.splitlines()[0] == f"mkdir -p {cfs}/nvmet/ports/1"


def test_create_with_hosts_loop_and_unexposed(
    cfs: Path, auth_conf: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(
        capsys, "create", "-f", str(auth_conf), "--configfs", str(cfs), "--no-modprobe"
    )
    assert (code, err) == (0, "")
    sec = "nvmet/subsystems/secure"
    assert tree(cfs) == {
        "nvmet": "dir",
        "nvmet/ports": "dir",
        "nvmet/ports/2": "dir",
        "nvmet/ports/2/addr_trtype": "tcp",
        "nvmet/ports/2/addr_traddr": "127.0.0.1",
        "nvmet/ports/2/addr_trsvcid": "4420",
        "nvmet/ports/2/addr_adrfam": "ipv4",
        "nvmet/ports/2/subsystems": "dir",
        "nvmet/ports/2/subsystems/secure": ("->", "../../../subsystems/secure"),
        "nvmet/ports/3": "dir",
        "nvmet/ports/3/addr_trtype": "loop",
        "nvmet/ports/3/subsystems": "dir",
        "nvmet/ports/3/subsystems/looped": ("->", "../../../subsystems/looped"),
        "nvmet/hosts": "dir",
        "nvmet/hosts/nqn.host1": "dir",
        "nvmet/hosts/nqn.host1/dhchap_hash": "hmac(sha384)",
        "nvmet/hosts/nqn.host1/dhchap_dhgroup": "ffdhe2048",
        "nvmet/hosts/nqn.host1/dhchap_key": KEY,
        "nvmet/hosts/nqn.host1/dhchap_ctrl_key": CTRL_KEY,
        "nvmet/hosts/nqn.host2": "dir",
        "nvmet/subsystems": "dir",
        sec: "dir",
        f"{sec}/attr_allow_any_host": "0",
        f"{sec}/allowed_hosts": "dir",
        f"{sec}/allowed_hosts/nqn.host1": ("->", "../../../hosts/nqn.host1"),
        f"{sec}/allowed_hosts/nqn.host2": ("->", "../../../hosts/nqn.host2"),
        f"{sec}/namespaces": "dir",
        f"{sec}/namespaces/1": "dir",
        f"{sec}/namespaces/1/device_path": "/dev/nullb0",
        f"{sec}/namespaces/1/enable": "1",
        f"{sec}/namespaces/2": "dir",
        f"{sec}/namespaces/2/device_path": "/dev/nullb1",
        f"{sec}/namespaces/2/enable": "1",
        "nvmet/subsystems/looped": "dir",
        "nvmet/subsystems/looped/attr_allow_any_host": "1",
        "nvmet/subsystems/looped/namespaces": "dir",
        "nvmet/subsystems/looped/namespaces/5": "dir",
        "nvmet/subsystems/looped/namespaces/5/device_path": "/dev/nullb2",
        "nvmet/subsystems/looped/namespaces/5/enable": "1",
        "nvmet/subsystems/hidden": "dir",
        "nvmet/subsystems/hidden/attr_allow_any_host": "1",
    }
    assert (cfs / f"{sec}/allowed_hosts/nqn.host1").resolve() == (
        cfs / "nvmet/hosts/nqn.host1"
    ).resolve()


def test_dry_run_prints_commands_and_touches_nothing(
    cfs: Path, auth_conf: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "--configfs", str(cfs), "create", "-d", "-f", str(auth_conf))
    assert (code, err) == (0, "")
    assert list(cfs.iterdir()) == []
    n = f"{cfs}/nvmet"
    s = f"{n}/subsystems/secure"
    assert out.splitlines() == [
        "modprobe -r null_blk",
        "modprobe null_blk nr_devices=3",
        "modprobe nvmet",
        "modprobe nvmet_tcp",
        "modprobe nvme_loop",
        f"mkdir -p {n}/ports/2",
        f"echo -n tcp > {n}/ports/2/addr_trtype",
        f"echo -n 127.0.0.1 > {n}/ports/2/addr_traddr",
        f"echo -n 4420 > {n}/ports/2/addr_trsvcid",
        f"echo -n ipv4 > {n}/ports/2/addr_adrfam",
        f"mkdir -p {n}/ports/3",
        f"echo -n loop > {n}/ports/3/addr_trtype",
        f"mkdir -p {n}/hosts/nqn.host1",
        f"echo -n 'hmac(sha384)' > {n}/hosts/nqn.host1/dhchap_hash",
        f"echo -n ffdhe2048 > {n}/hosts/nqn.host1/dhchap_dhgroup",
        f"echo -n '<secret>' > {n}/hosts/nqn.host1/dhchap_key",
        f"echo -n '<secret>' > {n}/hosts/nqn.host1/dhchap_ctrl_key",
        f"mkdir -p {n}/hosts/nqn.host2",
        f"mkdir -p {s}",
        f"echo -n 0 > {s}/attr_allow_any_host",
        f"ln -s {n}/hosts/nqn.host1 {s}/allowed_hosts/nqn.host1",
        f"ln -s {n}/hosts/nqn.host2 {s}/allowed_hosts/nqn.host2",
        f"mkdir -p {s}/namespaces/1",
        f"echo -n /dev/nullb0 > {s}/namespaces/1/device_path",
        f"echo -n 1 > {s}/namespaces/1/enable",
        f"mkdir -p {s}/namespaces/2",
        f"echo -n /dev/nullb1 > {s}/namespaces/2/device_path",
        f"echo -n 1 > {s}/namespaces/2/enable",
        f"mkdir -p {n}/subsystems/looped",
        f"echo -n 1 > {n}/subsystems/looped/attr_allow_any_host",
        f"mkdir -p {n}/subsystems/looped/namespaces/5",
        f"echo -n /dev/nullb2 > {n}/subsystems/looped/namespaces/5/device_path",
        f"echo -n 1 > {n}/subsystems/looped/namespaces/5/enable",
        f"mkdir -p {n}/subsystems/hidden",
        f"echo -n 1 > {n}/subsystems/hidden/attr_allow_any_host",
        f"ln -s {n}/subsystems/secure {n}/ports/2/subsystems/secure",
        f"ln -s {n}/subsystems/looped {n}/ports/3/subsystems/looped",
    ]


def test_render_quotes_for_the_shell() -> None:
    assert render(Write(Path("/a b/c"), "x'y")) == "echo -n 'x'\"'\"'y' > '/a b/c'"
    assert render(Modprobe("null_blk", ("nr_devices=1",))) == "modprobe null_blk nr_devices=1"
    assert render(ModprobeRemove("nvmet")) == "modprobe -r nvmet"
    assert render(Unlink(Path("/x/l"))) == "rm /x/l"
    assert render(Rmdir(Path("/x/d"))) == "rmdir /x/d"
    assert render(Symlink("../../../s/q", Path("/c/n/p/1/subsystems/q"))) == (
        "ln -s /c/n/s/q /c/n/p/1/subsystems/q"
    )


def test_link_and_unlink_change_exactly_the_symlink(
    cfs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["--configfs", str(cfs), "--no-modprobe"]
    assert run(capsys, *base, "create")[0] == 0
    link = "nvmet/ports/1/subsystems/klingons"
    code, out, err = run(capsys, *base, "unlink", "-p", "1", "-s", "klingons")
    assert (code, out, err) == (0, f"rm {cfs}/{link}\n", "")
    expected = dict(DEFAULT_TREE)
    del expected[link]
    assert tree(cfs) == expected

    code, out, err = run(capsys, *base, "link", "--port", "1", "--subnqn", "klingons")
    assert (code, err) == (0, "")
    assert out == f"ln -s {cfs}/nvmet/subsystems/klingons {cfs}/{link}\n"
    assert tree(cfs) == DEFAULT_TREE

    code, out, _ = run(capsys, *base, "unlink", "-p", "1", "-s", "starfleet", "-d")
    assert (code, out) == (0, f"rm {cfs}/nvmet/ports/1/subsystems/starfleet\n")
    assert tree(cfs) == DEFAULT_TREE


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["link", "-p", "9", "-s", "klingons"], "unknown port 9 (existing ports: 1)"),
        (["link", "-p", "1", "-s", "vulcans"], "unknown subsystem 'vulcans'"),
        (["link", "-p", "1", "-s", "klingons"], "subsystem 'klingons' is already linked to port 1"),
        (["unlink", "-p", "9", "-s", "klingons"], "unknown port 9 (existing ports: 1)"),
        (["unlink", "-p", "1", "-s", "vulcans"], "unknown subsystem 'vulcans'"),
        (["unlink", "-p", "1", "-s", "hidden"], "subsystem 'hidden' is not linked to port 1"),
        (["create"], "port 1 already exists in {cfs}/nvmet; run 'nvmet.py clean' first"),
    ],
)
def test_user_errors_one_line_exit_1(
    cfs: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    base = ["--configfs", str(cfs), "--no-modprobe"]
    assert run(capsys, *base, "create")[0] == 0
    (cfs / "nvmet/subsystems/hidden").mkdir()
    before = tree(cfs)
    code, out, err = run(capsys, *base, *argv)
    assert (code, out) == (1, "")
    assert err == f"nvmet.py: {message.format(cfs=cfs)}\n"
    assert tree(cfs) == before


def test_create_refuses_existing_subsystem(cfs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (cfs / "nvmet/subsystems/starfleet").mkdir(parents=True)
    code, out, err = run(capsys, "--configfs", str(cfs), "--no-modprobe", "create")
    assert (code, out) == (1, "")
    assert err == (
        f"nvmet.py: subsystem 'starfleet' already exists in {cfs}/nvmet; "
        "run 'nvmet.py clean' first\n"
    )


def test_bad_conf_one_line_exit_1(
    cfs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.conf"
    bad.write_text("{'ports': [{'id': 1, 'trtype': 'tcpp'}]}")
    code, out, err = run(capsys, "--configfs", str(cfs), "--no-modprobe", "create", "-f", str(bad))
    assert (code, out) == (1, "")
    assert err == f"nvmet.py: {bad}: ports[0].trtype: 'tcpp' is not one of tcp, rdma, fc, loop\n"
    assert list(cfs.iterdir()) == []


def test_clean_empties_the_tree(
    cfs: Path, auth_conf: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["--configfs", str(cfs), "--no-modprobe"]
    assert run(capsys, *base, "create", "-f", str(auth_conf))[0] == 0
    code, out, err = run(capsys, *base, "clean")
    assert (code, err) == (0, "")
    # What configfs shows once everything is gone but nvmet is still loaded.
    assert tree(cfs) == {
        "nvmet": "dir",
        "nvmet/ports": "dir",
        "nvmet/subsystems": "dir",
        "nvmet/hosts": "dir",
    }
    n = f"{cfs}/nvmet"
    s = f"{n}/subsystems/secure"
    assert out.splitlines() == [
        f"rm {n}/ports/2/subsystems/secure",
        f"rm {n}/ports/3/subsystems/looped",
        f"rm {s}/allowed_hosts/nqn.host1",
        f"rm {s}/allowed_hosts/nqn.host2",
        f"rmdir {n}/subsystems/hidden",
        f"echo -n 0 > {n}/subsystems/looped/namespaces/5/enable",
        f"rmdir {n}/subsystems/looped/namespaces/5",
        f"rmdir {n}/subsystems/looped",
        f"echo -n 0 > {s}/namespaces/1/enable",
        f"rmdir {s}/namespaces/1",
        f"echo -n 0 > {s}/namespaces/2/enable",
        f"rmdir {s}/namespaces/2",
        f"rmdir {s}",
        f"rmdir {n}/hosts/nqn.host1",
        f"rmdir {n}/hosts/nqn.host2",
        f"rmdir {n}/ports/2",
        f"rmdir {n}/ports/3",
    ]
    # Nothing left: a second clean does nothing.
    assert run(capsys, *base, "clean") == (0, "", "")


def test_clean_dry_run_includes_module_removal(
    cfs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(capsys, "--configfs", str(cfs), "--no-modprobe", "create")[0] == 0
    before = tree(cfs)
    code, out, _ = run(capsys, "--configfs", str(cfs), "clean", "-d")
    assert code == 0
    lines = out.splitlines()
    assert lines[-6:] == [
        "modprobe -r nvmet_tcp",
        "modprobe -r nvmet_rdma",
        "modprobe -r nvmet_fc",
        "modprobe -r nvme_loop",
        "modprobe -r nvmet",
        "modprobe -r null_blk",
    ]
    assert len(lines) == 6 + 3 + 3 * 3 + 1  # links, 3 x (disable, rmdir ns, rmdir subsys), port
    assert tree(cfs) == before


def test_ls_prints_ports_and_subsystems(
    cfs: Path, auth_conf: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        run(capsys, "--configfs", str(cfs), "--no-modprobe", "create", "-f", str(auth_conf))[0] == 0
    )
    code, out, err = run(capsys, "--configfs", str(cfs), "ls")
    assert (code, err) == (0, "")
    assert max(len(line) for line in out.splitlines()) <= 120
    assert literal_eval(out) == {
        "ports": [
            {
                "id": 2,
                "trtype": "tcp",
                "traddr": "127.0.0.1",
                "trsvcid": "4420",
                "adrfam": "ipv4",
                "subsystems": ["secure"],
            },
            {
                "id": 3,
                "trtype": "loop",
                "traddr": "",
                "trsvcid": "",
                "adrfam": "",
                "subsystems": ["looped"],
            },
        ],
        "subsystems": [
            {
                "subsysnqn": "hidden",
                "attr_allow_any_host": 1,
                "namespaces": [],
                "allowed_hosts": [],
            },
            {
                "subsysnqn": "looped",
                "attr_allow_any_host": 1,
                "namespaces": [{"id": 5, "device_path": "/dev/nullb2", "enable": 1}],
                "allowed_hosts": [],
            },
            {
                "subsysnqn": "secure",
                "attr_allow_any_host": 0,
                "namespaces": [
                    {"id": 1, "device_path": "/dev/nullb0", "enable": 1},
                    {"id": 2, "device_path": "/dev/nullb1", "enable": 1},
                ],
                "allowed_hosts": ["nqn.host1", "nqn.host2"],
            },
        ],
    }
    assert KEY not in out  # ls never shows secrets


def test_ls_of_missing_tree(cfs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "--configfs", str(cfs / "absent"), "ls") == (
        0,
        "{'ports': [], 'subsystems': []}\n",
        "",
    )


def test_version_and_usage(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "-v") == (0, "nvmet.py 1.0\n", "")
    code, _, err = run(capsys, "link", "-p", "x", "-s", "a")
    assert code == 2
    assert "argument -p/--port: invalid int value: 'x'" in err


def test_non_root_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(nvmet.os, "geteuid", lambda: 1000)
    code, out, err = run(capsys, "create", "-f", str(tmp_path / "absent.conf"))
    assert (code, out) == (1, "")
    assert err == (
        "nvmet.py: must be run as root to change /sys/kernel/config or load modules "
        "(try -d/--dry-run)\n"
    )
    # A plain directory without modprobe needs no root.
    cfs = tmp_path / "cfs"
    code, _, err = run(capsys, "--configfs", str(cfs), "--no-modprobe", "create")
    assert (code, err) == (0, "")


def test_executor_modprobe_and_failures(tmp_path: Path) -> None:
    calls: list[list[str]] = []
    sys_module = tmp_path / "module"
    (sys_module / "nvmet").mkdir(parents=True)
    ex = Executor(emulate=True, run=calls.append, sys_module=sys_module)
    ex.apply(Modprobe("null_blk", ("nr_devices=2",)))
    ex.apply(ModprobeRemove("nvmet_tcp"))  # not loaded: skipped
    ex.apply(ModprobeRemove("nvmet"))
    assert calls == [["modprobe", "null_blk", "nr_devices=2"], ["modprobe", "-r", "nvmet"]]

    with pytest.raises(NvmetError) as err:
        ex.apply(Write(tmp_path / "no" / "such" / "attr", "1"))
    assert str(err.value) == f"echo -n 1 > {tmp_path}/no/such/attr: No such file or directory"
    (tmp_path / "d" / "l").mkdir(parents=True)
    os.symlink("x", tmp_path / "d" / "link")
    with pytest.raises(NvmetError, match=r"^rmdir .*/d: Directory not empty$"):
        ex.apply(Rmdir(tmp_path / "d"))
    assert (tmp_path / "d" / "link").is_symlink()


def test_run_command_reports_last_stderr_line() -> None:
    with pytest.raises(NvmetError) as err:
        nvmet.run_command(["sh", "-c", "echo first >&2; echo 'FATAL: no module' >&2; exit 1"])
    assert str(err.value).endswith(": FATAL: no module")
    nvmet.run_command(["true"])


def test_real_configfs_mode_links_with_absolute_target(tmp_path: Path) -> None:
    ex = Executor(emulate=False)
    ex.apply(Mkdir(tmp_path / "n" / "subsystems" / "s"))
    ex.apply(Symlink("../../../subsystems/s", tmp_path / "n" / "ports" / "1" / "subsystems" / "s"))
    assert os.readlink(tmp_path / "n/ports/1/subsystems/s") == str(tmp_path / "n/subsystems/s")


def test_is_configfs() -> None:
    assert not nvmet.is_configfs(Path(tempfile.gettempdir()))
    mounts = Path("/proc/self/mounts").read_text()
    if " /sys/kernel/config configfs " in mounts:
        assert nvmet.is_configfs(Path("/sys/kernel/config"))


# --- property: any valid conf builds, reads back and cleans up ------------------------------------

_names = st.text("abcxyz.:-0123456789", min_size=1, max_size=12).filter(
    lambda s: s not in (".", "..")
)


@st.composite
def confs(draw: st.DrawFn) -> NvmetConf:
    ids = draw(st.lists(st.integers(0, 65535), unique=True, max_size=3))
    ports = tuple(Port(i, "tcp", "::1", "8009", "ipv6") for i in ids)
    hosts = draw(st.lists(_names, unique=True, max_size=3))
    subsystems = []
    for nqn in draw(st.lists(_names, unique=True, max_size=4)):
        ns = tuple(draw(st.lists(st.integers(1, 2**32 - 2), unique=True, max_size=3)))
        allowed = draw(st.lists(st.sampled_from(hosts), unique=True)) if hosts else []
        port = draw(st.sampled_from([None, *ids]))
        subsystems.append(Subsystem(nqn, port, ns, tuple(AllowedHost(h, KEY) for h in allowed)))
    return NvmetConf(ports, tuple(subsystems))


@given(confs())
@settings(max_examples=60, deadline=None)
def test_create_read_clean_round_trip(conf: NvmetConf) -> None:
    with tempfile.TemporaryDirectory() as d:
        cfs = Path(d)
        ex = Executor(emulate=True)
        for op in plan_create(conf, cfs):
            if not isinstance(op, Modprobe):
                ex.apply(op)
        state = read_state(cfs)
        assert sorted(p.id for p in state.ports) == sorted(str(p.id) for p in conf.ports)
        for port in state.ports:
            linked = sorted(s.nqn for s in conf.subsystems if str(s.port) == port.id)
            assert sorted(port.subsystems) == linked
        assert {s.nqn for s in state.subsystems} == {s.nqn for s in conf.subsystems}
        devices = []
        for sub in conf.subsystems:
            got = state.subsystem(sub.nqn)
            assert got is not None
            assert sorted(int(n.nsid) for n in got.namespaces) == sorted(sub.namespaces)
            assert sorted(got.allowed_hosts) == sorted(h.nqn for h in sub.allowed_hosts)
            devices += [n.device_path for n in got.namespaces]
        assert sorted(devices) == sorted(f"/dev/nullb{k}" for k in range(conf.namespace_count))
        for op in plan_clean(state, cfs):
            if not isinstance(op, ModprobeRemove):
                ex.apply(op)
        assert read_state(cfs) == nvmet.TargetState()
        leftovers = {str(p.relative_to(cfs)) for p in cfs.rglob("*")}
        assert leftovers <= {"nvmet", "nvmet/ports", "nvmet/subsystems", "nvmet/hosts"}


def test_create_never_prints_dhchap_secrets(
    cfs: Path, auth_conf: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ("--configfs", str(cfs), "--no-modprobe", "create", "-f", str(auth_conf))
    code, out, err = run(capsys, *argv)
    assert code == 0, err
    assert (cfs / "nvmet/hosts/nqn.host1/dhchap_ctrl_key").read_text() == CTRL_KEY
    assert "dhchap_ctrl_key" in out
    assert KEY not in out + err and CTRL_KEY not in out + err
    assert KEY not in repr(plan_create(load_nvmet_conf(auth_conf), cfs))


def test_a_kernel_without_in_band_auth_is_named(tmp_path: Path) -> None:
    """On real configfs (emulate=False) a missing dhchap_* attribute means no auth support."""
    op = Write(tmp_path / "hosts" / "nqn.h" / "dhchap_key", KEY, secret=True)
    with pytest.raises(NvmetError) as err:
        Executor(emulate=False).apply(op)
    assert "this kernel's nvmet has no in-band authentication" in str(err.value)
    assert "--kernel 6.12" in str(err.value) and KEY not in str(err.value)
    other = Write(tmp_path / "missing" / "attr_allow_any_host", "1")
    with pytest.raises(NvmetError, match="No such file or directory"):
        Executor(emulate=False).apply(other)
