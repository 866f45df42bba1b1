#!/usr/bin/env bash
# Benchmarks the seed's topology as separate processes on 127.0.0.1: SHARDS coordinators,
# WORKERS workers × SLOTS slots per shard, one router, and `dtc client` with the arguments
# given to this script (e.g. -c 64 -n 10000 -t mixed --json). Every process it starts is
# stopped when it exits.
#
#   scripts/bench_processes.sh -c 64 -n 10000 -t mixed
#   SHARDS=2 WORKERS=4 SLOTS=4 scripts/bench_processes.sh -t noop --json
#   DTC=path/to/dtc scripts/bench_processes.sh …   (a given binary instead of building one)
#   WORKER_FLAGS="--prefetch 0" scripts/bench_processes.sh …   (extra flags for every worker)
set -euo pipefail
cd "$(dirname "$0")/.."

SHARDS=${SHARDS:-2}
WORKERS=${WORKERS:-4}
SLOTS=${SLOTS:-4}
BASE_PORT=${BASE_PORT:-15000}
ROUTER_PORT=${ROUTER_PORT:-16000}

if [ -z "${DTC:-}" ]; then
  cargo build --release -q -p dtc
  DTC=target/release/dtc
fi
export RUST_LOG=${RUST_LOG:-warn}

pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

wait_port() {
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "nothing is listening on port $1" >&2
  exit 1
}

shard_flags=()
for s in $(seq 0 $((SHARDS - 1))); do
  port=$((BASE_PORT + s))
  "$DTC" coordinator -p "$port" >/dev/null & pids+=($!)
  wait_port "$port"
  for _ in $(seq 1 "$WORKERS"); do
    "$DTC" worker -p "$port" -w "$SLOTS" ${WORKER_FLAGS:-} >/dev/null & pids+=($!)
  done
  shard_flags+=(-s "127.0.0.1:$port")
done
"$DTC" router -p "$ROUTER_PORT" "${shard_flags[@]}" >/dev/null & pids+=($!)
wait_port "$ROUTER_PORT"
sleep 0.2 # let the workers register

"$DTC" client -p "$ROUTER_PORT" "$@"
