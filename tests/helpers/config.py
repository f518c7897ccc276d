"""stafd.conf / stacd.conf text as the tests write it, parsed: a test's config must not warn
(a warning would mean the test ran on a default instead of what it wrote)."""

from __future__ import annotations

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
