// Prints "N passed, N failed" summed over one or more vitest JSON reports (default:
// test-results/vitest.json). A missing or unreadable report counts as a failure, so a run that
// executed nothing never looks green; so does a total of zero passed tests.
/* global process, console */
import { readFileSync } from 'node:fs';

const files = process.argv.length > 2 ? process.argv.slice(2) : ['test-results/vitest.json'];
let passed = 0;
let failed = 0;
let skipped = 0;
const failures = [];
for (const file of files) {
  let report;
  try {
    report = JSON.parse(readFileSync(file, 'utf8'));
  } catch (error) {
    console.log(`no test report at ${file}: ${error.message}`);
    failed += 1;
    continue;
  }
  passed += report.numPassedTests ?? 0;
  for (const result of report.testResults ?? []) {
    const where = String(result.name ?? '').replace(/^.*?\/test\//, 'test/');
    const failedTests = (result.assertionResults ?? []).filter((a) => a.status === 'failed');
    for (const test of failedTests)
      failures.push(`${where} > ${test.fullName ?? test.title}: ${firstLine(test.failureMessages)}`);
    if (result.status === 'failed' && failedTests.length === 0) failures.push(`${where}: ${firstLine([result.message])}`);
  }
  // Files that failed to load (syntax error, failed setup) have no test results of their own.
  const brokenFiles = (report.testResults ?? []).filter(
    (r) => r.status === 'failed' && (r.assertionResults ?? []).every((a) => a.status !== 'failed'),
  ).length;
  failed += (report.numFailedTests ?? 0) + brokenFiles;
  skipped += (report.numPendingTests ?? 0) + (report.numTodoTests ?? 0);
}
// The failures are listed just above the closing line, where a reader of a log's tail looks.
if (failures.length > 0) console.log(`failed:\n${failures.map((f) => `  ${f}`).join('\n')}`);
console.log(skipped > 0 ? `${passed} passed, ${failed} failed, ${skipped} skipped` : `${passed} passed, ${failed} failed`);
process.exit(failed > 0 || passed === 0 ? 1 : 0);

function firstLine(messages) {
  const text = (messages ?? []).find((m) => typeof m === 'string' && m.trim() !== '') ?? 'no message';
  return text.trim().split('\n')[0].slice(0, 300);
}
