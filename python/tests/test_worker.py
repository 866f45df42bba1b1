"""dtc.Worker: Python handlers (plain, async, raising, CPU-bound) serving tasks from the
Python client and from the `dtc` command line, and draining on SIGTERM. The workers run
as their own processes (tests/worker_app.py) on a cluster with no other worker."""

from __future__ import annotations

import json
import signal
import threading
import time
from typing import Iterator

import pytest

import dtc
from conftest import LIMIT, Local, Proc, dtc as dtc_cmd, python_worker, until


@pytest.fixture(scope="module")
def worker(bare_cluster: Local) -> Iterator[Proc]:
    proc = python_worker(bare_cluster.shard)
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def client(bare_cluster: Local, worker: Proc) -> dtc.Client:
    return dtc.Client(bare_cluster.router)


def test_plain_and_async_handlers_serve_the_python_client(client: dtc.Client) -> None:
    assert client.run("upper", "hello", timeout=LIMIT).text == "HELLO"
    assert client.run("aupper", b"async hello", timeout=LIMIT).result == b"ASYNC HELLO"
    assert client.run("noop", timeout=LIMIT).result == b""
    view = client.run("whoami", timeout=LIMIT)
    assert view.text == f"{view.id} 1 whoami"


def test_a_raised_exception_fails_the_attempt_with_its_traceback(client: dtc.Client) -> None:
    with pytest.raises(dtc.TaskFailed) as failed:
        client.run("boom", "x", max_attempts=2, backoff=dtc.Backoff(initial=0.02, jitter=0), timeout=LIMIT)
    task = failed.value.task
    assert task.attempts == 2, "a plain exception is retried"
    assert "Traceback (most recent call last)" in task.errors[0]
    assert "ValueError: bad input 'x'" in task.errors[0]
    with pytest.raises(dtc.TaskFailed) as fatal:
        client.run("aboom", max_attempts=5, timeout=LIMIT)
    assert fatal.value.task.attempts == 1, "dtc.Fatal is not retried"
    assert fatal.value.error == "no point retrying"


def test_a_cpu_bound_handler_does_not_make_its_worker_look_dead(bare_cluster: Local, client: dtc.Client) -> None:
    # Three seconds of GIL-holding work, three times the coordinators' heartbeat timeout,
    # while other tasks keep being served by the same worker's other slots.
    spinning = client.submit("spin", "3", max_attempts=1)
    served = 0
    end = time.monotonic() + 2.5
    while time.monotonic() < end:
        assert client.run("upper", "still here", timeout=LIMIT).text == "STILL HERE"
        served += 1
    done = client.get(spinning.id, wait=True, timeout=LIMIT)
    assert done.ok and done.attempts == 1, done.errors
    assert int(done.text or "0") > 0
    assert served > 0
    status = dtc_cmd("status", "--router", bare_cluster.router, "--json")
    shard = json.loads(status.stdout)["Cluster"]["shards"][0]
    leaders = [a["Ok"] for _, a in shard["replicas"] if "Ok" in a and a["Ok"]["role"] == "Leader"]
    assert [w["name"] for w in leaders[0]["workers"]] != []


def test_a_handler_sees_its_task_cancelled(client: dtc.Client) -> None:
    view = client.submit("until_cancelled", max_attempts=1)
    until(lambda: client.get(view.id).state == "running", "the task to start")
    client.cancel(view.id)
    assert client.get(view.id, wait=True, timeout=LIMIT).state == "cancelled"


def test_the_dtc_command_line_is_served_by_a_python_worker(bare_cluster: Local, client: dtc.Client) -> None:
    port = bare_cluster.router.rsplit(":", 1)[1]
    out = dtc_cmd("submit", "-p", port, "upper", "from the command line")
    assert out.returncode == 0, out.stderr
    assert "FROM THE COMMAND LINE" in out.stdout
    bench = dtc_cmd("client", "-p", port, "-t", "noop", "-c", "4", "-n", "50", "--json")
    assert bench.returncode == 0, bench.stderr
    report = json.loads(bench.stdout)
    assert report["tasks_ok"] == 200 and report["tasks_failed"] == 0, report


