"""Living beside nvme-cli, libnvme and other orchestrators on one host.

- ``udev_rule``: ``udev-rule=disabled`` shadows nvme-cli's autoconnect udev rule while stacd
  runs (upstream 2.x's option), and never touches a rules file stacd did not write.
- ``registry``: libnvme's ownership registry (/run/nvme/registry/nvmeX/owner): what stacd
  connects is claimed as owner ``stas``; what another owner holds is never disconnected.
- ``exclusions``: libnvme's system-wide exclusion list (/etc/nvme/exclusions.conf and
  exclusions.conf.d/*.conf): matching controllers are neither connected nor disconnected.

Each module is small, takes its root directory as a parameter (tests use temporary ones) and
keeps its decisions in pure functions that stas.plan and the connector call.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import attrs

from stas.coexist.exclusions import Exclusions, load_exclusions

if TYPE_CHECKING:  # imported by ``Coexist.at``: stafd reads exclusions only (issue 8 RSS)
    from stas.coexist.registry import Registry
    from stas.coexist.udev_rule import UdevRuleShadow


@attrs.frozen
class Coexist:
    """The three mechanisms at their paths under ``root`` (``/`` on a real host, a temporary
    directory in tests: ``stacd --coexist-root DIR``)."""

    shadow: UdevRuleShadow
    registry: Registry
    nvme_dir: Path

    @classmethod
    def at(cls, root: Path = Path("/")) -> Coexist:
        from stas.coexist.registry import Registry
        from stas.coexist.udev_rule import UdevRuleShadow

        return cls(
            shadow=UdevRuleShadow(root / "run/udev/rules.d", root / "etc/udev/rules.d"),
            registry=Registry(root / "run/nvme/registry"),
            nvme_dir=root / "etc/nvme",
        )

    def exclusions(self, hostid: str = "") -> Exclusions:
        """Read /etc/nvme's exclusion lists now (at start and on every reload)."""
        return load_exclusions(self.nvme_dir, hostid=hostid)
