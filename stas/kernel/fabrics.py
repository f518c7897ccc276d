"""/dev/nvme-fabrics: what the running kernel supports, and the raw connect it offers.

Reading the device (kernel >= 5.17, root) returns the option template, e.g.
``instance=%d,cntlid=%d,transport=%s,...,host_iface=%s,discovery,dhchap_secret=%s``.
Writing an option string to a fresh open file creates a controller; reading the same file
afterwards returns ``instance=N,cntlid=M``. Blocking: callers run these in a worker thread.
"""

from __future__ import annotations

import errno
import logging
import os
import re

log = logging.getLogger("stas.kernel")
FABRICS_DEV = "/dev/nvme-fabrics"
MAX_READ = 4096  # the kernel prints one page at most
_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")
_INSTANCE = re.compile(r"instance=(\d{1,9}),cntlid=(\d{1,5})")


class FabricsError(OSError):
    """The connect write or its answer failed; ``errno`` as the kernel returned it."""


def parse_capabilities(text: str) -> frozenset[str]:
    """Option names from the template's first line; anything that is not a name is ignored."""
    first = text.splitlines()[0] if text else ""
    names = (t.split("=", 1)[0].strip() for t in first.split(","))
    return frozenset(n for n in names if _NAME.fullmatch(n))


def read_capabilities(path: str = FABRICS_DEV) -> frozenset[str]:
    """The options this kernel accepts; empty (and the reason logged) when it cannot tell."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            raw = os.read(fd, MAX_READ)
        finally:
            os.close(fd)
    except OSError as exc:
        log.info("cannot read kernel fabrics options from %s: %s", path, exc.strerror or exc)
        return frozenset()
    caps = parse_capabilities(raw.decode("ascii", errors="replace"))
    if not caps:
        log.info("%s lists no options (kernel older than 5.17?)", path)
    return caps


def parse_instance(text: str) -> tuple[int, int]:
    """``instance=N,cntlid=M`` -> (N, M)."""
    m = _INSTANCE.match(text.strip())
    if m is None:
        raise FabricsError(errno.EIO, f"unexpected answer from the kernel: {text[:80]!r}")
    return int(m.group(1)), int(m.group(2))


def add_ctrl(options: str, path: str = FABRICS_DEV) -> tuple[int, int]:
    """Create a controller from a validated option string; returns (instance, cntlid).

    ``options`` must come from ``ConnectRequest.option_string(redact=False)``: the only
    place that guarantees nothing was injected into it.
    """
    data = options.encode("ascii")
    fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    try:
        written = os.write(fd, data)
        if written != len(data):
            raise FabricsError(errno.EIO, f"short write to {path} ({written}/{len(data)})")
        answer = os.read(fd, MAX_READ)
    finally:
        os.close(fd)
    return parse_instance(answer.decode("ascii", errors="replace"))
