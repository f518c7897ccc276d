"""Start a private ``dbus-daemon`` for tests and hand back its address.

Tests must never touch the machine's real system bus; a throw-away daemon with its own config
(permissive, or system-like plus our policy files) is cheap and fully isolated.
"""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

STARTUP_TIMEOUT = 10.0

# Everything allowed, for any uid: tests of the server and clients themselves.
PERMISSIVE_POLICY = """\
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
  </policy>
"""

# Like Debian's system.conf: deny by default, so the included policy files must grant access.
SYSTEM_LIKE_POLICY = """\
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus"
           send_interface="org.freedesktop.DBus.Introspectable"/>
  </policy>
"""


class PrivateBusError(RuntimeError):
    """The private dbus-daemon could not be started."""


def dbus_daemon_path() -> str | None:
    """Where ``dbus-daemon`` is, or None (tests skip then)."""
    return shutil.which("dbus-daemon")


def bus_config(
    socket_path: Path,
    *,
    system_like: bool,
    includes: Sequence[Path] = (),
    max_message_size: int | None = None,
) -> str:
    """The daemon's XML configuration."""
    policy = SYSTEM_LIKE_POLICY if system_like else PERMISSIVE_POLICY
    include_lines = "".join(f"  <include>{Path(p).resolve()}</include>\n" for p in includes)
    limit = (
        f'  <limit name="max_message_size">{max_message_size}</limit>\n'
        if max_message_size is not None
        else ""
    )
    return (
        '<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"\n'
        ' "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">\n'
        "<busconfig>\n"
        "  <type>stas-test</type>\n"
        f"  <listen>unix:path={socket_path}</listen>\n"
        "  <auth>EXTERNAL</auth>\n"
        f"{policy}{include_lines}{limit}"
        "</busconfig>\n"
    )


def _read_address(proc: subprocess.Popen[bytes]) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], STARTUP_TIMEOUT)
    line = proc.stdout.readline().decode().strip() if ready else ""
    if not line:
        err = b""
        if proc.poll() is not None and proc.stderr is not None:
            err = proc.stderr.read()
        raise PrivateBusError(f"dbus-daemon did not report an address: {err.decode().strip()}")
    return line


class PrivateBus:
    """One dbus-daemon on a fixed socket path; ``restart`` replaces it at the same address.

    Restarting drops every connection, as a crashed or restarted system bus would.
    """

    def __init__(self, daemon: str, config: Path) -> None:
        self._daemon = daemon
        self._config = config
        self._proc: subprocess.Popen[bytes] | None = None
        self.address = ""

    def start(self) -> str:
        self._proc = subprocess.Popen(
            [self._daemon, f"--config-file={self._config}", "--print-address=1", "--nofork"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.address = _read_address(self._proc)
        return self.address

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()

    def restart(self) -> str:
        self.stop()
        return self.start()


@contextmanager
def restartable_bus(
    *,
    system_like: bool = False,
    includes: Sequence[Path] = (),
    max_message_size: int | None = None,
) -> Iterator[PrivateBus]:
    """Run a private bus for the duration of the block; yields it (``address``, ``restart``).

    The directory is world-readable so tests can also connect as an unprivileged uid.
    """
    daemon = dbus_daemon_path()
    if daemon is None:
        raise PrivateBusError("dbus-daemon is not installed")
    tmp = Path(tempfile.mkdtemp(prefix="stas-dbus-"))
    try:
        os.chmod(tmp, 0o755)
        config = tmp / "bus.conf"
        config.write_text(
            bus_config(
                tmp / "bus",
                system_like=system_like,
                includes=includes,
                max_message_size=max_message_size,
            )
        )
        bus = PrivateBus(daemon, config)
        bus.start()
        try:
            yield bus
        finally:
            bus.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def private_bus(
    *,
    system_like: bool = False,
    includes: Sequence[Path] = (),
    max_message_size: int | None = None,
) -> Iterator[str]:
    """Run a private bus for the duration of the block; yields its address."""
    with restartable_bus(
        system_like=system_like, includes=includes, max_message_size=max_message_size
    ) as bus:
        yield bus.address
