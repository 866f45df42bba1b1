#!/usr/bin/env bash
# Benchmarks the seed's topology as separate processes on 127.0.0.1: SHARDS shards of
# REPLICAS coordinator replicas (logs fsynced under DATA, a fresh temporary directory by
# default), WORKERS workers × SLOTS slots per shard, one router, and `dtc client` with the
# arguments given to this script (e.g. -c 64 -n 10000 -t mixed --json). Every process it
# starts is stopped when it exits, and the temporary data directory removed.
#
#   scripts/bench_processes.sh -c 64 -n 10000 -t mixed
#   SHARDS=2 REPLICAS=3 WORKERS=4 SLOTS=4 scripts/bench_processes.sh -t noop --json
#   DTC=path/to/dtc scripts/bench_processes.sh …   (a given binary instead of building one)
#   WORKER_FLAGS="--prefetch 0" scripts/bench_processes.sh …   (extra flags for every worker)
#   COORD_FLAGS="--in-memory" scripts/bench_processes.sh …     (extra flags for every replica)
#   PIDS_FILE=f scripts/bench_processes.sh …   (writes "role shard pid" lines, e.g. to watch memory)
#   CPU_FILE=f scripts/bench_processes.sh …    (after the client: "role shard pid ticks rss_kib"
#                                               lines: each process's utime+stime from
#                                               /proc/PID/stat, and its VmRSS)
set -euo pipefail
cd "$(dirname "$0")/.."

SHARDS=${SHARDS:-2}
REPLICAS=${REPLICAS:-3}
WORKERS=${WORKERS:-4}
SLOTS=${SLOTS:-4}
BASE_PORT=${BASE_PORT:-15000}
ROUTER_PORT=${ROUTER_PORT:-16000}

if [ -z "${DTC:-}" ]; then
  cargo build --release -q -p dtc
  DTC=target/release/dtc
fi
export RUST_LOG=${RUST_LOG:-warn}

own_data=
if [ -z "${DATA:-}" ]; then
  DATA=$(mktemp -d "${TMPDIR:-/tmp}/dtc-bench.XXXXXX")
  own_data=1
fi

pids=()
cleanup() {
  kill "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  if [ -n "$own_data" ]; then rm -rf "$DATA"; fi
}
trap cleanup EXIT INT TERM

wait_port() {
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "nothing is listening on port $1" >&2
  exit 1
}

roles=()
note() {
  roles+=("$1 $2 $3")
  if [ -n "${PIDS_FILE:-}" ]; then echo "$1 $2 $3" >>"$PIDS_FILE"; fi
}
if [ -n "${PIDS_FILE:-}" ]; then : >"$PIDS_FILE"; fi

shard_flags=()
for s in $(seq 0 $((SHARDS - 1))); do
  list=()
  for r in $(seq 0 $((REPLICAS - 1))); do
    list+=("127.0.0.1:$((BASE_PORT + s * 10 + r))")
  done
  csv=$(IFS=,; echo "${list[*]}")
  for r in $(seq 0 $((REPLICAS - 1))); do
    port=$((BASE_PORT + s * 10 + r))
    peers=()
    for other in "${list[@]}"; do
      if [ "$other" != "127.0.0.1:$port" ]; then peers+=(--peer "$other"); fi
    done
    "$DTC" coordinator -p "$port" ${peers[@]+"${peers[@]}"} --data-dir "$DATA/shard$s/replica$r" \
      ${COORD_FLAGS:-} >/dev/null &
    pids+=($!)
    note coordinator "$s" $!
  done
  for r in $(seq 0 $((REPLICAS - 1))); do wait_port $((BASE_PORT + s * 10 + r)); done
  for _ in $(seq 1 "$WORKERS"); do
    "$DTC" worker -s "$csv" -w "$SLOTS" ${WORKER_FLAGS:-} >/dev/null &
    pids+=($!)
    note worker "$s" $!
  done
  shard_flags+=(-s "$csv")
done
"$DTC" router -p "$ROUTER_PORT" --http off "${shard_flags[@]}" >/dev/null & pids+=($!)
note router - $!
wait_port "$ROUTER_PORT"
sleep 0.5 # let the shards elect their leaders and the workers register

"$DTC" client -p "$ROUTER_PORT" "$@"
if [ -n "${CPU_FILE:-}" ]; then
  : >"$CPU_FILE"
  for r in "${roles[@]}"; do
    set -- $r
    # Fields 14 and 15 of /proc/PID/stat (after the parenthesised name): utime, stime.
    ticks=$(sed 's/.*) //' "/proc/$3/stat" | awk '{ print $12 + $13 }')
    rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$3/status")
    echo "$r $ticks $rss" >>"$CPU_FILE"
  done
fi
