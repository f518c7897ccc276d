"""stas.tls_policy on a decoded entry (stafd's referrals) gives the answer it gives on the
entry's DLPE dict and on stacd's typed ``Dlpe`` of it: one rule, whichever form holds it."""

from __future__ import annotations

import attrs
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from stas.kernel.options import InvalidOption
from stas.messages import Dlpe
from stas.nvme.logpage import LogPageEntry
from stas.tls_policy import (
    dlpe_requires_tls,
    log_entry_requires_tls,
    referral_params,
)
from tests.helpers.entries import log_entry

ascii_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=12)


def verdict(check: object, entry: object) -> bool | str:
    """True/False, or the InvalidOption text when the entry demands an unsupported channel."""
    try:
        return check(entry)  # type: ignore[operator,no-any-return]
    except InvalidOption as exc:
        return str(exc)


@given(
    trtype=st.just(3) | st.integers(0, 255),  # half of them tcp
    treq=st.integers(0, 7) | st.integers(0, 255),
    sectype=st.integers(0, 3) | st.integers(0, 255),
    subnqn=ascii_text,
    traddr=ascii_text,
    trsvcid=ascii_text,
)
@example(trtype=3, treq=5, sectype=2, subnqn="s", traddr="::1", trsvcid="4420")  # req + sqflow
@example(trtype=3, treq=4, sectype=2, subnqn="s", traddr="::1", trsvcid="4420")  # sqflow only
@example(trtype=1, treq=1, sectype=1, subnqn="s", traddr="::1", trsvcid="4420")  # rdma
def test_the_decoded_entry_its_dlpe_dict_and_stacds_dlpe_get_the_same_answer(
    trtype: int, treq: int, sectype: int, subnqn: str, traddr: str, trsvcid: str
) -> None:
    e = LogPageEntry(
        trtype, 1, 1, treq, 1, 0xFFFF, 32, 0, trsvcid, subnqn, traddr, bytes([sectype]) + bytes(255)
    )
    typed = Dlpe.parse(e.to_dlpe())
    assert typed is not None
    assert typed.treq == treq  # stacd reads back the number stafd decoded
    answer = verdict(log_entry_requires_tls, e)
    assert answer == verdict(dlpe_requires_tls, typed)


def test_a_referral_demanding_tls_1_3_is_followed_with_tls() -> None:
    required = attrs.evolve(log_entry(subtype=1, treq=1), tsas=bytes([2]) + bytes(255))
    assert referral_params(required) == {"tls": "true"}
    assert referral_params(log_entry(subtype=1, treq=2)) == {}  # TLS offered, not required
    assert referral_params(log_entry(subtype=1, treq=5)) == {"tls": "true"}  # required + sqflow
    with pytest.raises(InvalidOption, match=r"other than TLS 1\.3"):
        referral_params(attrs.evolve(required, tsas=bytes([1]) + bytes(255)))  # TLS 1.2
