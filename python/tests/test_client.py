"""dtc.Client against a real `dtc local` (Rust workers with the built-in task types)."""

from __future__ import annotations

import threading
import uuid

import pytest

import dtc
from conftest import LIMIT, Local


@pytest.fixture(scope="module")
def client(cluster: Local) -> dtc.Client:
    return dtc.Client(cluster.router)


def test_run_returns_the_result_as_bytes_and_text(client: dtc.Client) -> None:
    view = client.run("wordcount", "the quick brown fox", timeout=LIMIT)
    assert view.ok and view.done and view.state == "succeeded"
    assert view.result == b"4" and view.text == "4"
    assert view.attempts == 1 and view.type == "wordcount"
    assert view.finished is not None and view.finished >= view.created
    assert uuid.UUID(view.id)
    same = client.run("wordcount", b"the quick brown fox", timeout=LIMIT)
    assert same.text == "4" and same.id != view.id


def test_submit_returns_at_once_and_get_waits(client: dtc.Client) -> None:
    view = client.submit("sleep", "300000")
    assert view.state in ("queued", "running")
    done = client.get(view.id, wait=True, timeout=LIMIT)
    assert done.state == "succeeded" and done.id == view.id
    assert client.get(view.id).state == "succeeded"


def test_a_given_id_runs_once(client: dtc.Client) -> None:
    id = str(uuid.uuid4())
    first = client.run("wordcount", "one two", id=id, timeout=LIMIT)
    again = client.run("wordcount", "something else entirely", id=id, timeout=LIMIT)
    assert first.id == again.id == id and again.text == "2" and again.attempts == 1


def test_a_failed_task_raises_with_its_error_after_its_attempts(client: dtc.Client) -> None:
    with pytest.raises(dtc.TaskFailed) as failed:
        client.run("fail", "disk on fire", max_attempts=2, backoff=dtc.Backoff(initial=0.05, jitter=0), timeout=LIMIT)
    task = failed.value.task
    assert failed.value.error == "disk on fire"
    assert task.state == "failed" and task.attempts == 2 and task.errors == ["disk on fire"] * 2
    with pytest.raises(dtc.TaskFailed) as fatal:
        client.run("fail", "fatal: no retry", timeout=LIMIT)
    assert fatal.value.task.attempts == 1 and fatal.value.error == "no retry"
    assert isinstance(fatal.value, dtc.DtcError)


def test_retry_runs_a_failed_task_again(client: dtc.Client) -> None:
    with pytest.raises(dtc.TaskFailed) as failed:
        client.run("fail", "fatal: once", timeout=LIMIT)
    id = failed.value.task.id
    again = client.retry(id)
    assert again.state in ("queued", "running", "failed")
    ended = client.get(id, wait=True, timeout=LIMIT)
    assert ended.state == "failed" and ended.errors == ["once", "once"]


def test_delay_schedules_and_cancel_cancels(client: dtc.Client) -> None:
    view = client.submit("noop", delay=60)
    assert view.state == "scheduled" and view.due is not None and view.due >= view.created + 59
    cancelled = client.cancel(view.id)
    assert cancelled.state == "cancelled"
    with pytest.raises(dtc.TaskCancelled):
        client.run("noop", id=view.id, timeout=LIMIT)


def test_an_attempt_over_its_timeout_fails(client: dtc.Client) -> None:
    with pytest.raises(dtc.TaskFailed) as failed:
        client.run("sleep", "5000000", attempt_timeout=0.2, max_attempts=1, timeout=LIMIT)
    assert failed.value.task.attempts == 1
    assert "timed out" in (failed.value.error or "") or "timeout" in (failed.value.error or "")


def test_a_wait_that_runs_out_raises_timeout_and_the_task_goes_on(client: dtc.Client) -> None:
    with pytest.raises(dtc.Timeout) as waited:
        client.run("sleep", "1000000", timeout=0.1)
    assert isinstance(waited.value, TimeoutError)
    assert client.get(waited.value.id, wait=True, timeout=LIMIT).state == "succeeded"


def test_errors_are_python_exceptions_with_their_meaning(client: dtc.Client) -> None:
    with pytest.raises(dtc.NotFound):
        client.get(str(uuid.uuid4()))
    with pytest.raises(LookupError):
        client.get(str(uuid.uuid4()))
    with pytest.raises(dtc.BadRequest):
        client.submit("")
    with pytest.raises(ValueError, match="not a task id"):
        client.get("not-a-uuid")
    with pytest.raises(dtc.BadRequest, match="max_attempts"):
        client.submit("noop", max_attempts=1000)
    with pytest.raises(dtc.BadRequest, match="either delay or at"):
        client.submit("noop", delay=1, at=1e10)
    with pytest.raises(TypeError):
        client.submit("noop", 12)  # type: ignore[arg-type]
    with pytest.raises(dtc.Unavailable) as unreachable:
        dtc.Client("127.0.0.1:1", retry_for=0)
    assert isinstance(unreachable.value, ConnectionError)


def test_one_client_is_shared_by_many_threads(client: dtc.Client) -> None:
    results: list[str] = []
    errors: list[BaseException] = []

    def loop(n: int) -> None:
        try:
            for i in range(40):
                words = " ".join(["w"] * (n + i + 1))
                results.append(client.run("wordcount", words, timeout=LIMIT).text or "")
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=loop, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(LIMIT)
    assert not errors
    expected = sorted(str(n + i + 1) for n in range(8) for i in range(40))
    assert sorted(results) == expected


def test_a_closed_client_refuses_calls(cluster: Local) -> None:
    with dtc.Client(cluster.router) as own:
        assert own.run("noop", timeout=LIMIT).ok
    with pytest.raises(dtc.Unavailable, match="closed"):
        own.run("noop")
