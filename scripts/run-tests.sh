#!/usr/bin/env bash
# Runs every vitest project and prints the closing line "N passed, N failed" from vitest's JSON
# reports (CI reads that line). Exits non-zero when any test failed or a run itself broke.
#
# Two runs: unit, integration, e2e and e2e-openclaw together; then the chaos project alone, because it loads
# the machine and restarts its own Postgres and Docker engine under a server it times (see
# test/chaos/). Extra arguments go to the first run only.
set -uo pipefail
cd "$(dirname "$0")/.."
mkdir -p test-results
rm -f test-results/vitest.json test-results/chaos.json
vitest run --project unit --project integration --project e2e --project e2e-openclaw --reporter=default --reporter=json --outputFile.json=test-results/vitest.json "$@"
status=$?
vitest run --project chaos --reporter=default --reporter=json --outputFile.json=test-results/chaos.json
chaos_status=$?
node scripts/summarize-tests.mjs test-results/vitest.json test-results/chaos.json
summary=$?
[ $status -ne 0 ] && exit $status
[ $chaos_status -ne 0 ] && exit $chaos_status
exit $summary
