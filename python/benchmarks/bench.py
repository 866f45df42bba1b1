"""The Python client's benchmark: `-c` coroutines on one AsyncClient, each running tasks
closed-loop (submit, wait for the result, repeat), `-n` tasks each; or with `--sync`,
`-c` threads sharing one blocking Client. Prints throughput, latency percentiles and this
process's CPU time per task, as text or (`--json`) one JSON object.

    python benchmarks/bench.py 127.0.0.1:6000 -c 64 -n 1000 -t noop
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import threading
import time
from typing import Any

import dtc


def percentile(sorted_ms: list[float], q: float) -> float:
    return sorted_ms[min(len(sorted_ms) - 1, int(q * len(sorted_ms)))]


async def run_async(args: argparse.Namespace, latencies: list[float]) -> None:
    client = await dtc.AsyncClient.connect(args.router)

    async def loop() -> None:
        for _ in range(args.tasks):
            start = time.perf_counter()
            await client.run(args.type, args.payload)
            latencies.append(time.perf_counter() - start)

    await asyncio.wait_for(asyncio.gather(*(loop() for _ in range(args.clients))), args.limit)
    await client.close()


def run_sync(args: argparse.Namespace, latencies: list[float]) -> None:
    client = dtc.Client(args.router)
    errors: list[BaseException] = []

    def loop() -> None:
        try:
            for _ in range(args.tasks):
                start = time.perf_counter()
                client.run(args.type, args.payload)
                latencies.append(time.perf_counter() - start)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=loop) for _ in range(args.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(args.limit)
    if errors:
        raise errors[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("router", nargs="?", default="127.0.0.1:6000", help="the router's address")
    parser.add_argument("-c", "--clients", type=int, default=64, help="tasks in flight (coroutines, or threads with --sync)")
    parser.add_argument("-n", "--tasks", type=int, default=1000, help="tasks per client")
    parser.add_argument("-t", "--type", default="noop", help="the task type")
    parser.add_argument("--payload", default="", help="the payload (text)")
    parser.add_argument("--sync", action="store_true", help="threads on the blocking Client instead of asyncio")
    parser.add_argument("--warmup", type=int, default=200, help="tasks run before measuring")
    parser.add_argument("--limit", type=float, default=300.0, help="give up after this many seconds")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()

    warm = dtc.Client(args.router)
    for _ in range(args.warmup):
        warm.run(args.type, args.payload, timeout=args.limit)
    warm.close()

    latencies: list[float] = []
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    if args.sync:
        run_sync(args, latencies)
    else:
        asyncio.run(run_async(args, latencies))
    wall = time.perf_counter() - start
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    ms = sorted(x * 1000 for x in latencies)
    report: dict[str, Any] = {
        "mode": "sync" if args.sync else "asyncio",
        "clients": args.clients,
        "tasks": len(ms),
        "wall_s": round(wall, 3),
        "throughput": round(len(ms) / wall, 1),
        "latency_ms": {
            "avg": round(sum(ms) / len(ms), 3),
            "p50": round(percentile(ms, 0.50), 3),
            "p99": round(percentile(ms, 0.99), 3),
            "max": round(ms[-1], 3),
        },
        "client_cpu_us_per_task": round(cpu / len(ms) * 1e6, 1),
    }
    if args.json:
        print(json.dumps(report))
    else:
        lat = report["latency_ms"]
        print(
            f"{report['tasks']} {args.type} tasks, {args.clients} in flight ({report['mode']}): "
            f"{report['throughput']:,.0f} tasks/s; latency avg {lat['avg']} ms, p50 {lat['p50']}, "
            f"p99 {lat['p99']}, max {lat['max']}; client CPU {report['client_cpu_us_per_task']} µs/task"
        )


if __name__ == "__main__":
    sys.exit(main())
