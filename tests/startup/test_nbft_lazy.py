"""The NBFT parser (stas.nbft) is imported only on a host whose firmware left NBFT tables
(issue 8: ~6 ms of each daemon's imports natively, far more under emulation); where tables
exist, both daemons still read them."""

from __future__ import annotations

from pathlib import Path

from tests.startup.helpers import run_fresh

FINDER = """
from trio_util import AsyncValue
import stas.stafd
from stas.actors.finder import Finder
from stas.config import ServiceConfig
from stas.messages import StafdSnapshot

async def no_dc(*args):
    raise AssertionError("no DC is started here")

finder = Finder(config=ServiceConfig(), host_nqn="nqn.2014-08.org.nvmexpress:uuid:h",
                dc_factory=no_dc, published=AsyncValue(StafdSnapshot()), nbft_dir={tables!r})
loaded = finder._loaded(ServiceConfig(), "nqn.2014-08.org.nvmexpress:uuid:h")
print(json.dumps({{"nbft": "stas.nbft" in sys.modules, "problems": list(loaded.nbft_problems)}}))
"""

STACD = """
import stas.stacd
boot = list(stas.stacd.boot_reader({tables!r})("nqn.2014-08.org.nvmexpress:uuid:h"))
print(json.dumps({{"nbft": "stas.nbft" in sys.modules, "boot": boot}}))
"""


def acpi_tables(tmp_path: Path, *, nbft: bool) -> Path:
    """A /sys/firmware/acpi/tables look-alike: other tables always, an unusable NBFT maybe."""
    tables = tmp_path / "tables"
    tables.mkdir()
    for name in ("DSDT", "FACP", "APIC"):
        (tables / name).write_bytes(b"\0" * 64)
    if nbft:
        (tables / "NBFT").write_bytes(b"NBFT broken")
    return tables


def test_stafd_without_nbft_tables_does_not_import_the_parser(tmp_path: Path) -> None:
    result = run_fresh(FINDER.format(tables=str(acpi_tables(tmp_path, nbft=False))), tmp_path)
    assert result == {"nbft": False, "problems": []}


def test_stafd_with_an_nbft_table_imports_the_parser_and_reads_it(tmp_path: Path) -> None:
    result = run_fresh(FINDER.format(tables=str(acpi_tables(tmp_path, nbft=True))), tmp_path)
    assert result["nbft"] is True
    assert len(result["problems"]) == 1 and "NBFT" in result["problems"][0]


def test_stacd_without_nbft_tables_does_not_import_the_parser(tmp_path: Path) -> None:
    result = run_fresh(STACD.format(tables=str(acpi_tables(tmp_path, nbft=False))), tmp_path)
    assert result == {"nbft": False, "boot": []}


def test_stacd_with_an_nbft_table_imports_the_parser(tmp_path: Path) -> None:
    result = run_fresh(STACD.format(tables=str(acpi_tables(tmp_path, nbft=True))), tmp_path)
    assert result == {"nbft": True, "boot": []}  # unusable: named in the log, nothing booted


def test_a_missing_tables_directory_is_no_nbft(tmp_path: Path) -> None:
    result = run_fresh(STACD.format(tables=str(tmp_path / "missing")), tmp_path)
    assert result == {"nbft": False, "boot": []}
