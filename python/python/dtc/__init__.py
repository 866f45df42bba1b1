"""dtc: submit tasks to a dtc cluster and run them in Python.

::

    import dtc

    client = dtc.Client("127.0.0.1:6000")
    print(client.run("wordcount", "the quick brown fox").text)   # "4"

    worker = dtc.Worker("127.0.0.1:5000")

    @worker.task("upper")
    def upper(task: dtc.Task) -> str:
        return task.text.upper()

    worker.run()   # until SIGTERM / Ctrl-C, then drains

See ``python/README.md`` for the whole API.
"""

from ._native import Task, TaskView, __version__
from ._options import Backoff
from .client import AsyncClient, Client
from .errors import (
    BadRequest,
    DtcError,
    Fatal,
    NotFound,
    Overloaded,
    Refused,
    RetryAfter,
    TaskCancelled,
    TaskFailed,
    Timeout,
    Unavailable,
)
from .schedules import Schedule
from .worker import Worker

__all__ = [
    "AsyncClient",
    "Backoff",
    "BadRequest",
    "Client",
    "DtcError",
    "Fatal",
    "NotFound",
    "Overloaded",
    "Refused",
    "RetryAfter",
    "Schedule",
    "Task",
    "TaskCancelled",
    "TaskFailed",
    "TaskView",
    "Timeout",
    "Unavailable",
    "Worker",
    "__version__",
]
