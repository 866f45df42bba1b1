#!/usr/bin/env bash
# The seed's scaling benchmarks (its benchmark_clients.sh, benchmark_shards.sh,
# benchmark_workers.sh, benchmark_workload.sh and run_all.sh) in one script: runs
# `dtc local --bench` once per point of each sweep and writes one CSV row per run, with
# the topology, to OUT (default results/sweep.csv), and a table to the terminal.
#
#   scripts/bench_sweep.sh                 # every sweep
#   scripts/bench_sweep.sh clients workers # some of them: clients shards workers workload
#   TOTAL=64000 OUT=results/sweep.csv LOCAL_FLAGS="--in-memory" scripts/bench_sweep.sh
#
# Each run submits about TOTAL tasks (default 64,000): -n is TOTAL / clients, from 50 to
# 2,000 tasks per client.
# Outside its own sweep a run uses the seed's benchmark: 2 shards × 3 replicas, 4 workers × 4
# slots per shard, 64 clients, mixed.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ ${1:-} == -h || ${1:-} == --help ]]; then sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0; fi
SWEEPS=("$@")
[[ ${#SWEEPS[@]} -gt 0 ]] || SWEEPS=(clients shards workers workload)
TOTAL=${TOTAL:-64000}
OUT=${OUT:-results/sweep.csv}
LOCAL_FLAGS=${LOCAL_FLAGS:-}
if [[ -z ${DTC:-} ]]; then cargo build --release -q -p dtc; DTC=target/release/dtc; fi
mkdir -p "$(dirname "$OUT")"
[[ -s $OUT ]] || echo "sweep,shards,replicas,workers,slots,clients,workload,tasks_ok,tasks_failed,throughput,avg_ms,p50_ms,p95_ms,p99_ms" > "$OUT"
printf '%-9s %6s %8s %7s %7s %-9s %10s %8s %8s %8s\n' sweep shards replicas workers clients workload tasks/s avg_ms p50_ms p95_ms

run() { # sweep shards replicas workers slots clients workload
  local n=$(( TOTAL / $6 )); (( n >= 50 )) || n=50; (( n <= 2000 )) || n=2000
  # shellcheck disable=SC2086
  local json
  json=$("$DTC" local --bench --json --shards "$2" --replicas "$3" --workers "$4" --slots "$5" \
         -c "$6" -n "$n" -t "$7" $LOCAL_FLAGS 2>/dev/null)
  python3 - "$json" "$@" >> "$OUT" <<'PY'
import json, sys
r = json.loads(sys.argv[1]); sweep, shards, replicas, workers, slots, clients, workload = sys.argv[2:9]
l = r["latency_us"]
print(",".join([sweep, shards, replicas, workers, slots, clients, workload, str(r["tasks_ok"]),
                str(r["tasks_failed"]), f'{r["throughput"]:.0f}', f'{l["avg"]/1000:.3f}',
                f'{l["p50"]/1000:.3f}', f'{l["p95"]/1000:.3f}', f'{l["p99"]/1000:.3f}']))
PY
  tail -n 1 "$OUT" | awk -F, '{ printf "%-9s %6s %8s %7s %7s %-9s %10s %8s %8s %8s\n", $1, $2, $3, $4, $6, $7, $10, $11, $12, $13 }'
}

for sweep in "${SWEEPS[@]}"; do
  case $sweep in
    clients)  for c in 1 8 16 32 64 128; do run clients 2 3 4 4 "$c" mixed; done ;;
    shards)   for s in 1 2 4; do run shards "$s" 3 4 4 64 mixed; done ;;
    workers)  for w in 1 2 4 8; do run workers 2 3 "$w" 4 64 mixed; done ;;
    workload) for t in synthetic word mixed noop; do run workload 2 3 4 4 64 "$t"; done ;;
    *) echo "unknown sweep $sweep (clients, shards, workers, workload)" >&2; exit 2 ;;
  esac
done
echo "rows appended to $OUT"
