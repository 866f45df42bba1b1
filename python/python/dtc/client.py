"""Clients: :class:`Client` blocks the calling thread (and is shared safely by many
threads); :class:`AsyncClient` gives the same calls as coroutines, thousands of which share
one connection. Both sit on the Rust SDK's client, which follows the shard's leader and
retries transient failures with the same task id, so a retry never runs a task twice.
"""

from __future__ import annotations

import asyncio
import os
from datetime import datetime
from typing import Any, Optional, Sequence, Union

from . import _native
from ._native import TaskView
from ._options import Backoff, Seconds, native
from .errors import NotFound, TaskCancelled, TaskFailed, Timeout
from .schedules import Schedule

#: A server's address (``"host:port"``), several comma-separated, or a list of them.
Address = Union[str, Sequence[str]]
#: A payload: bytes, or text sent as UTF-8.
Payload = Union[bytes, bytearray, memoryview, str]
#: A path: a secrets directory made by ``dtc secrets init``, or one of its files.
SecretsDir = Union[str, "os.PathLike[str]"]


def _path(path: Optional[SecretsDir]) -> Optional[str]:
    return None if path is None else os.fspath(path)


def _connect(
    address: Address,
    secrets: Optional[SecretsDir],
    ca_file: Optional[SecretsDir],
    token_file: Optional[SecretsDir],
    retry_for: float,
    name: Optional[str],
) -> _native.Client:
    """The native client, connected (blocking) with the given credentials."""
    return _native.Client(
        _addresses(address),
        secrets=_path(secrets),
        ca_file=_path(ca_file),
        token_file=_path(token_file),
        retry_for=retry_for,
        name=name,
    )


def _addresses(address: Address) -> list[str]:
    return [address] if isinstance(address, str) else list(address)


def _finished(view: TaskView) -> TaskView:
    """The view of a finished task, or the exception its failure means."""
    if view.ok:
        return view
    if view.state == "cancelled":
        raise TaskCancelled(view)
    raise TaskFailed(view)


def _timeout(id: str, timeout: Optional[float]) -> Timeout:
    return Timeout(f"task {id} did not finish within {timeout} s; it goes on", id)


