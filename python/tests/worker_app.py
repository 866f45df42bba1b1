"""The test handlers, served by a Python worker in its own process:
`python worker_app.py SHARD [SLOTS [TYPE]]`. Each handler exercises one promise of
dtc.Worker; TYPE is one more name for `slow`, that only this worker serves."""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Optional

import dtc

worker = dtc.Worker(sys.argv[1], slots=int(sys.argv[2]) if len(sys.argv) > 2 else 4, heartbeat=0.1)


@worker.task("upper")
def upper(task: dtc.Task) -> str:
    return task.text.upper()


@worker.task("aupper")
async def aupper(task: dtc.Task) -> bytes:
    await asyncio.sleep(0.01)
    return task.payload.upper()


@worker.task("noop")
def noop(task: dtc.Task) -> None:
    return None


@worker.task("whoami")
def whoami(task: dtc.Task) -> str:
    return f"{task.id} {task.attempt} {task.type}"


@worker.task("boom")
def boom(task: dtc.Task) -> None:
    raise ValueError(f"bad input {task.text!r}")


@worker.task("aboom")
async def aboom(task: dtc.Task) -> None:
    raise dtc.Fatal("no point retrying")


@worker.task("spin")
def spin(task: dtc.Task) -> str:
    """Keeps the CPU (and the GIL) busy for the payload's seconds."""
    end = time.monotonic() + float(task.text)
    rounds = 0
    while time.monotonic() < end:
        sum(range(100_000))  # a C loop that does not let go of the GIL
        rounds += 1
    return str(rounds)


@worker.task("slow")
def slow(task: dtc.Task) -> str:
    time.sleep(float(task.text))
    return "slept"


@worker.task("until_cancelled")
def until_cancelled(task: dtc.Task) -> Optional[str]:
    end = time.monotonic() + 30
    while time.monotonic() < end:
        if task.cancelled:
            return "saw the cancel"
        time.sleep(0.01)
    return None


if len(sys.argv) > 3:
    worker.task(sys.argv[3])(slow)


if __name__ == "__main__":
    print("worker starting", flush=True)
    worker.run()
    print("worker stopped", flush=True)
