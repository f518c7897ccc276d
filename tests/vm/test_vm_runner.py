"""The VM runner (nvmet-harness/vm): its pure parts on the host, then one real boot."""

from __future__ import annotations

import lzma
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

REPO = Path(__file__).resolve().parents[2]
VM_DIR = REPO / "nvmet-harness" / "vm"
if str(VM_DIR) not in sys.path:
    sys.path.insert(0, str(VM_DIR))

import vm_image  # noqa: E402
from vm_image import CpioEntry, VmError  # noqa: E402

from tests.helpers.vm import load_runner  # noqa: E402

runner = load_runner()

APT_DEPENDS = """linux-image-amd64
  Depends: linux-image-6.1.0-56-amd64
  Recommends: apparmor
"""
MODULES_DEP = """kernel/fs/9p/9p.ko: kernel/fs/netfs/netfs.ko kernel/net/9p/9pnet.ko
kernel/net/9p/9pnet.ko:
kernel/net/9p/9pnet_virtio.ko: kernel/net/9p/9pnet.ko kernel/drivers/virtio/virtio_ring.ko
kernel/fs/netfs/netfs.ko:
kernel/drivers/virtio/virtio_ring.ko:
kernel/fs/overlayfs/overlay.ko.xz:
"""


# --- parsers -----------------------------------------------------------------------------


def test_kernel_package_is_read_from_apt_cache_depends() -> None:
    assert vm_image.parse_kernel_package(APT_DEPENDS) == "linux-image-6.1.0-56-amd64"
    assert vm_image.parse_kernel_package("linux-image-amd64\n  Recommends: x\n") is None
    assert vm_image.parse_kernel_package("") is None


@given(st.text())
def test_kernel_package_parser_never_raises(text: str) -> None:
    found = vm_image.parse_kernel_package(text)
    assert found is None or (found.startswith("linux-image-") and found.endswith("-amd64"))


def test_missing_packages_reads_dpkg_query_status() -> None:
    out = "qemu-system-x86 ii \nkmod un \nbusybox-static:amd64 ii \ncpio rc \n"
    wanted = ("qemu-system-x86", "busybox-static", "kmod", "cpio", "nvme-cli")
    assert vm_image.missing_packages(out, wanted) == ["kmod", "cpio", "nvme-cli"]


def test_kernel_series_is_major_dot_minor() -> None:
    assert vm_image.kernel_series("6.1.0-57-amd64") == "6.1"
    assert vm_image.kernel_series("6.12.117+deb13-amd64") == "6.12"
    assert vm_image.kernel_series("6.12") == "6.12"
    assert vm_image.kernel_series("trixie") == vm_image.kernel_series("pycache") == ""
    assert vm_image.kernel_series("6.123abc") == ""


def test_each_kernel_choice_has_its_own_cache_and_source() -> None:
    cache = Path("/var/cache/x")
    assert vm_image.KERNELS["6.1"].cache_dir(cache) == cache  # as before: existing caches stay
    assert vm_image.KERNELS["6.12"].cache_dir(cache) == cache / "trixie"
    assert vm_image.KERNELS["6.12"].suite == "trixie"
    assert vm_image.DEFAULT_KERNEL == "6.1"


def test_private_apt_configuration_reads_nothing_of_the_hosts(tmp_path: Path) -> None:
    sources = vm_image.private_sources("trixie")
    assert "Suites: trixie\n" in sources and "Components: main\n" in sources
    assert "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg" in sources
    opts = vm_image.private_apt_options(tmp_path)
    pairs = dict(o.split("=", 1) for o in opts if o != "-o")
    assert pairs["Dir::Etc::SourceList"] == str(tmp_path / "sources.sources")
    for key in ("SourceParts", "Preferences", "PreferencesParts"):  # no host sources or pins
        assert pairs[f"Dir::Etc::{key}"].startswith(str(tmp_path))
    for key in ("Dir::State::Lists", "Dir::State::status", "Dir::Cache"):
        assert pairs[key].startswith(str(tmp_path))
    with pytest.raises(VmError, match="suite"):
        vm_image.private_sources("trixie\nSuites: sid")