class Client:
    """A connection to dtc (a router, or a shard's coordinators), for blocking code.

    When the cluster has secrets, give either ``secrets``, a directory made by
    ``dtc secrets init``, or — what a client program's machine should hold — ``ca_file``
    (the cluster's ``ca.pem``) and ``token_file`` (``client.toml``, the cluster's name and
    the client token). ``retry_for`` is how long (seconds) transient failures — no leader, a full
    queue, a lost connection — are retried before the call raises.
    """

    def __init__(
        self,
        address: Address = "127.0.0.1:6000",
        *,
        secrets: Optional[SecretsDir] = None,
        ca_file: Optional[SecretsDir] = None,
        token_file: Optional[SecretsDir] = None,
        retry_for: float = 60.0,
        name: Optional[str] = None,
    ) -> None:
        self._core = _connect(address, secrets, ca_file, token_file, retry_for, name)

    def submit(
        self,
        type: str,
        payload: Payload = b"",
        *,
        id: Optional[str] = None,
        max_attempts: Optional[int] = None,
        delay: Optional[Seconds] = None,
        at: Optional[Union[datetime, float]] = None,
        attempt_timeout: Optional[Seconds] = None,
        expires: Optional[Seconds] = None,
        backoff: Optional[Backoff] = None,
        queue: Optional[str] = None,
        priority: int = 0,
        key: Optional[str] = None,
        key_limit: int = 1,
    ) -> TaskView:
        """Submits a task and returns as soon as the shard has accepted it.

        ``id`` makes the submit idempotent (submitting an existing id returns that task);
        ``delay`` or ``at`` start it later; ``attempt_timeout`` stops an attempt that runs
        longer; ``expires`` drops it if it has not started by then; ``backoff`` spaces the
        retries of failed attempts, of which there are at most ``max_attempts``. ``queue``
        names the queue it waits in (only workers serving it run it) and ``priority`` (0 to
        9) how soon: higher first, and waiting ages it, so it is never passed by a task that
        became ready more than a second per level after it. ``key`` (such as ``"tenant:42"``)
        lets at most ``key_limit`` of the key's tasks run at once across the cluster; the
        task's id is then routed by the key (so every task of a key lives on one shard), and
        an ``id`` given with it is rewritten: read the id from the returned view.
        """
        options = native(delay, at, attempt_timeout, expires, backoff, queue, priority, key, key_limit)
        view = self._core.submit(type, payload, id, max_attempts, options)
        assert view is not None
        return view

    def run(
        self,
        type: str,
        payload: Payload = b"",
        *,
        timeout: Optional[float] = None,
        id: Optional[str] = None,
        max_attempts: Optional[int] = None,
        delay: Optional[Seconds] = None,
        at: Optional[Union[datetime, float]] = None,
        attempt_timeout: Optional[Seconds] = None,
        expires: Optional[Seconds] = None,
        backoff: Optional[Backoff] = None,
        queue: Optional[str] = None,
        priority: int = 0,
        key: Optional[str] = None,
        key_limit: int = 1,
    ) -> TaskView:
        """Submits a task and waits until it has finished: returns it when it succeeded
        (its result in ``.result``, or ``.text``), raises :class:`TaskFailed` or
        :class:`TaskCancelled` when it did not, and :class:`Timeout` if ``timeout``
        seconds pass first (the task goes on). The options are :meth:`submit`'s."""
        options = native(delay, at, attempt_timeout, expires, backoff, queue, priority, key, key_limit)
        task_id, view = self._core.run(type, payload, id, max_attempts, options, timeout)
        if view is None:
            raise _timeout(task_id, timeout)
        return _finished(view)

    def get(self, id: str, *, wait: bool = False, timeout: Optional[float] = None) -> TaskView:
        """The task as it stands; with ``wait``, once it has finished (raising
        :class:`Timeout` if ``timeout`` seconds pass first). Raises :class:`NotFound` for
        an unknown id."""
        view = self._core.get(id, wait, timeout)
        if view is None:
            raise _timeout(id, timeout)
        return view

    def cancel(self, id: str) -> TaskView:
        """Cancels an unfinished task (a running handler is told to stop)."""
        view = self._core.cancel(id)
        assert view is not None
        return view

    def retry(self, id: str) -> TaskView:
        """Runs a failed task again with fresh attempts."""
        view = self._core.retry(id)
        assert view is not None
        return view

    def add_schedule(
        self,
        name: str,
        cron: str,
        type: str,
        payload: Payload = b"",
        *,
        tz: Optional[str] = None,
        overlap: str = "skip",
        catch_up: str = "one",
        max_attempts: Optional[int] = None,
        queue: Optional[str] = None,
        priority: int = 0,
    ) -> Schedule:
        """Adds a schedule: at each tick of ``cron`` (five fields, or six with seconds
        first) in the IANA zone ``tz`` (UTC by default) it submits a ``type`` task with
        ``payload``, exactly once per tick. ``overlap`` says what a tick does while the
        last tick's task is unfinished (``"skip"`` or ``"allow"``), ``catch_up`` what
        happens to ticks missed while the shard had no leader (``"none"``, ``"one"`` or
        ``"all"``). Adding the same schedule again changes nothing. With secrets this
        needs the cluster's member certificate (like ``dtc schedule add``)."""
        spec = (name, cron, tz, overlap, catch_up, type, payload, max_attempts, queue, priority)
        return self._schedule_one("add", None, spec)

    def schedules(self) -> list[Schedule]:
        """Every schedule (through a router: of every shard), by name."""
        out: list[Schedule] = []
        while True:
            page = self._core.schedule("list", out[-1].name if out else None)
            if not page:
                return out
            out.extend(Schedule.of(row) for row in page)

    def pause_schedule(self, name: str) -> Schedule:
        """Lets the schedule's ticks pass without firing."""
        return self._schedule_one("pause", name)

    def resume_schedule(self, name: str) -> Schedule:
        """Fires again from the next tick on (the ticks while paused are not caught up)."""
        return self._schedule_one("resume", name)

    def trigger_schedule(self, name: str) -> Schedule:
        """Submits the schedule's task now, outside its calendar."""
        return self._schedule_one("trigger", name)

    def delete_schedule(self, name: str) -> None:
        """Removes the schedule (the tasks it submitted stay)."""
        self._core.schedule("delete", name)

    def _schedule_one(self, op: str, name: Optional[str], spec: Any = None) -> Schedule:
        rows = self._core.schedule(op, name, spec)
        if not rows:
            raise NotFound(f"no schedule {name!r}")
        return Schedule.of(rows[0])

    def close(self) -> None:
        """Closes the connection once the calls in flight are answered."""
        self._core.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class AsyncClient:
    """A connection to dtc for asyncio code: the calls of :class:`Client` as coroutines.
    Make one with ``await AsyncClient.connect(...)`` inside the event loop that uses it;
    any number of concurrent calls share its connection."""

    def __init__(self, core: _native.Client, loop: asyncio.AbstractEventLoop) -> None:
        """Use :meth:`connect`."""
        self._core = core
        self._loop = loop
        self._mailbox = _native.Mailbox()
        self._closed = False
        loop.add_reader(self._mailbox.fileno(), self._on_answers)

    def _on_answers(self) -> None:
        waiting = self._mailbox.drain()
        if self._closed and waiting == 0:
            self._loop.remove_reader(self._mailbox.fileno())

    @classmethod
    async def connect(
        cls,
        address: Address = "127.0.0.1:6000",
        *,
        secrets: Optional[SecretsDir] = None,
        ca_file: Optional[SecretsDir] = None,
        token_file: Optional[SecretsDir] = None,
        retry_for: float = 60.0,
        name: Optional[str] = None,
    ) -> AsyncClient:
        """Connects (see :class:`Client` for the arguments) without blocking the loop."""
        loop = asyncio.get_running_loop()
        core = await loop.run_in_executor(
            None, lambda: _connect(address, secrets, ca_file, token_file, retry_for, name)
        )
        return cls(core, loop)

    def _future(self) -> asyncio.Future[TaskView]:
        if asyncio.get_running_loop() is not self._loop:
            raise RuntimeError("an AsyncClient is used only by the event loop that connected it")
        return self._loop.create_future()

    async def _wait(self, future: asyncio.Future[TaskView], id: str, timeout: Optional[float]) -> TaskView:
        if timeout is None:
            return await future
        try:
            return await asyncio.wait_for(future, timeout)
        except asyncio.TimeoutError:
            raise _timeout(id, timeout) from None

    async def submit(
        self,
        type: str,
        payload: Payload = b"",
        *,
        id: Optional[str] = None,
        max_attempts: Optional[int] = None,
        delay: Optional[Seconds] = None,
        at: Optional[Union[datetime, float]] = None,
        attempt_timeout: Optional[Seconds] = None,
        expires: Optional[Seconds] = None,
        backoff: Optional[Backoff] = None,
        queue: Optional[str] = None,
        priority: int = 0,
        key: Optional[str] = None,
        key_limit: int = 1,
    ) -> TaskView:
        """:meth:`Client.submit` as a coroutine."""
        future = self._future()
        options = native(delay, at, attempt_timeout, expires, backoff, queue, priority, key, key_limit)
        self._core.start_submit(self._mailbox, future, type, payload, False, id, max_attempts, options)
        return await future

    async def run(
        self,
        type: str,
        payload: Payload = b"",
        *,
        timeout: Optional[float] = None,
        id: Optional[str] = None,
        max_attempts: Optional[int] = None,
        delay: Optional[Seconds] = None,
        at: Optional[Union[datetime, float]] = None,
        attempt_timeout: Optional[Seconds] = None,
        expires: Optional[Seconds] = None,
        backoff: Optional[Backoff] = None,
        queue: Optional[str] = None,
        priority: int = 0,
        key: Optional[str] = None,
        key_limit: int = 1,
    ) -> TaskView:
        """:meth:`Client.run` as a coroutine."""
        future = self._future()
        options = native(delay, at, attempt_timeout, expires, backoff, queue, priority, key, key_limit)
        task_id = self._core.start_submit(
            self._mailbox, future, type, payload, True, id, max_attempts, options
        )
        view = await future if timeout is None else await self._wait(future, task_id, timeout)
        return view if view.ok else _finished(view)

    async def get(self, id: str, *, wait: bool = False, timeout: Optional[float] = None) -> TaskView:
        """:meth:`Client.get` as a coroutine."""
        future = self._future()
        self._core.start_call(self._mailbox, future, "wait" if wait else "get", id)
        return await self._wait(future, id, timeout)

    async def cancel(self, id: str) -> TaskView:
        """:meth:`Client.cancel` as a coroutine."""
        future = self._future()
        self._core.start_call(self._mailbox, future, "cancel", id)
        return await future

    async def retry(self, id: str) -> TaskView:
        """:meth:`Client.retry` as a coroutine."""
        future = self._future()
        self._core.start_call(self._mailbox, future, "retry", id)
        return await future

    async def close(self) -> None:
        """Closes the connection once the calls in flight are answered; new calls raise
        :class:`Unavailable`."""
        if self._closed:
            return
        self._closed = True
        self._core.close()
        if self._mailbox.outstanding == 0:
            self._loop.remove_reader(self._mailbox.fileno())

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()
