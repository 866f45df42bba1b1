# Stubs of the native core (python/src). `python -m mypy.stubtest dtc._native` checks them
# against the built module.
from typing import Any, Optional, Sequence, Tuple, final

__all__ = ["Client", "Mailbox", "Task", "TaskView", "Worker", "__version__"]

__version__: str

_Options = Tuple[
    Optional[int],
    Optional[int],
    Optional[int],
    Optional[int],
    Optional[Tuple[int, int, int, int]],
    Optional[str],
    int,
    Optional[Tuple[str, int]],
]

@final
class TaskView:
    """A task as the shard last reported it."""

    @property
    def id(self) -> str: ...
    @property
    def type(self) -> str: ...
    @property
    def state(self) -> str: ...
    @property
    def done(self) -> bool: ...
    @property
    def ok(self) -> bool: ...
    @property
    def attempts(self) -> int: ...
    @property
    def result(self) -> Optional[bytes]: ...
    @property
    def text(self) -> Optional[str]: ...
    @property
    def error(self) -> Optional[str]: ...
    @property
    def errors(self) -> list[str]: ...
    @property
    def created(self) -> float: ...
    @property
    def due(self) -> Optional[float]: ...
    @property
    def finished(self) -> Optional[float]: ...
    @property
    def no_handler(self) -> bool: ...
    @property
    def queue(self) -> str: ...
    @property
    def priority(self) -> int: ...
    @property
    def key(self) -> Optional[str]: ...
    @property
    def key_limit(self) -> Optional[int]: ...
    @property
    def progress(self) -> Optional[tuple[float, str]]: ...

@final
class Task:
    """One attempt of a task, as its handler sees it."""

    @property
    def id(self) -> str: ...
    @property
    def type(self) -> str: ...
    @property
    def attempt(self) -> int: ...
    @property
    def payload(self) -> bytes: ...
    @property
    def text(self) -> str: ...
    @property
    def cancelled(self) -> bool: ...
    def progress(self, fraction: float, message: str = "") -> None: ...

@final
class Mailbox:
    def __new__(cls) -> Mailbox: ...
    def fileno(self) -> int: ...
    @property
    def outstanding(self) -> int: ...
    def drain(self) -> int: ...

@final
class Client:
    def __new__(
        cls,
        addrs: Sequence[str],
        *,
        secrets: Optional[str] = None,
        ca_file: Optional[str] = None,
        token_file: Optional[str] = None,
        retry_for: float = 60.0,
        name: Optional[str] = None,
    ) -> Client: ...
    def submit(
        self,
        kind: str,
        payload: Any,
        id: Optional[str] = None,
        max_attempts: Optional[int] = None,
        options: Optional[_Options] = None,
    ) -> Optional[TaskView]: ...
    def run(
        self,
        kind: str,
        payload: Any,
        id: Optional[str] = None,
        max_attempts: Optional[int] = None,
        options: Optional[_Options] = None,
        timeout: Optional[float] = None,
    ) -> Tuple[str, Optional[TaskView]]: ...
    def get(self, id: str, wait: bool = False, timeout: Optional[float] = None) -> Optional[TaskView]: ...
    def cancel(self, id: str) -> Optional[TaskView]: ...
    def retry(self, id: str) -> Optional[TaskView]: ...
    def start_submit(
        self,
        mailbox: Mailbox,
        future: Any,
        kind: str,
        payload: Any,
        wait: bool,
        id: Optional[str] = None,
        max_attempts: Optional[int] = None,
        options: Optional[_Options] = None,
    ) -> str: ...
    def start_call(self, mailbox: Mailbox, future: Any, what: str, id: str) -> None: ...
    def schedule(
        self, op: str, name: Optional[str] = None, spec: Optional[tuple[Any, ...]] = None
    ) -> list[tuple[Any, ...]]: ...
    def close(self) -> None: ...

@final
class Worker:
    def __new__(
        cls,
        shard: Sequence[str],
        *,
        slots: int = 4,
        prefetch: Optional[int] = None,
        name: Optional[str] = None,
        heartbeat: float = 0.2,
        builtins: bool = False,
        secrets: Optional[str] = None,
        ca_file: Optional[str] = None,
        token_file: Optional[str] = None,
        queues: Sequence[str] = ...,
    ) -> Worker: ...
    def start(self, handlers: Sequence[Tuple[str, Any, bool]], event_loop: Any = None) -> None: ...
    def serve(self) -> None: ...
    def wait(self, timeout: float) -> bool: ...
    def stop(self, now: bool = False) -> None: ...
