#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for a bounded time (default 60 s each; the first
# argument changes it). Needs the nightly toolchain and cargo-fuzz (installed here if
# missing). A crash stops the run and leaves its input under fuzz/artifacts/TARGET/; keep
# it as a regression test once fixed.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
if ! command -v cargo-fuzz >/dev/null; then
    cargo install cargo-fuzz --locked
fi
targets=$(cargo +nightly fuzz list --fuzz-dir fuzz)
for t in $targets; do
    echo "== $t (${seconds} s)"
    cargo +nightly fuzz run --fuzz-dir fuzz "$t" -- -max_total_time="$seconds" -rss_limit_mb=2048 2>&1 |
        grep -E "^(Done|#[0-9]+ +DONE|==[0-9]+== ERROR|SUMMARY|artifact_prefix)|panicked" || true
    if ls "fuzz/artifacts/$t"/crash-* >/dev/null 2>&1; then
        echo "$t: crash found, see fuzz/artifacts/$t"
        exit 1
    fi
done
echo "every target ran ${seconds} s with no crash"
