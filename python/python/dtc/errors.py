"""The exceptions of dtc's Python package.

Calls raise a subclass of :class:`DtcError` that says what the caller can do about it;
each also derives from the matching built-in exception (``ConnectionError``,
``LookupError``, ``ValueError``, ``PermissionError``, ``TimeoutError``), so that code that
knows nothing of dtc still handles it sensibly.

Handlers raise :class:`Fatal` to fail a task for good and :class:`RetryAfter` to choose
when it runs again; any other exception fails the attempt, which the task's backoff
retries while attempts remain.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._native import TaskView


class DtcError(Exception):
    """The base of every error a dtc call raises."""


class Unavailable(DtcError, ConnectionError):
    """No server could be reached, or the shard had no leader for longer than the client's
    ``retry_for``. Retrying later with the same task id is safe."""


class Overloaded(DtcError):
    """The shard's queue (or a connection's bound) stayed full for longer than the client's
    ``retry_for``. Retry later with the same task id."""


class NotFound(DtcError, LookupError):
    """No task has this id: it was never submitted, or its result has expired."""


class BadRequest(DtcError, ValueError):
    """The request was malformed or out of bounds (an empty type, too many attempts, a bad
    id); retrying it unchanged fails again."""


class Refused(DtcError, PermissionError):
    """The server refused this client's credentials (missing, of another role, or of
    another cluster)."""


class Timeout(DtcError, TimeoutError):
    """A wait ran out before the task finished. The task goes on; ``id`` finds it."""

    def __init__(self, message: str, id: str) -> None:
        super().__init__(message)
        self.id = id


class TaskFailed(DtcError):
    """The task finished without a result: its handler failed (and attempts ran out, or it
    failed fatally). ``task`` is the task as it ended; ``error`` is its last error."""

    def __init__(self, task: TaskView) -> None:
        super().__init__(f"task {task.id} ({task.type}) {task.state}: {task.error}")
        self.task = task

    @property
    def error(self) -> str | None:
        """The error that ended the task."""
        return self.task.error


class TaskCancelled(TaskFailed):
    """The task was cancelled before it finished."""


class Fatal(Exception):
    """Raised by a handler: the task fails for good, with no further attempt."""


class RetryAfter(Exception):
    """Raised by a handler: the attempt failed; run the next one after ``delay`` seconds
    (while attempts remain), whatever the task's backoff says."""

    def __init__(self, message: str, delay: float) -> None:
        super().__init__(message)
        self.delay = delay
