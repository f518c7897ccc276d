"""nvme-stas on Trio: NVMe-oF STorage Appliance Services (stafd, stacd and their tools)."""

__version__ = "2.5.0"
