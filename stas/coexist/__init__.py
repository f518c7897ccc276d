"""Living beside nvme-cli, libnvme and other orchestrators on one host.

- ``udev_rule``: ``udev-rule=disabled`` shadows nvme-cli's autoconnect udev rule while stacd
  runs (upstream 2.x's option), and never touches a rules file stacd did not write.
- ``registry``: libnvme's ownership registry (/run/nvme/registry/nvmeX/owner): what stacd
  connects is claimed as owner ``stas``; what another owner holds is never disconnected.
- ``exclusions``: libnvme's system-wide exclusion list (/etc/nvme/exclusions.conf and
  exclusions.conf.d/*.conf): matching controllers are neither connected nor disconnected.

Each module is small, takes its root directory as a parameter (tests use temporary ones) and
keeps its decisions in pure functions that stas.plan and the connector call.
"""
