"""Workers: Python functions as the handlers of dtc task types.

A plain function runs on one of the worker's threads (one per slot); an ``async def``
function runs on an event loop the worker starts. Registration, prefetch, heartbeats,
following the shard's leader and draining are the Rust SDK's, on threads that never wait
for the GIL, so a handler that keeps the CPU busy never makes its worker look dead.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import signal
import sys
import threading
import time
from types import FrameType
from typing import Any, Awaitable, Callable, Mapping, Optional, Sequence, TypeVar, Union

from . import _native
from ._native import Task
from .client import Address, SecretsDir, _addresses, _path

log = logging.getLogger("dtc.worker")

#: What a handler returns: the task's result (``str`` is sent as UTF-8; ``None`` is empty).
Result = Union[bytes, bytearray, memoryview, str, None]
#: A handler: a function of the task, plain or ``async``.
Handler = Callable[[Task], Union[Result, Awaitable[Result]]]
H = TypeVar("H", bound=Handler)


class Worker:
    """Runs handlers for the tasks of one shard.

    ``shard`` is the addresses of the shard's coordinators (``"host:port,host:port"`` or a
    list); the worker finds and follows their leader. ``slots`` tasks run at once and
    ``prefetch`` more wait ready (default: as many as the slots). ``queues`` are the named
    queues it takes tasks from (default: only ``"default"``); a dict gives them weights
    (``{"critical": 3, "default": 1}``: while both have tasks ready, three of every four
    slots go to ``critical``). ``builtins`` adds dtc's
    built-in task types (``noop``, ``sleep``, ``wordcount``, ``fail``). With secrets, give
    ``ca_file`` (the cluster's ``ca.pem``) and ``token_file`` (``worker.toml``), or a whole
    ``secrets`` directory.
    """

    def __init__(
        self,
        shard: Address,
        *,
        slots: int = 4,
        prefetch: Optional[int] = None,
        name: Optional[str] = None,
        heartbeat: float = 0.2,
        builtins: bool = False,
        secrets: Optional[SecretsDir] = None,
        ca_file: Optional[SecretsDir] = None,
        token_file: Optional[SecretsDir] = None,
        queues: Union[Sequence[str], Mapping[str, int]] = (),
    ) -> None:
        if isinstance(queues, Mapping):
            queues = [f"{name}={weight}" for name, weight in queues.items()]
        self._core = _native.Worker(
            _addresses(shard),
            slots=slots,
            prefetch=prefetch,
            name=name,
            heartbeat=heartbeat,
            builtins=builtins,
            secrets=_path(secrets),
            ca_file=_path(ca_file),
            token_file=_path(token_file),
            queues=list(queues),
        )
        self._handlers: dict[str, Handler] = {}
        self._slots = slots
        self._signals = 0

    def task(self, name: Optional[str] = None) -> Callable[[H], H]:
        """Registers the decorated function as the handler of task type ``name`` (default:
        the function's name). It gets a :class:`Task` and returns the result; raising
        fails the attempt (``Fatal``: for good; ``RetryAfter``: retried after its delay;
        anything else: retried by the task's backoff, with the traceback as its error)."""

        def register(fn: H) -> H:
            self._handlers[name or fn.__name__] = fn
            return fn

        return register

    def run(self) -> None:
        """Serves until SIGTERM or SIGINT (Ctrl-C), or :meth:`stop`: then stops taking
        tasks, finishes those it holds, reports them and returns. A second signal stops at
        once (the shard runs what was unfinished elsewhere). Signals are handled only when
        called from the main thread."""
        handlers = [(kind, fn, inspect.iscoroutinefunction(fn)) for kind, fn in self._handlers.items()]
        loop: Optional[asyncio.AbstractEventLoop] = None
        thread: Optional[threading.Thread] = None
        if any(is_async for _, _, is_async in handlers):
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name="dtc-worker-loop", daemon=True)
            thread.start()
        self._signals = 0
        previous: dict[signal.Signals, Any] = {}
        # The handlers' threads: one per slot, each calling handlers until the run ends.
        pool = [
            threading.Thread(target=self._core.serve, name=f"dtc-handler-{i}", daemon=True)
            for i in range(self._slots)
        ]
        try:
            self._core.start(handlers, loop)
            for thread_ in pool:
                thread_.start()
            if threading.current_thread() is threading.main_thread():
                for sig in (signal.SIGINT, signal.SIGTERM):
                    previous[sig] = signal.signal(sig, self._on_signal)
            while not self._core.wait(0.1):
                pass
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            # The threads end with the run. A handler that ignores its cancellation may
            # still be running after a second signal: its thread is a daemon, waited for
            # only a moment, and does not hold up the exit.
            deadline = time.monotonic() + 1.0
            for thread_ in pool:
                if thread_.is_alive():
                    thread_.join(timeout=max(0.0, deadline - time.monotonic()))
            if loop is not None and thread is not None:
                loop.call_soon_threadsafe(loop.stop)
                thread.join(timeout=5)

    def stop(self, *, now: bool = False) -> None:
        """Stops :meth:`run` from another thread: drains (finishes what the worker holds),
        or with ``now`` returns at once."""
        self._core.stop(now)

    def _on_signal(self, signum: int, frame: Optional[FrameType]) -> None:
        self._signals += 1
        name = signal.Signals(signum).name
        if self._signals == 1:
            print(
                f"dtc worker: {name}: finishing the tasks it holds (send it again to stop at once)",
                file=sys.stderr,
                flush=True,
            )
            self._core.stop(False)
        else:
            print(f"dtc worker: {name} again: stopping now", file=sys.stderr, flush=True)
            self._core.stop(True)
