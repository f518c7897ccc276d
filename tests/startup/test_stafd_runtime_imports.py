"""What stafd loads once running, beyond its start-up imports (issue 8 RSS): reading
/etc/nvme's exclusion list does not bring stacd's ownership registry and udev-rule shadow
(with the kernel API behind them); stacd still gets all three."""

from __future__ import annotations

from pathlib import Path

from tests.startup.helpers import run_fresh

STACD_ONLY = ["stas.coexist.registry", "stas.coexist.udev_rule", "stas.kernel.api"]

STAFD = """
import stas.stafd
opts = stas.stafd.StafdOptions(conf_file={conf!r}, sys_conf={sysconf!r}, state_dir={tmp!r},
                               nvme_dir={nvme!r})
config, _ = stas.stafd.load_config(opts)
print(json.dumps({{"excluded": len(config.nvme_exclusions.entries),
                  "loaded": [m for m in {names!r} if m in sys.modules]}}))
"""


def test_stafd_reads_exclusions_without_stacds_coexistence_modules(tmp_path: Path) -> None:
    conf = tmp_path / "stafd.conf"
    conf.write_text("[Global]\n")
    nvme = tmp_path / "nvme"
    nvme.mkdir()
    (nvme / "exclusions.conf").write_text(
        "[exclusions]\nexclusion = nqn=nqn.2014-08.org.example:x\n"
    )
    code = STAFD.format(conf=str(conf), sysconf=str(tmp_path / "sys.conf"), tmp=str(tmp_path),
                        nvme=str(nvme), names=STACD_ONLY)  # fmt: skip
    assert run_fresh(code, tmp_path) == {"excluded": 1, "loaded": []}


def test_stacd_gets_its_coexistence_modules(tmp_path: Path) -> None:
    code = (
        "from pathlib import Path\n"
        "from stas.coexist import Coexist\n"
        f"c = Coexist.at(Path({str(tmp_path)!r}))\n"
        "print(json.dumps([type(c.shadow).__name__, type(c.registry).__name__]))\n"
    )
    assert run_fresh(code, tmp_path) == ["UdevRuleShadow", "Registry"]
