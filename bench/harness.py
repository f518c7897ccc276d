"""Process plumbing shared by the benchmarks and the fault campaign.

Daemons run as real processes on a private dbus-daemon, exactly as in the end-to-end tests;
their log lines are read from a pipe by a thread that stamps each line on arrival, so a
latency is "when the line reached us", which is what an operator watching the journal sees.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HARNESS = ROOT / "nvmet-harness"
if str(HARNESS) not in sys.path:
    sys.path.insert(0, str(HARNESS))
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

HOSTNQN = "nqn.2014-08.org.nvmexpress:uuid:0c9e3a3e-5b0f-4c4e-9d0e-2e1c6a1b7fb0"
CLK_TCK = os.sysconf("SC_CLK_TCK")


class LogTap:
    """Lines of a child's output, each stamped with time.monotonic() when it arrived."""

    def __init__(self, stream, keep: bool = True) -> None:
        self.lines: list[tuple[float, str]] = []
        self._cond = threading.Condition()
        self._keep = keep
        self.closed = False  # the child closed its output (it exited): nothing more will come
        self._thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self._thread.start()

    def _pump(self, stream) -> None:
        for raw in iter(stream.readline, b""):
            stamp = time.monotonic()
            with self._cond:
                self.lines.append((stamp, raw.decode(errors="replace").rstrip("\n")))
                self._cond.notify_all()
        with self._cond:
            self.closed = True
            self._cond.notify_all()

    def mark(self) -> int:
        """An index to search from (lines before it are ignored)."""
        with self._cond:
            return len(self.lines)

    def wait_for(
        self, match: Callable[[str], bool], *, since: int = 0, timeout: float = 10.0
    ) -> tuple[int, float, str]:
        """(index, arrival time, line) of the first matching line at or after ``since``."""
        deadline = time.monotonic() + timeout
        pos = since
        with self._cond:
            while True:
                while pos < len(self.lines):
                    stamp, line = self.lines[pos]
                    if match(line):
                        return pos, stamp, line
                    pos += 1
                if self.closed:
                    tail = " | ".join(line for _, line in self.lines[-3:])
                    raise RuntimeError(f"the process ended without the expected line: {tail}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no matching line within {timeout:.1f} s")
                self._cond.wait(left)

    def count(self, match: Callable[[str], bool], *, since: int = 0) -> int:
        with self._cond:
            return sum(1 for _, line in self.lines[since:] if match(line))

    def matching(self, match: Callable[[str], bool], *, since: int = 0) -> list[str]:
        with self._cond:
            return [line for _, line in self.lines[since:] if match(line)]


def write_identity(tmp: Path) -> Path:
    """A sys.conf with a fixed host NQN/ID, so nothing reads the machine's /etc/nvme."""
    (tmp / "hostnqn").write_text(HOSTNQN + "\n")
    (tmp / "hostid").write_text(HOSTNQN.rsplit(":", 1)[1] + "\n")
    path = tmp / "sys.conf"
    path.write_text(f"[Host]\nnqn=file://{tmp}/hostnqn\nid=file://{tmp}/hostid\n")
    return path


class Proc:
    """A child process whose merged stdout/stderr is tapped line by line."""

    def __init__(self, argv: Sequence[str], env: dict[str, str] | None = None) -> None:
        self.argv = list(argv)
        self.proc = subprocess.Popen(
            self.argv,
            env=env,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self.log = LogTap(self.proc.stdout)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def rss_kb(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def cpu_seconds(self) -> float:
        """utime + stime of the process so far (threads included)."""
        stat = Path(f"/proc/{self.pid}/stat").read_text()
        fields = stat.rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 10.0) -> int | None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def stafd(tmp: Path, env: dict[str, str], conf: str, *extra: str) -> Proc:
    (tmp / "stafd.conf").write_text(conf)
    (tmp / "state").mkdir(exist_ok=True)
    argv = [sys.executable, "-m", "stas.main", "-f", str(tmp / "stafd.conf")]
    argv += ["--sys-conf", str(tmp / "sys.conf"), "--state-dir", str(tmp / "state"), *extra]
    return Proc(argv, env)


def stacd(tmp: Path, env: dict[str, str], conf: str = "", *extra: str) -> Proc:
    (tmp / "stacd.conf").write_text(conf)
    argv = [sys.executable, "-m", "stas.stacd", "-f", str(tmp / "stacd.conf")]
    argv += ["--sys-conf", str(tmp / "sys.conf"), "--kernel", "fake", *extra]
    return Proc(argv, env)


def nvmet_conf(ports: int, subsystems: int, *, prefix: str = "nqn.2026-01.io.bench") -> str:
    """An nvmet.conf literal: ``ports`` TCP ports on ::1, ``subsystems`` linked to each."""
    port_list = ", ".join(
        f"{{'id': {p}, 'traddr': '::1', 'trsvcid': {8009 + p}, 'trtype': 'tcp'}}"
        for p in range(1, ports + 1)
    )
    subs = ", ".join(
        f"{{'subsysnqn': '{prefix}:dc{p:03d}-sub{s:04d}', 'port': {p}, 'namespaces': [1]}}"
        for p in range(1, ports + 1)
        for s in range(subsystems)
    )
    return f"{{'ports': [{port_list}], 'subsystems': [{subs}]}}"


_LISTEN = re.compile(r"listening on \[?([^\]\s]+)\]?:(\d+) \(port (\d+)\)")


class SimProc(Proc):
    """``simulator.py serve`` as a process; endpoints read from its first lines."""

    def __init__(self, tmp: Path, name: str, conf: str, *extra: str) -> None:
        (tmp / f"{name}.conf").write_text(conf)
        self.control = str(tmp / f"{name}.sock")
        argv = [sys.executable, str(HARNESS / "simulator.py"), "serve"]
        argv += ["-f", str(tmp / f"{name}.conf"), "--ephemeral", "--control", self.control]
        super().__init__([*argv, *extra])
        self.ports: dict[int, int] = {}
        try:
            self._read_ports()
        except BaseException:
            self.stop()  # never leave a half-started simulator behind
            raise

    def _read_ports(self) -> None:
        pos = 0
        while True:
            pos, _, line = self.log.wait_for(
                lambda ln: (
                    "listening on" in ln
                    or "control socket" in ln
                    or "Error" in ln
                    or ln.startswith("simulator.py:")
                ),
                since=pos,
                timeout=300,  # 10,000 subsystems take a while to validate on a busy machine
            )
            m = _LISTEN.search(line)
            if m:
                self.ports[int(m.group(3))] = int(m.group(2))
            elif "control socket" in line:
                break
            else:
                raise RuntimeError(f"simulator failed: {line}")
            pos += 1

    def request(self, op: str, port: int, nqn: str) -> dict[str, object]:
        from simulator import control_request

        return control_request(self.control, {"op": op, "port": port, "nqn": nqn})


def ctl(env: dict[str, str], tool: str, *args: str) -> tuple[float, subprocess.CompletedProcess]:
    """Run stafctl/stacctl as a process; (seconds, result)."""
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", f"stas.ctl.{tool}", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return time.perf_counter() - t0, out


def percentile(samples: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (no interpolation: a reported p95 was really observed)."""
    ordered = sorted(samples)
    rank = max(1, -(-len(ordered) * pct // 100))
    return ordered[int(rank) - 1]
