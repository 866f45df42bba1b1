"""A failover is invisible to a Python client: the shard's leader is killed (SIGKILL)
while a client runs tasks through the router, and every `run` returns its result."""

from __future__ import annotations

import socket
import threading
from pathlib import Path
from typing import Iterator

import pytest

import dtc
from conftest import LIMIT, Proc, dtc_bin, leader, until


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def replicated(tmp_dir: Path) -> Iterator[tuple[str, dict[str, Proc]]]:
    """Three coordinator processes of one shard, a router and a worker."""
    addrs = [f"127.0.0.1:{free_port()}" for _ in range(3)]
    procs: dict[str, Proc] = {}
    others: list[Proc] = []
    try:
        for i, addr in enumerate(addrs):
            args = [dtc_bin(), "coordinator", "-p", addr.rsplit(":", 1)[1], "--data-dir", str(tmp_dir / f"r{i}")]
            for peer in addrs:
                if peer != addr:
                    args += ["--peer", peer]
            procs[addr] = Proc(args)
        for p in procs.values():
            p.line("coordinator listening")
        shard = ",".join(addrs)
        router = Proc([dtc_bin(), "router", "-p", "0", "--http", "off", "-s", shard])
        others.append(router)
        others.append(Proc([dtc_bin(), "worker", "-s", shard, "-w", "4"]))
        yield router.line("router listening").split()[-1], procs
    finally:
        for p in [*others, *procs.values()]:
            p.stop()


def test_killing_the_leader_is_invisible_to_run(replicated: tuple[str, dict[str, Proc]]) -> None:
    router, replicas = replicated
    client = dtc.Client(router, retry_for=LIMIT)
    results: list[str] = []
    errors: list[BaseException] = []

    def loop() -> None:
        try:
            for i in range(150):
                results.append(client.run("wordcount", " ".join(["w"] * (i % 5 + 1)), timeout=LIMIT).text or "")
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=loop) for _ in range(4)]
    for t in threads:
        t.start()
    until(lambda: len(results) >= 100, "tasks before the kill")
    old = leader(router)
    replicas[old].stop()
    before = len(results)
    for t in threads:
        t.join(LIMIT * 2)
    assert not errors, errors
    assert before < 600, "the leader was killed mid-run"
    assert sorted(results) == sorted(str(i % 5 + 1) for _ in range(4) for i in range(150))
    assert leader(router) != old
