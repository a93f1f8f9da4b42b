#!/usr/bin/env bash
# Runs every benchmark under bench/ (each prints its figures and writes bench/results/*.json),
# then writes docs/benchmarks.md from the results. `make bench` calls this. A failed benchmark
# still lets the report be written from the results that exist, and the exit status says it failed.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)
status=0
vitest run --project bench "$@" || status=$?
BENCH_TOTAL_SECONDS=$(( $(date +%s) - started )) node scripts/bench-report.mjs
exit "$status"
