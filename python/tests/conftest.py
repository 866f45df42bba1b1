"""Fixtures: real dtc processes on 127.0.0.1 (free ports), started from the `dtc` binary
that `DTC_BIN` names (default: the workspace's target/debug/dtc, then target/release/dtc),
and stopped at the end."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Iterator, Optional

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
#: Every wait in these tests gives up after this long.
LIMIT = 60.0


def dtc_bin() -> str:
    given = os.environ.get("DTC_BIN")
    if given:
        return given
    for profile in ("debug", "release"):
        path = REPO / "target" / profile / "dtc"
        if path.exists():
            return str(path)
    raise RuntimeError("no dtc binary: build it (cargo build -p dtc) or set DTC_BIN")


class Proc:
    """A process whose stdout is read on a thread (so it never blocks on a full pipe); the
    lines it printed so far are in `lines`. Killed at `stop()` if still running."""

    def __init__(self, args: list[str], env: Optional[dict[str, str]] = None) -> None:
        full_env = dict(os.environ)
        full_env.setdefault("RUST_LOG", "warn,openraft=off")
        full_env.update(env or {})
        self.args = args
        self.popen = subprocess.Popen(
            args,
            stdout=subprocess.PIPE,
            stderr=None,
            text=True,
            env=full_env,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self.lines.append(line.rstrip("\n"))

    def line(self, starts: str) -> str:
        """The first line that starts with `starts`, waiting for it."""
        until(lambda: any(l.startswith(starts) for l in self.lines) or self.popen.poll() is not None,
              f"{self.args[:2]} printing {starts!r}")
        for l in self.lines:
            if l.startswith(starts):
                return l
        raise RuntimeError(f"{self.args} exited ({self.popen.returncode}) without printing {starts!r}")

    def signal(self, sig: int) -> None:
        self.popen.send_signal(sig)

    def wait(self, timeout: float = LIMIT) -> int:
        return self.popen.wait(timeout=timeout)

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(timeout=LIMIT)


def until(cond: Callable[[], bool], what: str, limit: float = LIMIT) -> None:
    """Waits (polling) until `cond()` holds; fails the test after `limit` seconds."""
    end = time.monotonic() + limit
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


class Local:
    """A `dtc local` cluster: one shard of three replicas, its router, and `workers` Rust
    workers with the built-in task types."""

    def __init__(self, workers: int) -> None:
        self.proc = Proc(
            [dtc_bin(), "local", "-p", "0", "--http", "off", "--shards", "1", "--workers", str(workers)]
        )
        self.router = self.proc.line("router:").split()[-1]
        self.shard = self.proc.line("shard 0 replicas:").split()[-1]


@pytest.fixture(scope="session")
def cluster() -> Iterator[Local]:
    """A cluster with one Rust worker (noop, sleep, wordcount, fail)."""
    local = Local(workers=1)
    yield local
    local.proc.stop()


@pytest.fixture(scope="session")
def bare_cluster() -> Iterator[Local]:
    """A cluster with no worker: the tests' Python workers are the only ones."""
    local = Local(workers=0)
    yield local
    local.proc.stop()


def python_worker(shard: str, *args: str) -> Proc:
    """Starts tests/worker_app.py (the test handlers) as its own process."""
    return Proc([sys.executable, str(HERE / "worker_app.py"), shard, *args])


def dtc(*args: str) -> subprocess.CompletedProcess[str]:
    """Runs a `dtc` command to completion."""
    return subprocess.run([dtc_bin(), *args], capture_output=True, text=True, timeout=LIMIT)


def leader(router: str) -> str:
    """The address of shard 0's leader, as `dtc status` reports it."""
    out = dtc("status", "--router", router, "--json")
    assert out.returncode == 0, out.stderr
    for addr, answer in json.loads(out.stdout)["Cluster"]["shards"][0]["replicas"]:
        if "Ok" in answer and answer["Ok"]["role"] == "Leader":
            return str(addr)
    raise AssertionError("no leader")


@pytest.fixture
def tmp_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="dtc-py-") as d:
        yield Path(d)


__all__ = ["LIMIT", "Local", "Proc", "dtc", "leader", "python_worker", "signal", "until"]
