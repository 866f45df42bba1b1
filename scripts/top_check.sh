#!/usr/bin/env bash
# Checks `dtc top` in a real terminal: starts `dtc local`, loads it with the benchmark
# client, runs `dtc top` inside tmux, reads the screen (every shard with its leader, a
# non-zero throughput, every worker), presses q and checks that top exited cleanly and left
# the terminal in its normal (canonical, echoing) mode. Needs tmux.
#
#   scripts/top_check.sh            # release build
#   DTC=target/debug/dtc scripts/top_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DTC=${DTC:-target/release/dtc}
command -v tmux > /dev/null || { echo "needs tmux: apt-get install tmux" >&2; exit 2; }
if [[ $DTC == target/release/dtc ]]; then cargo build --release -q -p dtc; fi
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
ROUTER=$(free_port)
SESSION=dtc-top-check-$$
pids=()
cleanup() {
  tmux kill-session -t "$SESSION" 2>/dev/null || true
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT
"$DTC" local -p "$ROUTER" --http off > /dev/null 2>&1 & pids+=($!)
for _ in $(seq 50); do "$DTC" status --router "127.0.0.1:$ROUTER" > /dev/null 2>&1 && break; sleep 0.2; done
# Load for top to show: bounded in count (16 × 20,000 tasks), stopped at exit.
"$DTC" client -p "$ROUTER" -c 16 -n 20000 -t mixed > /dev/null 2>&1 & pids+=($!)
tmux new-session -d -s "$SESSION" -x 140 -y 40 \
  "$DTC top -p $ROUTER; echo \"EXITED \$?\"; stty -a | tr ' ;' '\n\n' | grep -x -e icanon -e -icanon -e echo -e -echo; sleep 60"
sleep 5
screen=$(tmux capture-pane -p -t "$SESSION")
echo "$screen"
fail=0
check() { if eval "$2"; then echo "ok   $1"; else echo "FAIL $1"; fail=1; fi; }
for s in 0 1; do
  check "shard $s shows its leader" "grep -qE '^│$s +[0-9.:]+ #[0-9]+ +leader ' <<< \"\$screen\""
done
check "non-zero throughput" "grep -qE '· [1-9][0-9]* tasks/s' <<< \"\$screen\""
for s in 0 1; do for w in 0 1 2 3; do
  check "worker local-shard$s-worker$w shown" "grep -q 'local-shard$s-worker$w ' <<< \"\$screen\""
done; done
tmux send-keys -t "$SESSION" q
sleep 1
after=$(tmux capture-pane -p -t "$SESSION")
echo "--- after q:"
grep -v '^$' <<< "$after" || true
check "q exits with status 0" "grep -qx 'EXITED 0' <<< \"\$after\""
check "terminal back in canonical mode" "grep -qx icanon <<< \"\$after\""
check "terminal echoes again" "grep -qx echo <<< \"\$after\""
[[ $fail == 0 ]] && echo "top check passed" || { echo "top check failed" >&2; exit 1; }