def test_cached_kernel_picks_the_newest_of_the_series(tmp_path: Path) -> None:
    for kver in ("6.1.0-56-amd64", "6.1.0-57-amd64", "6.12.117+deb13-amd64", ".6.1.0-99.partial"):
        moddir = vm_image.Kernel(tmp_path / kver).moddir
        moddir.mkdir(parents=True)
        (moddir / "modules.dep").write_text("")
    (tmp_path / "trixie").mkdir()
    assert vm_image.cached_kernel(tmp_path, "6.1").kver == "6.1.0-57-amd64"
    assert vm_image.cached_kernel(tmp_path, "6.12").kver == "6.12.117+deb13-amd64"
    assert vm_image.cached_kernel(tmp_path).kver == "6.12.117+deb13-amd64"
    assert vm_image.cached_kernel(tmp_path, "6.6") is None
    assert vm_image.cached_kernel(tmp_path / "missing", "6.1") is None


def test_kernel_versions_sort_numerically() -> None:
    kvers = ["6.1.0-9-amd64", "6.1.0-56-amd64", "6.1.0-10-amd64"]
    assert max(kvers, key=vm_image.version_key) == "6.1.0-56-amd64"


def test_module_names_ignore_directory_suffix_and_dashes() -> None:
    assert vm_image.module_name("kernel/net/9p/9pnet_virtio.ko") == "9pnet_virtio"
    assert vm_image.module_name("kernel/fs/overlayfs/overlay.ko.xz") == "overlay"
    assert vm_image.module_name("kernel/drivers/nvme/target/nvmet-tcp.ko") == "nvmet_tcp"


def test_module_load_order_puts_dependencies_first_once() -> None:
    order = vm_image.module_load_order(MODULES_DEP, ["9pnet-virtio", "9p", "overlay"])
    assert order == [
        "kernel/net/9p/9pnet.ko",
        "kernel/drivers/virtio/virtio_ring.ko",
        "kernel/net/9p/9pnet_virtio.ko",
        "kernel/fs/netfs/netfs.ko",
        "kernel/fs/9p/9p.ko",
        "kernel/fs/overlayfs/overlay.ko.xz",
    ]


def test_module_load_order_skips_builtins_and_names_unknown_modules() -> None:
    builtin = "kernel/drivers/virtio/virtio_pci.ko\n"
    assert vm_image.module_load_order(MODULES_DEP, ["virtio_pci"], builtin) == []
    with pytest.raises(VmError, match=r"module nosuch is neither in modules\.dep nor built in"):
        vm_image.module_load_order(MODULES_DEP, ["nosuch"])


def test_module_load_order_reports_a_cycle() -> None:
    dep = "a.ko: b.ko\nb.ko: a.ko\n"
    with pytest.raises(VmError, match="dependency cycle"):
        vm_image.module_load_order(dep, ["a"])


@given(st.text(), st.lists(st.sampled_from(["9p", "overlay", "a", "b.ko"]), max_size=3))
def test_module_load_order_gives_paths_or_vm_error(dep: str, wanted: list[str]) -> None:
    try:
        order = vm_image.module_load_order(dep, wanted)
    except VmError as e:
        assert "module" in str(e) or "cycle" in str(e)
    else:
        assert len(order) == len(set(order))


@pytest.mark.parametrize("series", sorted(vm_image.KERNELS))
def test_boot_modules_resolve_in_the_cached_kernel(series: str) -> None:
    cache = vm_image.KERNELS[series].cache_dir(vm_image.DEFAULT_CACHE)
    kernel = vm_image.cached_kernel(cache, series)
    if kernel is None:
        pytest.skip(f"no {series} kernel prepared in {cache} yet")
    builtin = (kernel.moddir / "modules.builtin").read_text()
    order = vm_image.module_load_order(
        (kernel.moddir / "modules.dep").read_text(), vm_image.BOOT_MODULES, builtin
    )
    names = [vm_image.module_name(p) for p in order]
    assert names.index("9pnet") < names.index("9pnet_virtio") < names.index("9p")
    assert "overlay" in names
    assert "virtio_pci" in names or "virtio_pci" in builtin  # 6.12 has it built in
    assert all((kernel.moddir / p).exists() for p in order)


# --- cpio and vmlinux ---------------------------------------------------------------------


def read_newc(data: bytes) -> list[CpioEntry]:
    """Test-side reader of the newc format, independent of the writer."""
    entries, pos = [], 0
    while True:
        assert data[pos : pos + 6] == b"070701"
        f = [int(data[pos + 6 + 8 * i : pos + 14 + 8 * i], 16) for i in range(13)]
        mode, size, rdev, namesize = f[1], f[6], (f[9], f[10]), f[11]
        name = data[pos + 110 : pos + 110 + namesize - 1].decode()
        pos = (pos + 110 + namesize + 3) & ~3
        body = data[pos : pos + size]
        pos = (pos + size + 3) & ~3
        if name == "TRAILER!!!":
            assert pos == len(data)
            return entries
        entries.append(CpioEntry(name, mode, body, rdev))


