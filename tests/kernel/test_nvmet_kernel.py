"""nvmet.py, nvme-cli and our userspace discovery host against the real Linux nvmet target.

Runs inside the test VM only (see conftest.py): configfs is real, the target is the kernel's
nvmet-tcp on [::1]:8009 built from the shipped nvmet.conf, and nvme-cli is the reference host.
Every test starts from and leaves behind an empty target with no host controllers.
"""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
from ast import literal_eval
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nvmet as nvmet_py
import pytest

from stas.constants import WELL_KNOWN_DISC_NQN
from tests.helpers.sim import SEED_SUBSYSTEMS

REPO = Path(__file__).resolve().parents[2]
NVMET_PY = REPO / "nvmet-harness" / "nvmet.py"
NVMET = Path("/sys/kernel/config/nvmet")
PORT = NVMET / "ports" / "1"
SUBSYSTEMS = set(SEED_SUBSYSTEMS)
ADDRESS = ["-t", "tcp", "-a", "::1", "-s", "8009"]
# Log page entry subtypes as nvme-cli (libnvme) and our --json (upstream's dlpe) spell them.
SUBTYPE = {
    "referral": 1,
    "discovery subsystem referral": 1,
    "nvme subsystem": 2,
    "nvme": 2,
    "current discovery subsystem": 3,
    "discovery": 3,
}


def run(*argv: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in argv], cwd=REPO, capture_output=True, text=True, timeout=60, check=False
    )


def nvmet_script(*args: str) -> subprocess.CompletedProcess[str]:
    """nvmet.py as a program, through this interpreter (its real path: no slow pyenv shim)."""
    return run(sys.executable, NVMET_PY, *args)


def nvmet(*args: str) -> subprocess.CompletedProcess[str]:
    """nvmet.py's command line in this process: each interpreter start costs ~1.5 s in the VM."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = nvmet_py.main(list(args))
    return subprocess.CompletedProcess(["nvmet.py", *args], rc, out.getvalue(), err.getvalue())


def ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, f"{done.args} -> {done.returncode}\n{done.stdout}{done.stderr}"
    return done.stdout


def nvme_cli_records() -> list[dict[str, Any]]:
    return json.loads(ok(run("nvme", "discover", *ADDRESS, "-o", "json")))["records"]


def io_subsystems(records: list[dict[str, Any]]) -> set[str]:
    return {r["subnqn"] for r in records if SUBTYPE[r["subtype"]] == 2}


def linked() -> set[str]:
    return {p.name for p in (PORT / "subsystems").iterdir()}


def target_exists() -> bool:
    return any((NVMET / d).is_dir() and any((NVMET / d).iterdir()) for d in ("ports", "subsystems"))


def teardown() -> None:
    """No host controllers (they would keep reconnecting), then no target at all."""
    if any(Path("/sys/class/nvme").glob("nvme*")):
        ok(run("nvme", "disconnect-all"))
    if target_exists():
        ok(nvmet("clean"))


@pytest.fixture
def clean_kernel() -> Iterator[None]:
    teardown()  # whatever an earlier test left behind
    try:
        yield
    finally:
        if any(Path("/sys/class/nvme").glob("nvme*")):
            run("nvme", "disconnect-all")
        ok(nvmet("clean"))  # always, even on an empty target: it must not fail then


@pytest.fixture
def target(clean_kernel: None) -> str:
    """The shipped nvmet.conf built in configfs; returns what `create` printed."""
    return ok(nvmet("create"))


def test_create_builds_the_shipped_target_in_configfs(clean_kernel: None) -> None:
    out = ok(nvmet_script("create"))  # the program itself, with its default nvmet.conf
    assert f"mkdir -p {PORT}" in out.splitlines()
    attrs = {a: (PORT / f"addr_{a}").read_text().strip() for a in ("trtype", "traddr", "adrfam")}
    assert attrs == {"trtype": "tcp", "traddr": "::1", "adrfam": "ipv6"}
    assert (PORT / "addr_trsvcid").read_text().strip() == "8009"
    assert linked() == SUBSYSTEMS
    devices = set()
    for nqn in SUBSYSTEMS:
        sub = NVMET / "subsystems" / nqn
        assert (sub / "attr_allow_any_host").read_text().strip() == "1"
        assert (sub / "namespaces" / "1" / "enable").read_text().strip() == "1"
        devices.add((sub / "namespaces" / "1" / "device_path").read_text().strip())
    assert devices == {"/dev/nullb0", "/dev/nullb1", "/dev/nullb2"}


def test_nvme_cli_discovers_the_three_subsystems(target: str) -> None:
    text = ok(run("nvme", "discover", *ADDRESS))
    subnqns = {
        line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("subnqn:")
    }
    assert subnqns - {WELL_KNOWN_DISC_NQN} == SUBSYSTEMS
    records = nvme_cli_records()
    assert io_subsystems(records) == SUBSYSTEMS
    for record in records:
        assert (record["trtype"], record["traddr"], record["trsvcid"]) == ("tcp", "::1", "8009")


def test_ls_shows_the_target(target: str) -> None:
    view = literal_eval(ok(nvmet("ls")))
    [port] = view["ports"]
    assert (port["id"], port["traddr"], port["trsvcid"], port["adrfam"]) == (
        1,
        "::1",
        "8009",
        "ipv6",
    )
    assert set(port["subsystems"]) == SUBSYSTEMS
    assert {s["subsysnqn"] for s in view["subsystems"]} == SUBSYSTEMS
    for sub in view["subsystems"]:
        assert [ns["enable"] for ns in sub["namespaces"]] == [1]


def test_unlink_and_link_change_the_discovery_log(target: str) -> None:
    ok(nvmet("unlink", "-p", "1", "-s", "klingons"))
    assert io_subsystems(nvme_cli_records()) == SUBSYSTEMS - {"klingons"}
    view = literal_eval(ok(nvmet("ls")))
    assert set(view["ports"][0]["subsystems"]) == SUBSYSTEMS - {"klingons"}
    assert {s["subsysnqn"] for s in view["subsystems"]} == SUBSYSTEMS  # hidden, not deleted

    ok(nvmet("link", "-p", "1", "-s", "klingons"))
    assert io_subsystems(nvme_cli_records()) == SUBSYSTEMS
    assert linked() == SUBSYSTEMS


def test_clean_removes_ports_and_subsystems(target: str) -> None:
    out = ok(nvmet("clean"))
    assert f"rmdir {PORT}" in out.splitlines()
    assert not target_exists()
    assert not Path("/sys/module/nvmet").exists()  # modules unloaded too
    assert literal_eval(ok(nvmet("ls"))) == {"ports": [], "subsystems": []}


def test_userspace_discover_matches_nvme_cli(target: str) -> None:
    """Our NVMe/TCP discovery host reads the same log page from the kernel as nvme-cli."""
    ours = json.loads(ok(run(sys.executable, "-m", "stas.nvme.discover", *ADDRESS, "--json")))
    theirs = json.loads(ok(run("nvme", "discover", *ADDRESS, "-o", "json")))

    def key(record: dict[str, Any]) -> tuple[str, str, str, str, int]:
        fields = (record["subnqn"], record["trtype"], record["traddr"], record["trsvcid"])
        return (*fields, SUBTYPE[record["subtype"]])

    assert {key(r) for r in ours["records"]} == {key(r) for r in theirs["records"]}
    assert io_subsystems(ours["records"]) == SUBSYSTEMS
    assert ours["genctr"] == theirs["genctr"]
