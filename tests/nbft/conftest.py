"""NBFT tests: the private-bus fixtures of the e2e world."""

from tests.helpers.fixtures import bus_address, world  # noqa: F401 - fixtures
