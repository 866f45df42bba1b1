"""A dtc worker with two handlers, one plain and one async.

    python examples/worker.py 127.0.0.1:5000,127.0.0.1:5001,127.0.0.1:5002

(the addresses of one shard's coordinators; `dtc local` prints them). It serves until
SIGTERM or Ctrl-C, then finishes the tasks it holds and exits.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections import Counter

import dtc

worker = dtc.Worker(sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:5000", slots=8)


@worker.task("wordfreq")
def wordfreq(task: dtc.Task) -> str:
    """Plain function (runs on a thread pool): the three commonest words, as JSON."""
    words = task.text.lower().split()
    if not words:
        raise dtc.Fatal("nothing to count")  # retrying will not help
    return json.dumps(Counter(words).most_common(3))


@worker.task("remind")
async def remind(task: dtc.Task) -> str:
    """Coroutine function (runs on the worker's event loop): answers after a pause,
    unless the task is cancelled meanwhile."""
    request = json.loads(task.payload)
    await asyncio.sleep(float(request.get("after", 0.01)))
    return f"reminder for {request['who']} (attempt {task.attempt})"


if __name__ == "__main__":
    worker.run()
