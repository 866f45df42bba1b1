# Sourced by the dashboard's check scripts: the dtc binary to run (DTC, built if it is the
# release one), Chromium present, playwright-core installed, and free_port.
DTC=${DTC:-target/release/dtc}
[[ -x /usr/bin/chromium || -n "${CHROMIUM:-}" ]] || { echo "needs chromium: apt-get install chromium" >&2; exit 2; }
if [[ $DTC == target/release/dtc ]]; then cargo build --release -q -p dtc; fi
(cd scripts/dashboard && [[ -d node_modules/playwright-core ]] || npm ci --no-audit --no-fund -s)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
