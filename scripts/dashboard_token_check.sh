#!/usr/bin/env bash
# Checks the secured dashboard in headless Chromium: starts `dtc local --secure` (its
# credentials in a temporary directory) and drives the page (scripts/dashboard/token.mjs):
# asked for a token once, the cluster shown with the admin token, not asked again on
# reload. Needs Debian's chromium (apt-get install chromium) and Node.js.
#
#   scripts/dashboard_token_check.sh            # release build
#   DTC=target/debug/dtc scripts/dashboard_token_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/dashboard/prepare.sh
ROUTER=$(free_port); HTTP=$(free_port); DATA=$(mktemp -d)
pid=
cleanup() { [[ -n $pid ]] && kill "$pid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$DATA"; }
trap cleanup EXIT
"$DTC" local --secure --data-dir "$DATA" -p "$ROUTER" --http "127.0.0.1:$HTTP" > /dev/null 2>&1 & pid=$!
# Served once it answers at all (401: a token is wanted).
for _ in $(seq 50); do
  [[ $(curl -sk -o /dev/null -w '%{http_code}' "https://127.0.0.1:$HTTP/v1/cluster") == 401 ]] && break
  sleep 0.2
done
TOKEN=$(python3 -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["tokens"]["admin"])' "$DATA/secrets/secrets.toml")
node scripts/dashboard/token.mjs "https://127.0.0.1:$HTTP" "$TOKEN"
