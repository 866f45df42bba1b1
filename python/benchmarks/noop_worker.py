"""A Python worker whose `noop` handler does nothing, for the benchmarks:

    python benchmarks/noop_worker.py SHARD [SLOTS]
"""

from __future__ import annotations

import sys

import dtc

worker = dtc.Worker(sys.argv[1], slots=int(sys.argv[2]) if len(sys.argv) > 2 else 4)


@worker.task("noop")
def noop(task: dtc.Task) -> None:
    return None


if __name__ == "__main__":
    worker.run()
