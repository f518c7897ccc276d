"""The INI reader: configparser semantics plus inline comments and '=' kept in values."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stas.config.errors import ConfigError
from stas.config.parser import (
    MAX_CONFIG_BYTES,
    IniEntry,
    parse_ini,
    read_config_text,
    strip_inline_comment,
)


def entries(text: str) -> list[tuple[str, str, str | None]]:
    doc, _ = parse_ini(text, source="t.conf")
    return [(e.section, e.key, e.value) for e in doc.entries]


def test_sections_and_entries_in_file_order_with_line_numbers() -> None:
    doc, notes = parse_ini("# top\n[Global]\ntron=true\n\n[Controllers]\nexclude=a=b\n", source="x")
    assert doc.sections == (("Global", 2), ("Controllers", 5))
    assert doc.entries == (
        IniEntry("Global", "tron", "true", 3),
        IniEntry("Controllers", "exclude", "a=b", 6),
    )
    assert notes == []


def test_value_keeps_every_equal_sign_after_the_first() -> None:
    secret = "DHHC-1:01:abcd==:"
    assert entries(f"[Controllers]\ncontroller=transport=tcp;dhchap-secret={secret}\n") == [
        ("Controllers", "controller", f"transport=tcp;dhchap-secret={secret}")
    ]


@pytest.mark.parametrize(
    ("line", "value"),
    [
        ("kato = 30   # seconds", "30"),
        ("kato = 30\t; seconds", "30"),
        ("kato=30#not-a-comment", "30#not-a-comment"),
        ("kato= #only a comment", ""),
        ("kato=#x", "#x"),
        ("kato = 30 ;a # b", "30"),
    ],
)
def test_inline_comments_need_whitespace_before_them(line: str, value: str) -> None:
    assert entries(f"[Global]\n{line}\n") == [("Global", "kato", value)]


def test_semicolon_is_a_separator_not_a_comment_in_list_keys() -> None:
    text = "[Controllers]\ncontroller = transport=tcp ; traddr=1.2.3.4   # lab array\n"
    assert entries(text) == [("Controllers", "controller", "transport=tcp ; traddr=1.2.3.4")]


def test_option_names_are_case_insensitive_section_names_are_not() -> None:
    assert entries("[Global]\nTRON = true\n[global]\nKato=1\n") == [
        ("Global", "tron", "true"),
        ("global", "kato", "1"),
    ]


def test_repeated_keys_and_duplicate_sections_are_all_kept_in_order() -> None:
    text = "[A]\nk=1\n[B]\nk=x\n[A]\nk=2\n"
    doc, _ = parse_ini(text, source="t")
    assert [s for s, _ in doc.sections] == ["A", "B", "A"]
    assert entries(text) == [("A", "k", "1"), ("B", "k", "x"), ("A", "k", "2")]


def test_bare_key_has_no_value() -> None:
    assert entries("[Global]\ntron\n") == [("Global", "tron", None)]


def test_indented_lines_continue_the_previous_value() -> None:
    text = (
        "[Controllers]\ncontroller = transport=tcp;\n    traddr=1.2.3.4  # c\n\n  ;x\nexclude=a=b\n"
    )
    assert entries(text) == [
        ("Controllers", "controller", "transport=tcp;\ntraddr=1.2.3.4"),
        ("Controllers", "exclude", "a=b"),
    ]


def test_blank_lines_inside_a_continued_value_are_kept() -> None:
    assert entries("[S]\nk = a\n\n  b\n") == [("S", "k", "a\n\nb")]


def test_equally_indented_lines_are_separate_options() -> None:
    assert entries("[S]\n  a=1\n  b=2\n") == [("S", "a", "1"), ("S", "b", "2")]


def test_header_with_comment_and_crlf_line_ends() -> None:
    doc, _ = parse_ini("[Global]  # main\r\ntron=true\r\n", source="t")
    assert doc.sections == (("Global", 1),)
    assert doc.entries == (IniEntry("Global", "tron", "true", 2),)


def test_line_without_option_name_is_reported_and_skipped() -> None:
    doc, notes = parse_ini("[Global]\n=30\ntron=true\n", source="t.conf")
    assert notes == ["t.conf: line 2: '=30' has no option name, ignored"]
    assert [e.key for e in doc.entries] == ["tron"]


def test_option_before_any_section_is_an_error() -> None:
    with pytest.raises(ConfigError) as exc:
        parse_ini("# c\ntron=true\n[Global]\n", source="stafd.conf")
    assert str(exc.value) == "stafd.conf: line 2: 'tron=true' appears before any [section] header"


def test_nul_bytes_are_an_error() -> None:
    with pytest.raises(ConfigError, match=r"^t.conf: contains NUL bytes, not a text file$"):
        parse_ini("[Global]\x00\n", source="t.conf")


def test_strip_inline_comment() -> None:
    assert strip_inline_comment("a b # c") == "a b"
    assert strip_inline_comment("a;b") == "a;b"
    assert strip_inline_comment("a ;b", "#") == "a ;b"
    assert strip_inline_comment("#a") == "#a"


def test_read_missing_file_is_none(tmp_path: Path) -> None:
    assert read_config_text(tmp_path / "nope.conf") is None


def test_read_text(tmp_path: Path) -> None:
    path = tmp_path / "a.conf"
    path.write_text("[Global]\n", encoding="utf-8")
    assert read_config_text(path) == "[Global]\n"


def test_read_binary_garbage_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "bin.conf"
    path.write_bytes(b"[Global]\n\xff\xfe")
    with pytest.raises(ConfigError) as exc:
        read_config_text(path)
    assert str(exc.value) == f"{path}: not UTF-8 text (byte 0xff at offset 9)"


def test_read_huge_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "big.conf"
    path.write_bytes(b"#" * (MAX_CONFIG_BYTES + 1))
    with pytest.raises(ConfigError, match="larger than 1048576 bytes"):
        read_config_text(path)


def test_read_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        read_config_text(tmp_path)
    assert str(exc.value) == f"{tmp_path}: cannot read: a directory, not a regular file"


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_read_permission_denied_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "secret.conf"
    path.write_text("[Global]\n")
    path.chmod(0)
    with pytest.raises(ConfigError, match="cannot read: Permission denied"):
        read_config_text(path)


def test_read_permission_denied_is_an_error_even_as_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def denied(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "open", denied)
    with pytest.raises(ConfigError) as exc:
        read_config_text(tmp_path / "stafd.conf")
    assert str(exc.value) == f"{tmp_path / 'stafd.conf'}: cannot read: Permission denied"


@given(st.text(max_size=400))
def test_arbitrary_text_parses_or_raises_config_error(text: str) -> None:
    try:
        doc, notes = parse_ini(text, source="t")
    except ConfigError as e:
        assert str(e).startswith("t: ")
    else:
        assert all(isinstance(n, str) for n in notes)
        assert all(e.key == e.key.lower() and e.key for e in doc.entries)
