"""D-Bus layer: the stafd/stacd object servers (Trio) and the thin clients used by the ctl tools.

Kept import-light on purpose: ``stafctl``/``stacctl`` import ``stas.dbus.client`` and must start
fast, so nothing here may pull in trio. Import the submodules you need directly.
"""

from stas.dbus.common import (
    DBusAccessDenied,
    DBusCallError,
    DBusError,
    DBusUnavailable,
)

__all__ = ["DBusAccessDenied", "DBusCallError", "DBusError", "DBusUnavailable"]
