import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sql } from 'kysely';
import { expect, it } from 'vitest';
import { ROOT } from '../../test/support/blytz-serve.js';
import { createTestDatabase } from '../../test/support/postgres.js';
import { report } from '../support.js';

/**
 * bench/engine: N customers in real Postgres, a simulated world. Cold full pass (everything is
 * created) and steady-state resync pass (nothing to do), against a baseline measured in the same
 * run: the same controller and queue with a reconcile that does nothing. Then LIVE more customers
 * arrive one at a time as the change feed hands them over (no full pass's listing to read from).
 *
 * The controller runs in a plain Node process of its own (bench/engine/engine-process.ts on the
 * built code, dist/: build first), so its CPU and memory are the controller's and not vitest's
 * (about 96 MiB of RSS before a customer exists). BENCH_PROFILE_DIR=<dir> writes a CPU profile of
 * each pass; BENCH_HEAP_SNAPSHOT_DIR=<dir> a heap snapshot with the steady pass's listing held.
 */
const N = Number(process.env['BENCH_ENGINE_CUSTOMERS'] ?? 10_000);
const LIVE = Number(process.env['BENCH_ENGINE_LIVE_CUSTOMERS'] ?? 200);

/**
 * The Node flags the controller runs with (bin/blytz, the Dockerfile): V8's young generation
 * capped at 2 x 16 MiB. BENCH_ENGINE_NODE_FLAGS replaces them ('' for V8's own sizing).
 */
const NODE_FLAGS = (process.env['BENCH_ENGINE_NODE_FLAGS'] ?? '--max-semi-space-size=16').split(' ').filter(Boolean);

/** What engine-process.ts measures of one pass. */
interface Pass {
  seconds: number;
  cpuSeconds: number;
  reconciles: number;
  transactions: number;
  worldReads: number;
  rss: number;
  live: number;
  /** Right after the pass, before any forced collection: V8's heap committed (in all, by space) and memory outside it. */
  memory: {
    rss: number;
    heapTotal: number;
    heapUsed: number;
    external: number;
    arrayBuffers: number;
    spaces: Record<string, number>;
  };
}
interface Result {
  rssAtStart: number;
  liveAtStart: number;
  baseline: Pass;
  cold: Pass;
  steady: Pass;
  live: Pass;
  peakRss: number;
}