def test_sigterm_drains_a_worker_holding_tasks_and_none_is_lost(bare_cluster: Local, tmp_dir: object) -> None:
    # A worker of its own, on a shard where the module's worker also serves: the tasks are
    # of a type only this test's workers take (worker_app.py's third argument).
    client = dtc.Client(bare_cluster.router)
    first = python_worker(bare_cluster.shard, "2", "slow_drained")
    try:
        first.line("worker starting")
        ids = [client.submit("slow_drained", "0.5", max_attempts=1).id for _ in range(6)]
        until(lambda: any(client.get(i).state == "running" for i in ids), "a slow task to start")
        first.signal(signal.SIGTERM)
        assert first.wait(LIMIT) == 0
        assert first.lines[-1] == "worker stopped"
        held = [i for i in ids if client.get(i).state == "succeeded"]
        assert held, "the draining worker finished the tasks it held"
        # What it did not hold waits for another worker; nothing is lost.
        second = python_worker(bare_cluster.shard, "4", "slow_drained")
        try:
            for i in ids:
                view = client.get(i, wait=True, timeout=LIMIT)
                assert view.ok and view.attempts == 1, (i, view.state, view.errors)
        finally:
            second.stop()
    finally:
        first.stop()


def test_a_second_signal_stops_a_draining_worker_at_once(bare_cluster: Local) -> None:
    client = dtc.Client(bare_cluster.router)
    worker = python_worker(bare_cluster.shard, "1", "slow_stopped")
    try:
        worker.line("worker starting")
        long = client.submit("slow_stopped", "30", max_attempts=2)
        until(lambda: client.get(long.id).state == "running", "the long task to start")
        worker.signal(signal.SIGTERM)
        time.sleep(0.3)
        assert worker.popen.poll() is None, "the first signal drains: the worker waits for its task"
        worker.signal(signal.SIGTERM)
        assert worker.wait(LIMIT) == 0
        # It left without finishing the task, which the shard queues again for another.
        until(lambda: client.get(long.id).state in ("queued", "retrying"), "the task to be queued again")
        assert client.get(long.id).attempts == 1
        client.cancel(long.id)
    finally:
        worker.stop()


def test_a_worker_in_a_thread_stops_when_asked(bare_cluster: Local) -> None:
    worker = dtc.Worker(bare_cluster.shard, slots=1)

    @worker.task("in_thread")
    def in_thread(task: dtc.Task) -> str:
        return "from a thread"

    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        client = dtc.Client(bare_cluster.router)
        assert client.run("in_thread", timeout=LIMIT).text == "from a thread"
    finally:
        worker.stop()
        thread.join(LIMIT)
    assert not thread.is_alive()


def test_queues_and_priorities_reach_the_python_worker(bare_cluster: Local) -> None:
    """A worker of queue "py-urgent" runs that queue's tasks, highest priority first; the
    bad arguments are refused before anything is sent."""
    order: list[str] = []
    worker = dtc.Worker(bare_cluster.shard, slots=1, prefetch=0, queues=["py-urgent"])

    @worker.task("note")
    def note(task: dtc.Task) -> str:
        order.append(task.text)
        return task.text

    client = dtc.Client(bare_cluster.router)
    # Ready at the same instant, before the worker comes: priority alone orders them.
    at = time.time() + 0.5
    views = [
        client.submit("note", str(p), queue="py-urgent", priority=p, at=at) for p in (2, 9, 0, 5, 7)
    ]
    while time.time() < at + 0.2:
        time.sleep(0.05)
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        for v in views:
            done = client.get(v.id, wait=True, timeout=LIMIT)
            assert done.state == "succeeded"
            assert (done.queue, done.priority) == ("py-urgent", int(done.text))
        assert order == ["9", "7", "5", "2", "0"]
        with pytest.raises(dtc.BadRequest):
            client.submit("note", "x", priority=10)
        with pytest.raises(dtc.BadRequest):
            client.submit("note", "x", queue="no spaces")
        with pytest.raises(ValueError):
            dtc.Worker(bare_cluster.shard, queues=["no spaces"])
    finally:
        worker.stop()
        thread.join(LIMIT)


