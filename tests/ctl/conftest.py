"""Fixtures for the ctl tests: a private dbus-daemon per test."""

from tests.helpers.fixtures import bus_address  # noqa: F401 - fixture
