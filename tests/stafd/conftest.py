"""Fixtures for stafd tests: a private dbus-daemon exported as the system bus."""

from stas_bus_fixture import bus_address  # noqa: F401 - fixture
