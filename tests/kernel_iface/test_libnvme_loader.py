"""The libnvme preload workaround: the bindings import and answer a real call."""

import importlib.util
from pathlib import Path

import pytest

from stas.kernel import libnvme_loader

needs_libnvme = pytest.mark.skipif(
    importlib.util.find_spec("libnvme") is None, reason="libnvme is not installed"
)


@needs_libnvme
def test_bindings_load_and_create_a_root() -> None:
    nvme = libnvme_loader.load_libnvme()
    root = nvme.root()  # a libnvme global context: proves the C library is really linked
    assert root is not None
    assert hasattr(nvme, "ctrl") and hasattr(nvme, "host")


def test_find_shared_library_picks_versioned_file(tmp_path: Path) -> None:
    libs = tmp_path / libnvme_loader.LIB_DIR_NAME
    libs.mkdir()
    (libs / "libnvme-mi.so.1.16.2").write_bytes(b"")
    (libs / "libnvme.so.1.16.2").write_bytes(b"")
    assert libnvme_loader.find_shared_library(tmp_path) == libs / "libnvme.so.1.16.2"


def test_find_shared_library_absent(tmp_path: Path) -> None:
    assert libnvme_loader.find_shared_library(tmp_path) is None


def test_missing_package_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(libnvme_loader.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(libnvme_loader.LibnvmeUnavailable, match="pip install libnvme"):
        libnvme_loader.load_libnvme()
