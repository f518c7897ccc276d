"""What the running kernel's fabrics module supports, read once from /dev/nvme-fabrics.

Reading the device (kernel >= 5.17, root) returns the option template, e.g.
``instance=%d,cntlid=%d,transport=%s,...,host_iface=%s,discovery,dhchap_secret=%s``.
"""

from __future__ import annotations

import logging

log = logging.getLogger("stas.kernel")
FABRICS_DEV = "/dev/nvme-fabrics"


def parse_capabilities(text: str) -> frozenset[str]:
    first = text.splitlines()[0] if text else ""
    return frozenset(t.split("=", 1)[0].strip() for t in first.split(",") if t.strip())


def read_capabilities(path: str = FABRICS_DEV) -> frozenset[str]:
    try:
        with open(path) as f:
            return parse_capabilities(f.readline())
    except OSError as exc:
        log.info("cannot read kernel fabrics options from %s: %s", path, exc.strerror or exc)
        return frozenset()
