"""stafd.conf / stacd.conf text as the tests write it, parsed: a test's config must not warn
(a warning would mean the test ran on a default instead of what it wrote)."""

from __future__ import annotations

from pathlib import Path

from stas.config import ServiceConfig, parse_service_config


def stacd_config(text: str = "") -> ServiceConfig:
    """stacd.conf ``text`` parsed; no warning allowed."""
    config, warnings = parse_service_config(text, "stacd")
    assert warnings == [], warnings
    return config


def stafd_config(text: str = "") -> ServiceConfig:
    """stafd.conf ``text`` parsed; no warning allowed."""
    config, warnings = parse_service_config(text, "stafd")
    assert warnings == [], warnings
    return config


def host_files(directory: Path, hostnqn: str, hostid: str) -> Path:
    """The host's identity files in ``directory`` and a sys.conf naming them (as
    /etc/nvme/hostnqn, /etc/nvme/hostid and /etc/stas/sys.conf are); sys.conf's path."""
    (directory / "hostnqn").write_text(hostnqn + "\n")
    (directory / "hostid").write_text(hostid + "\n")
    sys_conf = directory / "sys.conf"
    sys_conf.write_text(f"[Host]\nnqn=file://{directory}/hostnqn\nid=file://{directory}/hostid\n")
    return sys_conf
