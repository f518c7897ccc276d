"""The NBFT as the real kernel exposes it: qemu given a generated table (``runner.py
--acpitable``) puts it in /sys/firmware/acpi/tables/NBFT; our parser, libnvme's and stafd's
finder read it there. Run with:

    nvmet-harness/nbft_gen.py -o /tmp/NBFT --hfi mac=52:54:00:12:34:56,ip=10.0.2.15 \\
        --discovery "uri=nvme+tcp://[::1]:8009/,hfi=1,nqn=nqn.2014-08.org.nvmexpress.discovery"
    nvmet-harness/vm/runner.py --acpitable /tmp/NBFT -- \\
        .venv/bin/pytest tests/kernel/test_nbft_kernel.py
"""

from __future__ import annotations

from pathlib import Path

import pytest

from stas.nbft import SYSFS_DIR, discovery_tids, read_tables

TABLE = Path(SYSFS_DIR) / "NBFT"


@pytest.fixture
def nbft_path() -> Path:
    if not TABLE.exists():
        pytest.skip("no NBFT in this VM: boot it with runner.py --acpitable FILE (nbft_gen.py)")
    return TABLE


def test_firmware_table_parses_like_libnvme(nbft_path: Path) -> None:
    tables, errors = read_tables(SYSFS_DIR)
    assert errors == [] and str(nbft_path) in tables
    ours = tables[str(nbft_path)]
    assert ours.problems == () and ours.discoveries
    from stas.kernel.libnvme_loader import load_libnvme

    theirs = load_libnvme().nbft_get(str(nbft_path))
    assert [d.uri for d in ours.discoveries] == [d["uri"] for d in theirs["discovery"]]
    assert ours.host is not None and ours.host.nqn == theirs["host"]["nqn"]


def test_stafd_finder_takes_the_table_dcs(nbft_path: Path) -> None:
    tables, _ = read_tables(SYSFS_DIR)
    tids = discovery_tids(tables[str(nbft_path)], host_nqn="nqn.2014-08.org.x:host")
    assert tids and all(t.transport == "tcp" and t.trsvcid for t in tids)
