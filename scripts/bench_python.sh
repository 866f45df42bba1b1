#!/usr/bin/env bash
# Benchmarks the Python package against a `dtc local` cluster (one shard of 3 replicas,
# logs fsynced, release build): python/benchmarks/bench.py with the arguments given, then
# the CPU time (user + system, from /proc) each role spent per task.
#
#   scripts/bench_python.sh -c 64 -n 1000            # against 4 Rust workers (noop)
#   PY_WORKERS=4 scripts/bench_python.sh -c 64 -n 1000  # against 4 Python worker processes
#   scripts/bench_python.sh -c 1 -n 2000 [--sync]    # one task in flight: the round trip
#   SHARDS=2 LOCAL_FLAGS=--in-memory scripts/bench_python.sh …
#
# The package is built (release) into target/python-bench-venv on first use; rebuild with
# REBUILD=1, or give another environment with the package installed as VENV=DIR (to
# alternate two builds). Every process it starts is stopped when it exits.
set -euo pipefail
cd "$(dirname "$0")/.."

SHARDS=${SHARDS:-1}
PY_WORKERS=${PY_WORKERS:-0}
venv=${VENV:-target/python-bench-venv}
if [ ! -x "$venv/bin/python" ] || [ -n "${REBUILD:-}" ]; then
    "${PYTHON:-python3}" -m venv "$venv"
    "$venv/bin/pip" install --quiet ./python
fi
cargo build --release -q -p dtc
export RUST_LOG=${RUST_LOG:-warn,openraft=error}

out=$(mktemp)
local_pid=
worker_pids=()
cleanup() {
    # The workers first (they drain and exit), then the cluster they report to.
    if [ ${#worker_pids[@]} -gt 0 ]; then
        kill "${worker_pids[@]}" 2>/dev/null || true
        wait "${worker_pids[@]}" 2>/dev/null || true
    fi
    if [ -n "$local_pid" ]; then
        kill "$local_pid" 2>/dev/null || true
        wait "$local_pid" 2>/dev/null || true
    fi
    rm -f "$out"
}
trap cleanup EXIT INT TERM

rust_workers=4
if [ "$PY_WORKERS" -gt 0 ]; then rust_workers=0; fi
# shellcheck disable=SC2086 # LOCAL_FLAGS is a list of flags
target/release/dtc local -p 0 --http off --shards "$SHARDS" --workers "$rust_workers" ${LOCAL_FLAGS:-} >"$out" &
local_pid=$!
for _ in $(seq 1 100); do
    grep -q "^router:" "$out" && break
    sleep 0.05
done
router=$(awk '/^router:/ { print $2 }' "$out")
[ -n "$router" ] || { echo "dtc local did not start" >&2; exit 1; }
mapfile -t shards < <(awk '/^shard [0-9]+ replicas:/ { print $4 }' "$out")
for i in $(seq 0 $((PY_WORKERS - 1))); do
    "$venv/bin/python" python/benchmarks/noop_worker.py "${shards[$((i % ${#shards[@]}))]}" 4 2>/dev/null &
    worker_pids+=($!)
done

cpu() { # the CPU seconds (user + system) of the given processes, with their threads
    local t=0 p f
    for p in "$@"; do
        read -r -a f <"/proc/$p/stat"
        t=$((t + f[13] + f[14]))
    done
    echo "$t"
}
# Warm up first (also waits for the Python workers to register), then measure.
"$venv/bin/python" python/benchmarks/bench.py "$router" -c 1 -n 1 --warmup 500 --json >/dev/null
c0=$(cpu "$local_pid")
w0=$(cpu "${worker_pids[@]+"${worker_pids[@]}"}")
report=$("$venv/bin/python" python/benchmarks/bench.py "$router" --warmup 0 --json "$@")
c1=$(cpu "$local_pid")
w1=$(cpu "${worker_pids[@]+"${worker_pids[@]}"}")
tasks=$("$venv/bin/python" -c 'import json,sys; print(json.loads(sys.argv[1])["tasks"])' "$report")
hz=$(getconf CLK_TCK)
echo "$report"
awk -v c=$((c1 - c0)) -v w=$((w1 - w0)) -v n="$tasks" -v hz="$hz" -v pw="$PY_WORKERS" 'BEGIN {
    printf "CPU per task: cluster (dtc local) %.1f us", c / hz / n * 1e6
    if (pw > 0) printf ", %d Python workers together %.1f us", pw, w / hz / n * 1e6
    printf "\n"
}'
