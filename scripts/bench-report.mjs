/* global console, process */
// Writes docs/benchmarks.md from bench/results/*.json: machine details, then each benchmark's
// figures beside the baseline measured in the same run, as a ratio.
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

const dir = 'bench/results';
const results = existsSync(dir)
  ? readdirSync(dir).filter((f) => f.endsWith('.json')).sort().map((f) => JSON.parse(readFileSync(join(dir, f), 'utf8')))
  : [];
const fmt = (n) => (Math.abs(n) >= 100 ? String(Math.round(n)) : String(Math.round(n * 100) / 100));
const lines = ['# Benchmarks', '', 'Written by `make bench` (scripts/bench-report.mjs) from `bench/results/*.json`. Every ratio compares', 'a figure with a baseline measured in the same run on the same machine.', ''];
const machine = results[0]?.machine;
if (machine) {
  lines.push(
    '## Machine',
    '',
    `${machine.cpu}, ${machine.cores} cores, ${machine.memoryGiB} GiB, Node ${machine.node}.`,
    ...(process.env.BENCH_TOTAL_SECONDS ? ['', `\`make bench\` took ${Math.round(Number(process.env.BENCH_TOTAL_SECONDS) / 60)} min (${process.env.BENCH_TOTAL_SECONDS} s) for every benchmark below.`] : []),
    '',
    'The machine is shared: other engineers\' test suites may run during a benchmark, so absolute',
    'figures are noisy; each benchmark reports how busy the whole machine was while it ran. The ratios',
    'compare figures taken minutes apart under the same conditions, which is why every benchmark measures',
    'its baseline in the same run.',
    '',
  );
}
// A benchmark run on its own (vitest run --project bench bench/<one>) leaves the other sections
// as the last full run wrote them: a section is replaced only by a result with its title.
const previous = existsSync('docs/benchmarks.md') ? sections(readFileSync('docs/benchmarks.md', 'utf8')) : new Map();
const fresh = new Map(results.map((r) => [r.title, r]));
for (const [title, text] of previous) {
  if ((title !== 'Machine' || !machine) && !fresh.has(title)) lines.push(text.trimEnd(), '');
}
for (const r of results) {
  lines.push(`## ${r.title}`, '', `Measured ${r.machine.date}.`, '');
  if (r.method) lines.push(`How: ${r.method}`, '');
  lines.push('| figure | value | baseline (same run) | ratio | note |', '|---|---|---|---|---|');
  for (const f of r.figures) {
    const base = f.baseline ? `${f.baseline.name}: ${fmt(f.baseline.value)} ${f.unit}` : '';
    const ratio = f.baseline ? `${(f.value / f.baseline.value).toFixed(2)}x` : '';
    const row = [f.name, `${fmt(f.value)} ${f.unit}`, base, ratio, f.note ?? ''].map(cell);
    lines.push(`| ${row.join(' | ')} |`);
  }
  if (r.chart) lines.push('', `![${r.title}](${r.chart})`);
  lines.push('');
}
writeFileSync('docs/benchmarks.md', lines.join('\n'));

/** A table cell: a `|` in a figure's name ("tar | zstd") would end the cell. */
function cell(text) {
  return String(text).replaceAll('|', '\\|');
}

/** `## Title` -> the section's whole text, heading included, in the order they appear. */
function sections(text) {
  const found = new Map();
  const parts = text.split(/^(?=## )/m).slice(1);
  for (const part of parts) found.set(part.slice(3, part.indexOf('\n')).trim(), part);
  return found;
}
console.log(`docs/benchmarks.md written from ${results.length} result file(s)`);
