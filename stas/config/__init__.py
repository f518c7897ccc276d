"""Configuration of stafd and stacd, drop-in compatible with upstream nvme-stas 2.x.

Files: /etc/stas/stafd.conf, /etc/stas/stacd.conf (``load_service_config``), /etc/stas/sys.conf
and the /etc/nvme host files (``load_sys_config``, ``set_sys_option``). Bad values give
``ConfigWarning`` strings (also logged on the ``stas.config`` logger) and the default; only a
file that cannot be read or parsed at all raises ``ConfigError``.
"""

from stas.config.checks import WELL_KNOWN_DISC_NQN
from stas.config.controllers import (
    ControllerSpec,
    Exclusion,
    parse_controller,
    parse_exclusion,
    redact_entry,
)
from stas.config.errors import ConfigError, ConfigWarning
from stas.config.options import OPTIONS, Daemon, Option, ServiceConfig
from stas.config.service import load_service_config, parse_service_config
from stas.config.sysconf import (
    DEFAULT_SYS_CONF,
    SysConfig,
    load_sys_config,
    rewrite_sys_option,
    set_sys_option,
)
from stas.config.timespan import TimespanError, parse_timespan

DEFAULT_STAFD_CONF = "/etc/stas/stafd.conf"
DEFAULT_STACD_CONF = "/etc/stas/stacd.conf"

__all__ = [
    "DEFAULT_STACD_CONF",
    "DEFAULT_STAFD_CONF",
    "DEFAULT_SYS_CONF",
    "OPTIONS",
    "WELL_KNOWN_DISC_NQN",
    "ConfigError",
    "ConfigWarning",
    "ControllerSpec",
    "Daemon",
    "Exclusion",
    "Option",
    "ServiceConfig",
    "SysConfig",
    "TimespanError",
    "load_service_config",
    "load_sys_config",
    "parse_controller",
    "parse_exclusion",
    "parse_service_config",
    "parse_timespan",
    "redact_entry",
    "rewrite_sys_option",
    "set_sys_option",
]
