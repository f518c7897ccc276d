"""stacd tests: a private dbus-daemon exported as the system bus, and the e2e world."""

from tests.helpers.fixtures import bus_address, world  # noqa: F401 - fixtures