def test_newc_archive_holds_directories_files_and_device_nodes() -> None:
    entries = [
        CpioEntry("dev", 0o040755),
        CpioEntry("dev/console", 0o020600, rdev=(5, 1)),
        CpioEntry("init", 0o100755, b"#!/bin/busybox sh\necho hi\n"),
    ]
    data = vm_image.newc_archive(entries)
    assert len(data) % 4 == 0
    assert read_newc(data) == entries
    if shutil.which("cpio"):  # and the real tool agrees
        done = subprocess.run(["cpio", "-itv"], input=data, capture_output=True, check=True)
        listing = done.stdout.decode()
        assert "dev/console" in listing and listing.splitlines()[1].startswith("crw-------")


@given(
    st.lists(
        st.builds(
            CpioEntry,
            st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=40),
            st.sampled_from([0o100644, 0o100755, 0o040755]),
            st.binary(max_size=64),
        ),
        max_size=5,
    )
)
def test_newc_archive_round_trips(entries: list[CpioEntry]) -> None:
    assert read_newc(vm_image.newc_archive(entries)) == entries


def test_vmlinux_is_cut_out_of_an_xz_bzimage() -> None:
    elf = b"\x7fELF" + bytes(range(256)) * 4
    bzimage = b"MZ setup code " * 50 + lzma.compress(elf, format=lzma.FORMAT_XZ) + b"\0trailer"
    assert vm_image.find_vmlinux(bzimage) == elf
    not_elf = b"MZ" + lzma.compress(b"plain data", format=lzma.FORMAT_XZ)
    assert vm_image.find_vmlinux(not_elf) is None
    assert vm_image.find_vmlinux(b"MZ no compressed kernel here") is None
    assert vm_image.find_vmlinux(b"MZ" + vm_image.XZ_MAGIC + b"corrupt") is None


def test_vmlinux_is_cut_out_of_a_zstd_bzimage_by_the_given_decompressor() -> None:
    elf = b"\x7fELF" + bytes(range(256))
    seen: list[bytes] = []

    def fake_zstd(stream: bytes) -> bytes:  # the real one is the zstd program
        seen.append(stream)
        return elf if stream.startswith(vm_image.ZSTD_MAGIC + b"good") else b"garbage"

    magic = vm_image.ZSTD_MAGIC
    bzimage = b"MZ setup " + magic + b"bad" + b"pad" + magic + b"good" + b"trailer"
    assert vm_image.find_vmlinux(bzimage, fake_zstd) == elf
    assert len(seen) == 2  # the first candidate did not decode to an ELF: the next is tried
    assert vm_image.find_vmlinux(bzimage) is None  # no decompressor: boot the bzImage
    assert vm_image.find_vmlinux(b"MZ" + magic + b"bad", fake_zstd) is None


def test_zstd_program_decodes_a_stream_with_trailing_bytes() -> None:
    if shutil.which("zstd") is None:
        pytest.skip("no zstd program on this machine")
    elf = b"\x7fELF" + bytes(range(256)) * 8
    stream = subprocess.run(["zstd", "-c"], input=elf, capture_output=True, check=True).stdout
    assert vm_image.find_vmlinux(b"MZ" * 30 + stream + b"\0\0size", vm_image._zstd) == elf


@given(st.binary(max_size=200))
def test_vmlinux_search_never_raises(data: bytes) -> None:
    found = vm_image.find_vmlinux(data)
    assert found is None or found.startswith(b"\x7fELF")


# --- job, command line, results -----------------------------------------------------------


def test_accel_is_kvm_only_with_cpu_support_and_a_usable_device() -> None:
    cpuinfo = "processor\t: 0\nflags\t\t: fpu sse2 vmx avx\n"
    assert runner.choose_accel(cpuinfo, kvm_usable=True) == "kvm"
    assert runner.choose_accel(cpuinfo, kvm_usable=False) == "tcg"
    assert runner.choose_accel("flags\t: fpu sse2\n", kvm_usable=True) == "tcg"


def test_selected_environment_marks_the_vm() -> None:
    env = runner.select_env({"HOME": "/root", "SECRET": "x", "A": "1"}, ["HOME", "A", "UNSET"])
    assert env == {"HOME": "/root", "A": "1", "STAS_IN_VM": "1", "STAS_VM_KERNEL": "6.1"}
    assert runner.select_env({}, [], "6.12")["STAS_VM_KERNEL"] == "6.12"