/** Runs the controller's passes in their own process; what it measured. */
async function runEngineProcess(databaseUrl: string, liveNames: string[]): Promise<Result> {
  const dir = mkdtempSync(join(tmpdir(), 'blytz-bench-engine-'));
  const resultFile = join(dir, 'result.json');
  try {
    const child = spawn(
      process.execPath,
      [...NODE_FLAGS, '--import', join(ROOT, 'bench/built-imports.mjs'), join(ROOT, 'bench/engine/engine-process.ts')],
      {
        cwd: ROOT,
        env: {
          ...process.env,
          DATABASE_URL: databaseUrl,
          N: String(N),
          LIVE_NAMES: liveNames.join(','),
          RESULT_FILE: resultFile,
        },
        stdio: ['ignore', 'inherit', 'pipe'],
      },
    );
    let stderr = '';
    child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
    const code = await new Promise<number | null>((resolve, reject) => {
      child.once('error', reject);
      child.once('exit', resolve);
    });
    if (code !== 0) throw new Error(`engine process exited with ${code}: ${stderr}`);
    return JSON.parse(readFileSync(resultFile, 'utf8')) as Result;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

it(`engine: ${N} customers`, { timeout: 900_000 }, async () => {
  const db = await createTestDatabase();
  try {
    await sql`
      INSERT INTO customers (name, email, display_name, state, instructions)
      SELECT 'c' || lpad(i::text, 6, '0'), 'c' || i || '@example.com', 'Customer ' || i, 'active', 'I run a shop.' || chr(10) || '- answer mail'
      FROM generate_series(1, ${N}) AS i
    `.execute(db.handle.db);
    const liveNames = Array.from({ length: LIVE }, (_, i) => `live${String(i).padStart(6, '0')}`);
    const { rssAtStart, liveAtStart, baseline, cold, steady, live, peakRss } = await runEngineProcess(db.url, liveNames);

    const ready = await sql<{ n: number }>`SELECT count(*)::int AS n FROM customers WHERE status->>'phase' = 'Ready'`.execute(
      db.handle.db,
    );
    expect(ready.rows[0]?.n).toBe(N + LIVE);

    report(
      'engine',
      `Engine: ${N} customers, real Postgres, simulated world, 4 workers`,
      [
        {
          name: 'cold pass wall time',
          value: cold.seconds,
          unit: 's',
          baseline: { name: 'no-op pass', value: baseline.seconds },
        },
        {
          name: 'cold pass CPU',
          value: cold.cpuSeconds,
          unit: 's',
          baseline: { name: 'no-op pass CPU', value: baseline.cpuSeconds },
        },
        { name: 'cold pass reconciles', value: cold.reconciles, unit: 'reconciles' },
        {
          name: 'cold pass Postgres transactions per reconcile',
          value: cold.transactions / cold.reconciles,
          unit: 'tx',
          note: 'goal: at most 4',
        },
        {
          name: 'cold pass world reads (Docker + Caddy)',
          value: cold.worldReads,
          unit: 'calls',
          note: 'one listing, then one look at each customer after its actions',
        },
        {
          name: 'steady-state pass wall time',
          value: steady.seconds,
          unit: 's',
          baseline: { name: 'no-op pass', value: baseline.seconds },
        },
        {
          name: 'steady-state pass CPU',
          value: steady.cpuSeconds,
          unit: 's',
          baseline: { name: 'no-op pass CPU', value: baseline.cpuSeconds },
          note: 'goal: at most 2 s',
        },
        { name: 'steady-state pass reconciles', value: steady.reconciles, unit: 'reconciles' },
        { name: 'steady-state Postgres transactions per reconcile', value: steady.transactions / steady.reconciles, unit: 'tx' },
        {
          name: 'steady-state world reads (Docker + Caddy)',
          value: steady.worldReads,
          unit: 'calls',
          note: 'constant, not one per customer',
        },
        {
          name: `new customer reconciled live (${LIVE}, one at a time as the change feed hands them over): Postgres transactions per reconcile`,
          value: live.transactions / live.reconciles,
          unit: 'tx',
          note: 'goal: at most 4',
        },
        {
          name: 'RSS after the cold pass',
          value: cold.rss / 2 ** 20,
          unit: 'MiB',
          baseline: { name: 'RSS of the process at its start', value: rssAtStart / 2 ** 20 },
        },
        {
          name: 'RSS after the steady-state pass',
          value: steady.rss / 2 ** 20,
          unit: 'MiB',
          baseline: { name: 'RSS of the process at its start', value: rssAtStart / 2 ** 20 },
        },
        {
          name: 'peak RSS',
          value: peakRss / 2 ** 20,
          unit: 'MiB',
          note: "goal: at most 300 MB (286 MiB); the controller's own process: the built code, the simulated world and node-postgres",
        },
        {
          name: 'V8 heap committed after the steady-state pass',
          value: steady.memory.heapTotal / 2 ** 20,
          unit: 'MiB',
          note: `of which in use before a collection ${Math.round(steady.memory.heapUsed / 2 ** 20)} MiB; outside V8's heap (buffers) ${Math.round(steady.memory.external / 2 ** 20)} MiB; the rest of RSS is code and the runtime`,
        },
        {
          name: 'live heap with the steady-state listing held (after a full GC)',
          value: steady.live / 2 ** 20,
          unit: 'MiB',
          baseline: { name: "live heap at the process's start", value: liveAtStart / 2 ** 20 },
          note: 'what the process keeps; RSS is V8 heap grown beyond this, code and buffers',
        },
      ],
      {
        method:
          "N customers inserted with SQL (active, no port, no container); the CustomerReconciler with the real store (PortReservations, CustomerStore) on the simulated world of test/support/simulated-world.ts (in memory, every call counted), run by the Controller with 4 workers. Cold: the first full pass (one listing, then every customer created: workspace, port, container, route, status). Steady: a second full pass with nothing to do. Baseline: the same Controller and queue with a reconcile that does nothing. Live: 200 more customers enqueued one at a time as the change feed would, with no listing to read from. Transactions are counted on the client (a statement outside BEGIN ... COMMIT is one, an explicit transaction is one). CPU is the controller process's (user + system) during the pass, less a forced GC taken to measure the live heap. The controller runs in a plain Node process of its own on the built code, with the Node flags it ships with (--max-semi-space-size=16, as bin/blytz and the Dockerfile) (bench/engine/engine-process.ts; vitest only fills the database and checks every customer ended Ready), so CPU and RSS are the controller's, the simulated world's and node-postgres's, not the test runner's; the live heap is heap used right after a full GC with the steady pass's listing held.",
        memory: { cold: cold.memory, steady: steady.memory, live: live.memory },
      },
    );
  } finally {
    await db.drop();
  }
});
