import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { join } from 'node:path';

/** A figure with the baseline it is compared to, measured in the same run. */
export interface Figure {
  name: string;
  value: number;
  unit: string;
  baseline?: { name: string; value: number };
  note?: string;
}

export function machine() {
  return {
    cpu: cpus()[0]?.model ?? 'unknown',
    cores: cpus().length,
    memoryGiB: Math.round(totalmem() / 2 ** 30),
    node: process.version,
    date: new Date().toISOString(),
  };
}

/** Prints the figures as a table and writes them to bench/results/<name>.json for the report. */
export function report(name: string, title: string, figures: Figure[], extra: Record<string, unknown> = {}): void {
  const rows = figures.map((f) => {
    const ratio = f.baseline ? ` (${(f.value / f.baseline.value).toFixed(2)}x ${f.baseline.name} = ${round(f.baseline.value)} ${f.unit})` : '';
    return `  ${f.name}: ${round(f.value)} ${f.unit}${ratio}${f.note ? ` — ${f.note}` : ''}`;
  });
  console.log(`\n== ${title} ==\n${rows.join('\n')}\n`);
  const dir = join(import.meta.dirname, 'results');
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, `${name}.json`), JSON.stringify({ name, title, machine: machine(), figures, ...extra }, null, 2));
}

export function round(n: number): number {
  return Math.abs(n) >= 100 ? Math.round(n) : Math.round(n * 100) / 100;
}

export function percentile(values: number[], p: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const index = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[index] as number;
}

/**
 * Runs `fn` under the V8 CPU profiler when BENCH_PROFILE_DIR is set, writing
 * `<dir>/<name>.cpuprofile` (open it in Chrome DevTools or `speedscope`); otherwise just runs it.
 * A profile of one phase (a cold pass, say) says more than `node --cpu-prof` over the whole run.
 */
export async function profiled<T>(name: string, fn: () => Promise<T>): Promise<T> {
  const dir = process.env['BENCH_PROFILE_DIR'];
  if (!dir) return fn();
  const { Session } = await import('node:inspector/promises');
  const session = new Session();
  session.connect();
  await session.post('Profiler.enable');
  await session.post('Profiler.start');
  try {
    return await fn();
  } finally {
    const { profile } = await session.post('Profiler.stop');
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, `${name}.cpuprofile`), JSON.stringify(profile));
    session.disconnect();
  }
}