def test_job_script_runs_the_command_in_its_directory_with_its_environment(
    tmp_path: Path,
) -> None:
    env = {"STAS_IN_VM": "1", "ODD": "it's $HOME `x`"}
    argv = [
        "sh",
        "-c",
        'printf "%s|%s|%s|%s\\n" "$PWD" "$STAS_IN_VM" "$ODD" "$1"; exit 7',
        "-",
        "a b",
    ]
    script = tmp_path / "job.sh"
    script.write_text(runner.render_job(argv, str(tmp_path), env))
    done = subprocess.run(["env", "-i", "/bin/sh", str(script)], capture_output=True, text=True)
    assert done.returncode == 7
    assert done.stdout == f"{tmp_path}|1|it's $HOME `x`|a b\n"


def test_job_script_fails_as_a_vm_failure_when_the_directory_is_missing(tmp_path: Path) -> None:
    script = tmp_path / "job.sh"
    script.write_text(runner.render_job(["true"], str(tmp_path / "gone"), {}))
    done = subprocess.run(["/bin/sh", str(script)], capture_output=True)
    assert done.returncode == runner.EXIT_VM_FAILURE


def test_job_script_rejects_bad_input() -> None:
    with pytest.raises(VmError, match="no command"):
        runner.render_job([], "/", {})
    with pytest.raises(VmError, match="'BAD-NAME'"):
        runner.render_job(["true"], "/", {"BAD-NAME": "x"})


def test_kernel_command_line_hands_the_init_path_to_init() -> None:
    line = runner.kernel_cmdline("/work/main/nvmet-harness/vm/init.sh")
    assert line.split()[0] == "console=ttyS0"
    assert "STAS_VM_INIT=/work/main/nvmet-harness/vm/init.sh" in line.split()
    assert "no_timer_check" in line.split()  # no IO-APIC timer panic on a slow, loaded host
    for bad in ("relative/init.sh", "/with space/init.sh", "/quo'te/init.sh"):
        with pytest.raises(VmError, match="must be absolute, without spaces"):
            runner.kernel_cmdline(bad)


def test_qemu_command_line_shares_root_read_only_and_job_read_write() -> None:
    spec = runner.BootSpec(
        kernel=Path("/c/vmlinux"),
        initramfs=Path("/c/initramfs.cpio"),
        job_dir=Path("/tmp/job"),
        init_path="/x/init.sh",
        shares=(Path("/out,put"),),
        bios=Path("/q/qboot.rom"),
    )
    argv = runner.qemu_argv(spec)
    pairs = {flag: argv[argv.index(flag) + 1] for flag in ("-kernel", "-initrd", "-bios")}
    assert argv[0] == "qemu-system-x86_64"
    assert argv[1:5] == ["-accel", "tcg,thread=multi", "-cpu", "max"]
    assert (pairs["-kernel"], pairs["-initrd"], pairs["-bios"]) == (
        "/c/vmlinux",
        "/c/initramfs.cpio",
        "/q/qboot.rom",
    )
    virtfs = [argv[i + 1] for i, a in enumerate(argv) if a == "-virtfs"]
    assert virtfs == [
        "local,security_model=none,path=/,mount_tag=hostroot,readonly=on,multidevs=remap",
        "local,security_model=none,path=/tmp/job,mount_tag=stasjob",
        "local,security_model=none,path=/out,,put,mount_tag=share0",
    ]
    assert "file:/tmp/job/console.log" in argv and "-no-reboot" in argv
    kvm = runner.qemu_argv(runner.BootSpec(Path("k"), Path("i"), Path("/j"), "/i", accel="kvm"))
    assert kvm[1:5] == ["-accel", "kvm", "-cpu", "host"] and "-bios" not in kvm


def test_shares_file_lists_tags_and_paths() -> None:
    assert runner.shares_file([Path("/a"), Path("/b c")]) == "share0 /a\nshare1 /b c\n"
    assert runner.shares_file([]) == ""


def test_result_is_the_command_status_else_timeout_or_vm_failure() -> None:
    assert runner.interpret_result("7\n", timed_out=False) == 7
    assert runner.interpret_result("0", timed_out=True) == 0  # finished just in time
    assert runner.interpret_result(None, timed_out=True) == runner.EXIT_TIMEOUT == 124
    assert runner.interpret_result(None, timed_out=False) == runner.EXIT_VM_FAILURE == 125
    assert runner.interpret_result("garbage", timed_out=False) == 125


