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
  lines.push('## Machine', '', `${machine.cpu}, ${machine.cores} cores, ${machine.memoryGiB} GiB, Node ${machine.node}.`, '');
}
for (const r of results) {
  lines.push(`## ${r.title}`, '', `Measured ${r.machine.date}.`, '', '| figure | value | baseline (same run) | ratio | note |', '|---|---|---|---|---|');
  for (const f of r.figures) {
    const base = f.baseline ? `${f.baseline.name}: ${fmt(f.baseline.value)} ${f.unit}` : '';
    const ratio = f.baseline ? `${(f.value / f.baseline.value).toFixed(2)}x` : '';
    lines.push(`| ${f.name} | ${fmt(f.value)} ${f.unit} | ${base} | ${ratio} | ${f.note ?? ''} |`);
  }
  if (r.chart) lines.push('', `![${r.title}](${r.chart})`);
  lines.push('');
}
writeFileSync('docs/benchmarks.md', lines.join('\n'));
console.log(`docs/benchmarks.md written from ${results.length} result file(s)`);
