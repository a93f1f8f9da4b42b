import { execFileSync } from 'node:child_process';
import { sql, type Kysely } from 'kysely';
import { it } from 'vitest';
import type { Database } from '../../src/store/schema.js';
import { instanceContainers, startServe, STUB_IMAGE, type Served } from '../../test/support/blytz-serve.js';
import { notAnswering, sampleAvailability } from '../../test/support/availability.js';
import { createTestDatabase } from '../../test/support/postgres.js';
import { waitFor } from '../../test/support/wait-for.js';
import { percentile, report } from '../support.js';

/**
 * bench/rollout: N customers on a real Docker engine and a real Caddy (the built `blytz serve`
 * on real Postgres) rolled to a new image by changing BLYTZ_CUSTOMER_IMAGE and restarting the
 * server, the way an operator does. Twice in the same run: the health-gated rollout (default
 * BLYTZ_ROLLOUT_MAX_UNAVAILABLE=10%) and the naive "recreate everyone at once" (the same
 * controller with BLYTZ_ROLLOUT_MAX_UNAVAILABLE=100%). A sampler asks every customer's host
 * through Caddy every 100 ms; a customer is down while its host does not answer 200.
 */
const N = Number(process.env['BENCH_ROLLOUT_CUSTOMERS'] ?? 50);
const SAMPLE_MS = 100;

interface RolloutRun {
  periodMs: number;
  totalSeconds: number;
  maxDown: number;
  downtimeP50: number;
  downtimeP99: number;
  customersDown: number;
}

it(`rollout: ${N} customers to a new image, gated vs all at once`, { timeout: 900_000 }, async () => {
  const images = ['blytz/assistant-stub:bench-v2', 'blytz/assistant-stub:bench-v3'];
  for (const image of images) execFileSync('docker', ['tag', STUB_IMAGE, image]);
  const db = await createTestDatabase();
  const served = await startServe({ databaseUrl: db.url, env: { LOG_LEVEL: 'warn' } });
  const names = Array.from({ length: N }, (_, i) => `bench-${String(i).padStart(3, '0')}`);
  try {
    for (const name of names) {
      await sql`
        INSERT INTO customers (name, email, display_name, state, instructions)
        VALUES (${name}, ${`${name}@example.com`}, 'Ada', 'active', 'I run a shop.')
      `.execute(db.handle.db);
    }
    await waitFor(async () => (await readyCount(db.handle.db)) === N, 600_000);

    const gated = await rollTo(served, db.handle.db, names, images[0]!, '10%');
    const naive = await rollTo(served, db.handle.db, names, images[1]!, '100%');

    const figures = [
      {
        name: 'total time, gated',
        value: gated.totalSeconds,
        unit: 's',
        baseline: { name: 'all at once', value: naive.totalSeconds },
      },
      {
        name: 'most customers down at once, gated',
        value: gated.maxDown,
        unit: 'customers',
        baseline: { name: 'all at once', value: naive.maxDown },
        note: `of ${N}; limit 10% = ${Math.max(1, Math.floor(N / 10))}; one sample asks all ${N} hosts over ${gated.periodMs} ms, so a customer just finished and the next just started can both fall in one sample (test/e2e/rollout.test.ts asserts the limit)`,
      },
      {
        name: 'per-customer downtime p50, gated',
        value: gated.downtimeP50,
        unit: 's',
        baseline: { name: 'all at once', value: naive.downtimeP50 },
      },
      {
        name: 'per-customer downtime p99, gated',
        value: gated.downtimeP99,
        unit: 's',
        baseline: { name: 'all at once', value: naive.downtimeP99 },
      },
    ];
    report('rollout', `Fleet rollout: ${N} customers to a new image (real Docker and Caddy)`, figures, {
      method:
        'change BLYTZ_CUSTOMER_IMAGE and restart `blytz serve`; sample every host through Caddy every 100 ms until every container runs the new image and every customer is Ready. Baseline: the same controller with BLYTZ_ROLLOUT_MAX_UNAVAILABLE=100% (recreate all at once). Both runs use one worker per customer (BLYTZ_WORKERS=N), so only the rollout limits concurrency. The stub image starts in about a second; OpenClaw takes 30 s to 2 min, which stretches the gated total time proportionally while the number down at once stays at the limit.',
      gated,
      naive,
    });
  } finally {
    await served.stop();
    await db.drop();
  }
});

async function readyCount(db: Kysely<Database>): Promise<number> {
  const r = await sql<{ n: number }>`SELECT count(*)::int AS n FROM customers WHERE status->>'phase' = 'Ready'`.execute(db);
  return r.rows[0]?.n ?? 0;
}

async function rollTo(
  served: Served,
  db: Kysely<Database>,
  names: string[],
  image: string,
  maxUnavailable: string,
): Promise<RolloutRun> {
  const sampler = sampleAvailability(names, (name) => notAnswering(served.caddyListenPort, `${name}.blytz.localhost`), SAMPLE_MS);
  const started = Date.now();
  served.env['BLYTZ_CUSTOMER_IMAGE'] = image;
  served.env['BLYTZ_ROLLOUT_MAX_UNAVAILABLE'] = maxUnavailable;
  // One worker per customer: with the default 4 the worker pool, not the rollout, would cap how
  // many are recreated at once, and "all at once" would be 4 at a time.
  served.env['BLYTZ_WORKERS'] = String(names.length);
  await served.stopProcess();
  await served.restart();
  await waitFor(async () => {
    const containers = await instanceContainers(served.instance);
    return (
      containers.length === names.length &&
      containers.every((c) => c.Image === image && c.State === 'running') &&
      (await readyCount(db)) === names.length
    );
  }, 600_000);
  const totalSeconds = (Date.now() - started) / 1000;
  const samples = await sampler.stop();
  const periodMs = samples.length > 1 ? (samples.at(-1)!.at - samples[0]!.at) / (samples.length - 1) : NaN;
  // Downtime is measured to the sampling period: each sample that found the customer down counts
  // one period (a stray failed request is not stretched into everything between it and the recreate).
  const downtimes = names.map((name) => (samples.filter((s) => s.down.includes(name)).length * periodMs) / 1000);
  return {
    periodMs: Math.round(periodMs),
    totalSeconds,
    maxDown: Math.max(0, ...samples.map((s) => s.down.length)),
    downtimeP50: percentile(downtimes, 50),
    downtimeP99: percentile(downtimes, 99),
    customersDown: downtimes.filter((d) => d > 0).length,
  };
}