def test_reasons_not_to_run() -> None:
    def reason(**kw: object) -> str | None:
        args = {"machine": "x86_64", "is_root": True, "missing": [], "kernel_cached": True}
        return runner.cannot_run_reason(**{**args, "in_vm": False, **kw})

    assert reason() is None
    assert reason(is_root=True, missing=["qemu-system-x86"], kernel_cached=False) is None
    assert reason(is_root=False, missing=["qemu-system-x86"]) == (
        "not root, so cannot install qemu-system-x86"
    )
    assert "cannot download" in reason(is_root=False, kernel_cached=False)
    assert "x86_64" in reason(machine="aarch64")
    assert "inside the VM" in reason(in_vm=True)


def test_check_option_prints_the_verdict(capsys: pytest.CaptureFixture[str]) -> None:
    verdict = runner.check()
    assert runner.main(["--check"]) == (1 if verdict else 0)
    assert capsys.readouterr().out == f"{verdict or 'ok'}\n"
    verdict = runner.check(kernel="6.12")
    assert runner.main(["--check", "--kernel", "6.12"]) == (1 if verdict else 0)
    assert capsys.readouterr().out == f"{verdict or 'ok'}\n"


def test_unknown_kernel_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert runner.check(kernel="5.10") == "unknown kernel '5.10' (choose from 6.1, 6.12)"
    with pytest.raises(SystemExit):
        runner.main(["--kernel", "5.10", "true"])
    assert "invalid choice: '5.10'" in capsys.readouterr().err
    with pytest.raises(VmError, match=r"unknown kernel '5\.10'"):
        vm_image.prepare(Path("/nonexistent"), "5.10")


def test_no_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert runner.main([]) == 2
    assert "usage: runner.py" in capsys.readouterr().err


# --- a real boot ----------------------------------------------------------------------------


def run_vm(
    *args: str, timeout: float = 600, kernel: str = "6.1"
) -> subprocess.CompletedProcess[str]:
    """The runner as a program (first run on a fresh machine installs packages: minutes)."""
    if reason := runner.check(kernel=kernel):
        pytest.skip(f"cannot run the VM here: {reason}")
    env = {**os.environ, "VMTEST_TOKEN": "token 42"}
    argv = [sys.executable, str(VM_DIR / "runner.py"), *args]
    return subprocess.run(
        argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def test_vm_runs_a_command_and_returns_its_status_and_output() -> None:
    script = (
        'echo "in vm=$STAS_IN_VM token=$VMTEST_TOKEN cwd=$PWD user=$(id -u)"; '
        "echo to-stderr >&2; "
        "test -d /sys/kernel/config/nvmet && grep -q '^nvme_tcp ' /proc/modules && echo nvme-ok; "
        "ip -o link show lo | grep -q UP && echo lo-up; exit 7"
    )
    done = run_vm("--env", "VMTEST_TOKEN", "--timeout", "120", "sh", "-c", script)
    assert done.returncode == 7, done.stderr
    assert done.stdout.splitlines() == [
        f"in vm=1 token=token 42 cwd={REPO} user=0",
        "to-stderr",
        "nvme-ok",
        "lo-up",
    ]
    assert "rc=7" in done.stderr


def test_vm_timeout_has_its_own_exit_status() -> None:
    done = run_vm("--timeout", "1", "sleep", "60")
    assert done.returncode == runner.EXIT_TIMEOUT
    assert "timeout: the command did not finish within 1s" in done.stderr


def test_vm_boots_debian_13s_6_12_kernel_with_in_band_auth() -> None:
    """The 6.12 series' own modules are loaded; nvmet offers per-host DH-HMAC-CHAP keys."""
    script = (
        'echo "kernel=$(uname -r) series=$STAS_VM_KERNEL"; '
        "test -d /sys/kernel/config/nvmet/hosts && mkdir /sys/kernel/config/nvmet/hosts/h && "
        "test -e /sys/kernel/config/nvmet/hosts/h/dhchap_key && echo auth-ok"
    )
    done = run_vm("--kernel", "6.12", "--timeout", "120", "sh", "-c", script, kernel="6.12")
    assert done.returncode == 0, done.stderr
    first, second = done.stdout.splitlines()
    assert first.startswith("kernel=6.12.") and first.endswith(" series=6.12")
    assert second == "auth-ok"
