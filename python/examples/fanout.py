"""Fans out 1,000 tasks with asyncio over one connection and gathers their results.

    python examples/fanout.py 127.0.0.1:6000

(the router's address), with examples/worker.py serving the shard.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter

import dtc

TEXTS = [
    "the quick brown fox jumps over the lazy dog",
    "a task queue runs tasks and a worker runs a task",
    "raft keeps the log and the log keeps the tasks",
]


async def main(router: str) -> None:
    async with await dtc.AsyncClient.connect(router) as client:
        start = time.monotonic()
        views = await asyncio.gather(
            *(client.run("wordfreq", TEXTS[i % len(TEXTS)], timeout=60) for i in range(1000))
        )
        elapsed = time.monotonic() - start
        top: Counter[str] = Counter()
        for view in views:
            for word, count in json.loads(view.text or "[]"):
                top[word] += count
        print(f"1000 tasks in {elapsed:.2f} s ({1000 / elapsed:,.0f} tasks/s)")
        print("commonest words:", top.most_common(3))
        try:
            await client.run("wordfreq", "   ", timeout=60)
        except dtc.TaskFailed as failed:
            print("an empty text fails for good:", failed.error)
        reminder = await client.run("remind", json.dumps({"who": "ada", "after": 0.05}), timeout=60)
        print(reminder.text)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:6000"))
