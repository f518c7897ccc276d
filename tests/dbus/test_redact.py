"""Secrets hidden from non-root callers, nothing else changed."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from stas.dbus.redact import REDACTED, redact_secrets

SECRET = "DHHC-1:00:c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0:"
TLS = "NVMeTLSkey-1:01:VRLbtnN9AQb2WXW3c9+wEf/DRLz0QuLdbYvEhwtdWwNf9LrZ:"


def test_named_secret_keys_are_redacted_for_non_root() -> None:
    ctrl = {
        "transport": "tcp",
        "traddr": "10.0.0.1",
        "dhchap-secret": SECRET,
        "dhchap-ctrl-secret": SECRET,
        "hostkey": "whatever-format",
        "kato": "30",
    }
    out = redact_secrets(ctrl, caller_is_root=False)
    assert out == {
        "transport": "tcp",
        "traddr": "10.0.0.1",
        "dhchap-secret": REDACTED,
        "dhchap-ctrl-secret": REDACTED,
        "hostkey": REDACTED,
        "kato": "30",
    }
    assert ctrl["dhchap-secret"] == SECRET  # input untouched


def test_root_sees_everything_as_a_copy() -> None:
    ctrl = {"dhchap-secret": SECRET, "tls_key": TLS}
    out = redact_secrets(ctrl, caller_is_root=True)
    assert out == ctrl
    assert out is not ctrl


def test_key_like_names_with_secret_values() -> None:
    d = {
        "tls_key": TLS,
        "Keyring": "nvme-keyring",  # a key name, but not a secret value
        "my-secret": SECRET,
        "hostkey": "",  # not configured: nothing to hide
        "model": "Linux",
    }
    assert redact_secrets(d, caller_is_root=False) == {
        "tls_key": REDACTED,
        "Keyring": "nvme-keyring",
        "my-secret": REDACTED,
        "hostkey": "",
        "model": "Linux",
    }


def test_nested_and_embedded_secrets() -> None:
    info = {
        "connect operation": "{'dhchap_key': '" + SECRET + "', 'kato': 30}",
        "avahi": {"services": [{"hostkey": SECRET, "traddr": "1.2.3.4"}]},
        "tron": True,
    }
    assert redact_secrets(info, caller_is_root=False) == {
        "connect operation": REDACTED,
        "avahi": {"services": [{"hostkey": REDACTED, "traddr": "1.2.3.4"}]},
        "tron": True,
    }


@given(st.dictionaries(st.text(max_size=20), st.text(max_size=60), max_size=10))
def test_no_secret_survives_for_non_root(d: dict[str, str]) -> None:
    out = redact_secrets(d, caller_is_root=False)
    assert out.keys() == d.keys()
    for key, value in out.items():
        assert "DHHC-1:" not in value and "NVMeTLSkey-1:" not in value
        if key.lower() not in {"dhchap-secret", "dhchap-ctrl-secret", "hostkey"} and (
            "DHHC-1:" not in d[key] and "NVMeTLSkey-1:" not in d[key]
        ):
            assert value == d[key]
    assert redact_secrets(d, caller_is_root=True) == d
