#!/usr/bin/env bash
# Runs every vitest project and prints the closing line "N passed, N failed" from vitest's JSON
# report (CI reads that line). Exits non-zero when any test failed or the run itself broke.
set -uo pipefail
cd "$(dirname "$0")/.."
mkdir -p test-results
rm -f test-results/vitest.json
vitest run --project unit --project integration --project e2e --reporter=default --reporter=json --outputFile.json=test-results/vitest.json "$@"
status=$?
node scripts/summarize-tests.mjs test-results/vitest.json
summary=$?
[ $status -ne 0 ] && exit $status
exit $summary
