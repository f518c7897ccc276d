"""tests/coexist: the private-bus fixtures for the stacd process tests."""

from tests.helpers.fixtures import bus_address, world  # noqa: F401 - fixtures
