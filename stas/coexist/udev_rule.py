"""``udev-rule=disabled``: hide nvme-cli's autoconnect udev rule while stacd runs.

nvme-cli installs /usr/lib/udev/rules.d/70-nvmf-autoconnect.rules: on a discovery log change
AEN (or a DC's rediscover event) it starts nvmf-connect@.service, i.e. ``nvme connect-all``,
which races stacd for the same controllers. Upstream nvme-stas 2.x's stacd.conf option
``udev-rule=enabled|disabled`` chooses: enabled (default) leaves the rule alone (stacd adopts
what nvme-cli connects: the kernel refuses a duplicate); disabled writes a file of the same
name in /run/udev/rules.d, which udev reads instead of the one in /usr/lib, while stacd runs.

The shadow keeps nvme-cli's FC rule (nobody else handles FC discovery events) and drops the
NVMe ones. Its first line marks it as ours: stacd replaces or deletes only a file carrying
that mark (a stale one left by a crash is cleaned at the next start), and never touches a
file someone else put there. Written atomically (temporary file, fsync, link or rename).
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from pathlib import Path

log = logging.getLogger("stas.coexist")

RULE_NAME = "70-nvmf-autoconnect.rules"
RUN_RULES = Path("/run/udev/rules.d")
ETC_RULES = Path("/etc/udev/rules.d")
MARKER = "# nvme-stas: written by stacd for udev-rule=disabled; removed when stacd exits"
_FC_UNIT = (
    r"nvmf-connect@--device=none\t--transport=fc\t--traddr=$env{NVMEFC_TRADDR}"
    r"\t--trsvcid=none\t--host-traddr=$env{NVMEFC_HOST_TRADDR}.service"
)
SHADOW = f"""{MARKER}
#
# This file hides nvme-cli's {RULE_NAME} (same name, /run wins over /usr/lib) so that
# stacd alone connects I/O controllers on discovery log changes. Set udev-rule=enabled in
# /etc/stas/stacd.conf (and reload stacd) to give the rule back.
#
# Kept from nvme-cli's rule: FC discovery events, which stacd does not handle.
ACTION=="change", SUBSYSTEM=="fc", ENV{{FC_EVENT}}=="nvmediscovery", \\
  ENV{{NVMEFC_HOST_TRADDR}}=="*", ENV{{NVMEFC_TRADDR}}=="*", \\
  RUN+="/usr/bin/systemctl --no-block start {_FC_UNIT}"
"""


def is_ours(path: Path) -> bool:
    """Does ``path`` start with our marker line? (False if absent or unreadable.)"""
    try:
        with open(path, "rb") as f:
            first = f.readline(len(MARKER) + 2)
    except OSError:
        return False
    return first.rstrip(b"\r\n") == MARKER.encode()


class UdevRuleShadow:
    """The shadow file in ``rules_dir`` (/run/udev/rules.d); ``etc_dir`` is only checked for
    an administrator's own override, which udev prefers to ours."""

    def __init__(self, rules_dir: Path = RUN_RULES, etc_dir: Path = ETC_RULES) -> None:
        self.path = Path(rules_dir) / RULE_NAME
        self.etc_path = Path(etc_dir) / RULE_NAME
        self._noted: set[str] = set()

    def _once(self, key: str, level: int, message: str, *args: object) -> None:
        if key not in self._noted:
            self._noted.add(key)
            log.log(level, message, *args)

    def apply(self, enabled: bool) -> None:
        """Make the file match ``udev-rule``: at start (cleans a stale shadow) and on reload."""
        if enabled:
            self.remove()
        else:
            self.install()

    def install(self) -> bool:
        """Write the shadow unless a file we did not write is there. True if it is in place."""
        if self.etc_path.exists():
            self._once(
                "etc", logging.INFO, "udev-rule=disabled: %s overrides nvme-cli's rule already; "
                "the shadow in %s has no effect while it is there", self.etc_path, self.path.parent
            )  # fmt: skip
        foreign = self.path.exists() and not is_ours(self.path)
        if foreign:
            self._once(
                "foreign", logging.WARNING, "udev-rule=disabled: %s exists and was not written "
                "by stacd; leaving it alone (nvme-cli's rule is not shadowed)", self.path
            )  # fmt: skip
            return False
        try:
            self._write()
        except OSError as exc:
            self._once(
                "write", logging.WARNING, "udev-rule=disabled: cannot write %s: %s",
                self.path, exc.strerror or exc,
            )  # fmt: skip
            return False
        log.info("udev-rule=disabled: nvme-cli's autoconnect rule shadowed by %s", self.path)
        return True

    def _write(self) -> None:
        directory = self.path.parent
        if not directory.is_dir():
            directory.mkdir(mode=0o755, parents=True, exist_ok=True)
        # A dot name ending in .tmp: udev reads only *.rules, so it never sees half a file.
        fd, tmp = tempfile.mkstemp(prefix=f".{RULE_NAME}.", suffix=".tmp", dir=directory)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(SHADOW)
                f.flush()
                os.fchmod(f.fileno(), 0o644)
                os.fsync(f.fileno())
            try:
                os.link(tmp, self.path)  # only if nothing is there: never clobbers a stranger
            except FileExistsError:
                if not is_ours(self.path):
                    raise FileExistsError(f"{self.path} appeared meanwhile; left alone") from None
                os.replace(tmp, self.path)  # our own (stale or current): refreshed
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)

    def remove(self) -> bool:
        """Delete the shadow if it is ours (restoring nvme-cli's rule). True if removed."""
        if not is_ours(self.path):
            return False
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            return False
        except OSError as exc:
            log.warning("cannot remove %s: %s", self.path, exc.strerror or exc)
            return False
        log.info("nvme-cli's autoconnect rule restored (%s removed)", self.path)
        return True
