#!/usr/bin/env bash
# Runs every benchmark under bench/ (each prints its figures and writes bench/results/*.json),
# then writes docs/benchmarks.md from the results. `make bench` calls this.
set -euo pipefail
cd "$(dirname "$0")/.."
vitest run --project bench "$@"
node scripts/bench-report.mjs
