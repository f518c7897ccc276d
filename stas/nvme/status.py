"""Human-readable names for NVMe completion status values.

A log line that says "Connect Invalid Host" is actionable; "status 0x184" is not. The
``status`` argument everywhere is the CQE status word shifted right by one (phase bit
dropped): SC bits 7:0, SCT bits 10:8, CRD 12:11, More 13, DNR 14. Only SCT and SC are
used for the name.

Ambiguity: in SCT 1 (command specific) the codes 80h-BFh mean different things for
different command sets (for NVM I/O commands 80h is "Conflicting Attributes"). A discovery
host or controller only ever sees admin and Fabrics commands, so this table gives the
Fabrics meaning (80h "Incompatible Format" ...). Codes 00h-2Fh are the admin meanings.
"""

from __future__ import annotations

from types import MappingProxyType

SCT_GENERIC = 0
SCT_COMMAND_SPECIFIC = 1
SCT_MEDIA = 2
SCT_PATH = 3
SCT_VENDOR = 7

_GENERIC = MappingProxyType(
    {
        0x00: "Success",
        0x01: "Invalid Command Opcode",
        0x02: "Invalid Field in Command",
        0x03: "Command ID Conflict",
        0x04: "Data Transfer Error",
        0x05: "Commands Aborted due to Power Loss Notification",
        0x06: "Internal Error",
        0x07: "Command Abort Requested",
        0x08: "Command Aborted due to SQ Deletion",
        0x09: "Command Aborted due to Failed Fused Command",
        0x0A: "Command Aborted due to Missing Fused Command",
        0x0B: "Invalid Namespace or Format",
        0x0C: "Command Sequence Error",
        0x0D: "Invalid SGL Segment Descriptor",
        0x0E: "Invalid Number of SGL Descriptors",
        0x0F: "Data SGL Length Invalid",
        0x10: "Metadata SGL Length Invalid",
        0x11: "SGL Descriptor Type Invalid",
        0x12: "Invalid Use of Controller Memory Buffer",
        0x13: "PRP Offset Invalid",
        0x14: "Atomic Write Unit Exceeded",
        0x15: "Operation Denied",
        0x16: "SGL Offset Invalid",
        0x18: "Host Identifier Inconsistent Format",
        0x19: "Keep Alive Timer Expired",
        0x1A: "Keep Alive Timeout Invalid",
        0x1B: "Command Aborted due to Preempt and Abort",
        0x1C: "Sanitize Failed",
        0x1D: "Sanitize In Progress",
        0x1E: "SGL Data Block Granularity Invalid",
        0x1F: "Command Not Supported for Queue in CMB",
        0x20: "Namespace is Write Protected",
        0x21: "Command Interrupted",
        0x22: "Transient Transport Error",
        0x23: "Command Prohibited by Command and Feature Lockdown",
        0x24: "Admin Command Media Not Ready",
        0x80: "LBA Out of Range",
        0x81: "Capacity Exceeded",
        0x82: "Namespace Not Ready",
        0x83: "Reservation Conflict",
        0x84: "Format In Progress",
    }
)

_COMMAND_SPECIFIC = MappingProxyType(
    {
        0x00: "Completion Queue Invalid",
        0x01: "Invalid Queue Identifier",
        0x02: "Invalid Queue Size",
        0x03: "Abort Command Limit Exceeded",
        0x05: "Asynchronous Event Request Limit Exceeded",
        0x06: "Invalid Firmware Slot",
        0x07: "Invalid Firmware Image",
        0x08: "Invalid Interrupt Vector",
        0x09: "Invalid Log Page",
        0x0A: "Invalid Format",
        0x0B: "Firmware Activation Requires Conventional Reset",
        0x0C: "Invalid Queue Deletion",
        0x0D: "Feature Identifier Not Saveable",
        0x0E: "Feature Not Changeable",
        0x0F: "Feature Not Namespace Specific",
        0x10: "Firmware Activation Requires NVM Subsystem Reset",
        0x11: "Firmware Activation Requires Controller Level Reset",
        0x12: "Firmware Activation Requires Maximum Time Violation",
        0x13: "Firmware Activation Prohibited",
        0x14: "Overlapping Range",
        0x15: "Namespace Insufficient Capacity",
        0x16: "Namespace Identifier Unavailable",
        0x18: "Namespace Already Attached",
        0x19: "Namespace Is Private",
        0x1A: "Namespace Not Attached",
        0x1B: "Thin Provisioning Not Supported",
        0x1C: "Controller List Invalid",
        0x1D: "Device Self-test In Progress",
        0x1E: "Boot Partition Write Prohibited",
        0x1F: "Invalid Controller Identifier",
        0x20: "Invalid Secondary Controller State",
        0x21: "Invalid Number of Controller Resources",
        0x22: "Invalid Resource Identifier",
        0x23: "Sanitize Prohibited While Persistent Memory Region is Enabled",
        0x24: "ANA Group Identifier Invalid",
        0x25: "ANA Attach Failed",
        # Fabrics command set meanings (see module docstring).
        0x80: "Incompatible Format",
        0x81: "Controller Busy",
        0x82: "Connect Invalid Parameters",
        0x83: "Connect Restart Discovery",
        0x84: "Connect Invalid Host",
        0x85: "Invalid Queue Type",
        0x90: "Discover Restart",
        0x91: "Authentication Required",
    }
)

_MEDIA = MappingProxyType(
    {
        0x80: "Write Fault",
        0x81: "Unrecovered Read Error",
        0x82: "End-to-end Guard Check Error",
        0x83: "End-to-end Application Tag Check Error",
        0x84: "End-to-end Reference Tag Check Error",
        0x85: "Compare Failure",
        0x86: "Access Denied",
        0x87: "Deallocated or Unwritten Logical Block",
    }
)

_PATH = MappingProxyType(
    {
        0x00: "Internal Path Error",
        0x01: "Asymmetric Access Persistent Loss",
        0x02: "Asymmetric Access Inaccessible",
        0x03: "Asymmetric Access Transition",
        0x60: "Controller Pathing Error",
        0x70: "Host Pathing Error",
        0x71: "Command Aborted By Host",
    }
)

_TABLES = MappingProxyType(
    {
        SCT_GENERIC: _GENERIC,
        SCT_COMMAND_SPECIFIC: _COMMAND_SPECIFIC,
        SCT_MEDIA: _MEDIA,
        SCT_PATH: _PATH,
    }
)


def status_name(status: int) -> str:
    """Name of a completion status (phase bit already dropped); CRD/More/DNR are ignored."""
    sc = status & 0xFF
    sct = (status >> 8) & 0x7
    table = _TABLES.get(sct)
    if table is not None and sc in table:
        return table[sc]
    if sct == SCT_VENDOR:
        return f"Vendor Specific status (SC 0x{sc:02x})"
    return f"Unknown status (SCT {sct}, SC 0x{sc:02x})"
