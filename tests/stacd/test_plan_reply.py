"""`stacctl plan` / `stacd --dry-run` read stafd's log pages once over D-Bus: a reply that is
not get_all_log_pages' JSON is one note, and the plan is made from stacd.conf alone (it was a
JSONDecodeError traceback)."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any

import pytest

from stas import stacd


class _Stafd:
    def __init__(self, reply: str) -> None:
        self.reply = reply

    def call(self, method: str, *args: Any) -> tuple[str]:
        assert method == "get_all_log_pages"
        return (self.reply,)


@pytest.mark.parametrize("reply", ["not json", "{", "\udcff"])
def test_an_unusable_reply_is_one_note(
    reply: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    @contextmanager
    def connect(service: object, address: str | None = None) -> Any:
        yield _Stafd(reply)

    monkeypatch.setattr("stas.dbus.client.connect", connect)
    assert stacd.fetch_log_pages(None) == {}
    out = capsys.readouterr().out
    assert out.startswith("note: stafd's get_all_log_pages reply is unusable (")
    assert out.rstrip().endswith("planning from stacd.conf only")


def test_a_good_reply_is_read_without_a_note(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    @contextmanager
    def connect(service: object, address: str | None = None) -> Any:
        yield _Stafd("[]")

    monkeypatch.setattr("stas.dbus.client.connect", connect)
    assert stacd.fetch_log_pages(None) == {}
    assert capsys.readouterr().out == ""
