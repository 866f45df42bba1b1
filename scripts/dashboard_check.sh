#!/usr/bin/env bash
# Checks the dashboard in headless Chromium: starts `dtc local` with its HTTP API, loads it
# with the benchmark client, drives the page (scripts/dashboard/check.mjs) and writes
# screenshots to docs/img/. Needs Debian's chromium (apt-get install chromium) and Node.js;
# playwright-core is installed into scripts/dashboard/node_modules on first run.
#
#   scripts/dashboard_check.sh            # release build
#   DTC=target/debug/dtc scripts/dashboard_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/dashboard/prepare.sh
ROUTER=$(free_port); HTTP=$(free_port)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
"$DTC" local -p "$ROUTER" --http "127.0.0.1:$HTTP" > /dev/null 2>&1 & pids+=($!)
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$HTTP/v1/cluster" > /dev/null && break; sleep 0.2; done
# Load for the page to show: bounded in count (16 × 20,000 tasks), stopped at exit.
"$DTC" client -p "$ROUTER" -c 16 -n 20000 -t mixed > /dev/null 2>&1 & pids+=($!)
mkdir -p docs/img
node scripts/dashboard/check.mjs "http://127.0.0.1:$HTTP" docs/img
