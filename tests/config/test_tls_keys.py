"""NVMe/TCP TLS keys of stafd.conf/stacd.conf: [Global] tls, tls-key, keyring and the same
per controller (names as nvme-cli's fabrics config and libnvme spell them). tls-key is a
secret: never in warnings or reprs."""

from __future__ import annotations

import pytest

from stas.config import parse_service_config
from stas.config.checks import BadValue, to_keyring, to_tls_key
from stas.config.controllers import parse_controller, redact_entry
from stas.nvme.tls_psk import ConfiguredPsk, format_interchange

PSK = format_interchange(ConfiguredPsk(bytes(range(32)), 1))
BAD_CRC = PSK[:-3] + ("A" if PSK[-3] != "A" else "B") + PSK[-2:]


@pytest.mark.parametrize("daemon", ["stafd", "stacd"])
def test_global_tls_keys(daemon: str) -> None:
    text = f"[Global]\ntls=true\ntls-key={PSK}\nkeyring=.nvme\n"
    config, warnings = parse_service_config(text, daemon)  # type: ignore[arg-type]
    assert warnings == []
    assert (config.tls, config.tls_key, config.keyring) == (True, PSK, ".nvme")
    assert PSK not in repr(config)


def test_defaults_are_off() -> None:
    config, _ = parse_service_config("", "stacd")
    assert (config.tls, config.tls_key, config.keyring) == (False, None, None)


def test_a_bad_global_tls_key_is_warned_without_echoing_it() -> None:
    config, warnings = parse_service_config(f"[Global]\ntls-key={BAD_CRC}\n", "stacd")
    assert config.tls_key is None
    assert len(warnings) == 1 and "bad CRC" in warnings[0] and "tls-key=***" in warnings[0]
    assert BAD_CRC not in warnings[0] and BAD_CRC.split(":")[2] not in warnings[0]


def test_per_controller_tls_keys_reach_the_tid_dict() -> None:
    line = f"transport=tcp;traddr=::1;trsvcid=4420;nqn=sealed;tls=true;tls-key={PSK};keyring=5"
    spec, notes = parse_controller(line, "stacd", source="stacd.conf")
    assert notes == [] and spec is not None
    assert (spec.tls, spec.tls_key, spec.keyring) == (True, PSK, "5")
    assert PSK not in repr(spec)
    tid = spec.as_tid_dict()
    assert (tid["tls"], tid["tls-key"], tid["keyring"]) == ("true", PSK, "5")
    assert PSK not in redact_entry(line) and "tls-key=***" in redact_entry(line)


def test_a_bad_per_controller_tls_key_is_dropped_and_not_echoed() -> None:
    line = f"transport=tcp;traddr=::1;nqn=sealed;tls=true;tls-key={BAD_CRC}"
    spec, notes = parse_controller(line, "stacd", source="stacd.conf")
    assert spec is not None and spec.tls is True and spec.tls_key is None
    assert len(notes) == 1 and "bad CRC" in notes[0] and "ignored" in notes[0]
    assert BAD_CRC.split(":")[2] not in notes[0]


@pytest.mark.parametrize("text", ["123", "0x2360979a", PSK])
def test_tls_key_accepts_a_psk_or_a_serial(text: str) -> None:
    assert to_tls_key(text) == text


@pytest.mark.parametrize(
    "text", ["0", "-1", "nope", "NVMeTLSkey-1:03:AAAA:", "DHHC-1:00:AAAA:", PSK[:-1]]
)
def test_tls_key_rejects_anything_else(text: str) -> None:
    with pytest.raises(BadValue):
        to_tls_key(text)


@pytest.mark.parametrize("text", [".nvme", "123", "0x1f", "my_ring-2"])
def test_keyring_accepts_serials_and_names(text: str) -> None:
    assert to_keyring(text) == text


@pytest.mark.parametrize("text", ["", "0", "a,b", "a=b", "x" * 65, "ring one"])
def test_keyring_rejects_separators_and_junk(text: str) -> None:
    with pytest.raises(BadValue):
        to_keyring(text)