def test_a_concurrency_key_bounds_a_python_workers_tasks(bare_cluster: Local) -> None:
    """Twenty tasks of key "py:1" (two at a time) on a worker with four slots: the worker
    never runs more than two at once, and each view carries its key."""
    lock = threading.Lock()
    running = [0, 0]  # now, most
    worker = dtc.Worker(bare_cluster.shard, slots=4, prefetch=0, queues=["py-keyed"])

    @worker.task("keyed")
    def keyed(task: dtc.Task) -> str:
        with lock:
            running[0] += 1
            running[1] = max(running[1], running[0])
        time.sleep(0.02)
        with lock:
            running[0] -= 1
        return task.text

    client = dtc.Client(bare_cluster.router)
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        views = [
            client.submit("keyed", str(i), queue="py-keyed", key="py:1", key_limit=2)
            for i in range(20)
        ]
        for v in views:
            done = client.get(v.id, wait=True, timeout=LIMIT)
            assert done.state == "succeeded"
            assert (done.key, done.key_limit) == ("py:1", 2)
        assert running[1] == 2
        # An id given with a key is routed by the key: the view says which id it became.
        given = "0192f0c1-7e4a-7b3c-9d2e-4f5a6b7c8d9e"
        routed = client.submit("keyed", "x", queue="py-keyed", id=given, key="py:1")
        assert routed.id != given and routed.id[14] == "8"
        assert client.submit("keyed", "x", queue="py-keyed", id=given, key="py:1").id == routed.id
        with pytest.raises(dtc.BadRequest):
            client.submit("keyed", "x", key="py:1", key_limit=0)
    finally:
        worker.stop()
        thread.join(LIMIT)


def test_schedules_from_python(bare_cluster: Local) -> None:
    """A per-second schedule added from Python submits its task at each tick, which a
    Python worker runs; list, pause, trigger and delete do what they say, and a calendar
    that cannot be read is refused."""
    ran: list[str] = []
    worker = dtc.Worker(bare_cluster.shard, slots=2, queues=["py-cron"])

    @worker.task("py-tick")
    def tick(task: dtc.Task) -> str:
        ran.append(task.id)
        return "ok"

    client = dtc.Client(bare_cluster.router)
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        added = client.add_schedule("py-every-second", "* * * * * *", "py-tick", queue="py-cron")
        assert (added.name, added.tz, added.overlap, added.catch_up) == (
            "py-every-second", None, "skip", "one"
        )
        assert added.next is not None and added.next > added.last_tick
        until(lambda: len(ran) >= 2, "two ticks ran")
        listed = {s.name: s for s in client.schedules()}
        assert listed["py-every-second"].fired >= 2
        paused = client.pause_schedule("py-every-second")
        assert paused.paused and paused.next is None
        triggered = client.trigger_schedule("py-every-second")
        assert triggered.fired == paused.fired + 1
        until(lambda: triggered.last_task in ran, "the triggered task ran")
        client.delete_schedule("py-every-second")
        assert "py-every-second" not in {s.name for s in client.schedules()}
        with pytest.raises(dtc.BadRequest):
            client.add_schedule("bad", "every second", "py-tick")
    finally:
        worker.stop()
        thread.join(LIMIT)


def test_a_python_handlers_progress_shows_while_it_runs(bare_cluster: Local) -> None:
    """task.progress() from a Python handler is what client.get() shows while it runs."""
    release = threading.Event()
    worker = dtc.Worker(bare_cluster.shard, slots=1, queues=["py-progress"])

    @worker.task("py-long")
    def long(task: dtc.Task) -> str:
        task.progress(0.5, "half of it")
        release.wait(LIMIT)
        return "done"

    client = dtc.Client(bare_cluster.router)
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        view = client.submit("py-long", "", queue="py-progress")
        until(lambda: client.get(view.id).progress is not None, "the progress report")
        assert client.get(view.id).progress == (0.5, "half of it")
        release.set()
        finished = client.get(view.id, wait=True, timeout=LIMIT)
        assert finished.state == "succeeded" and finished.progress is None
    finally:
        release.set()
        worker.stop()
        thread.join(LIMIT)
