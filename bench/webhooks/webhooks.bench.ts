import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { Agent, request as httpRequest } from 'node:http';
import { join } from 'node:path';
import { sql } from 'kysely';
import Stripe from 'stripe';
import { expect, it } from 'vitest';
import { cpuSeconds, machineBusySeconds, summarize, type Summary } from '../lib.js';
import { report, type Figure } from '../support.js';
import { ROOT, freePort, startServe } from '../../test/support/blytz-serve.js';
import { createTestDatabase, type TestDatabase } from '../../test/support/postgres.js';
import { waitFor } from '../../test/support/wait-for.js';

/**
 * bench/webhooks (issue 6): signed Stripe webhooks per second and their latency on real Postgres,
 * with a bounded count (BENCH_WEBHOOK_REQUESTS, default 2,000 per scenario, BENCH_WEBHOOK_CONCURRENCY
 * in flight, default 16).
 *
 * The main figures come from bench/webhooks/bench-server.mjs: the built app (dist/) in its own
 * process with the real webhook router and ledger on Postgres, and, on the same app, the baseline
 * route that only verifies the signature. Beside them, the CPU each party spent per request:
 * the server, the database's Postgres backends (this machine's Postgres, read from /proc) and the
 * load generator (this process), since all three share the machine's cores. A second set comes
 * from the built `blytz serve` itself, unchanged (BLYTZ_TRUST_PROXY=127.0.0.1 and a distinct
 * X-Forwarded-For per request, as real clients would be). BENCH_PROFILE_DIR=<dir> writes the
 * bench server's CPU profile (`--cpu-prof`, the whole run).
 *
 * The database starts as a serving one would be: 200 customers, 50,000 earlier events in the
 * ledger, table statistics (see `seed`).
 *
 * Distinct events: customer.subscription.updated (status active) for one of 200 active customers
 * holding the subscription: ledger row, the customer's change and the ledger outcome, one
 * transaction. Duplicates: 16 already-recorded events sent again and again (answered 200, no change).
 */
const REQUESTS = Number(process.env['BENCH_WEBHOOK_REQUESTS'] ?? 2000);
const CONCURRENCY = Number(process.env['BENCH_WEBHOOK_CONCURRENCY'] ?? 16);
const CUSTOMERS = 200;
const SECRET = 'whsec_bench_blytz_0123456789abcdef';
const PATH = '/api/webhooks/stripe';

interface Load {
  seconds: number;
  latencies: number[];
  statuses: Record<number, number>;
  /** CPU seconds spent during the load by the server, its Postgres backends and this process (the load generator). */
  cpu?: Cpu;
}

interface Cpu {
  server: number;
  postgres: number;
  generator: number;
}

/**
 * CPU seconds so far of the server process, of the Postgres backends serving `database` (this
 * machine's Postgres, so /proc has them) and of this process, which generates the load.
 */
async function cpuNow(serverPid: number, db: TestDatabase): Promise<Cpu> {
  const { rows } = await sql<{ pid: number }>`SELECT pid FROM pg_stat_activity WHERE datname = ${db.name}`.execute(db.handle.db);
  let postgres = 0;
  for (const { pid } of rows) {
    try {
      postgres += cpuSeconds(pid);
    } catch {
      // A backend that ended between the query and the read.
    }
  }
  const self = process.cpuUsage();
  return { server: cpuSeconds(serverPid), postgres, generator: (self.user + self.system) / 1e6 };
}

/** `load` with the CPU each party spent on it. */
async function measured(serverPid: number, db: TestDatabase, run: () => Promise<Load>): Promise<Load> {
  const before = await cpuNow(serverPid, db);
  const result = await run();
  const after = await cpuNow(serverPid, db);
  return {
    ...result,
    cpu: { server: after.server - before.server, postgres: after.postgres - before.postgres, generator: after.generator - before.generator },
  };
}

interface Prepared {
  body: string;
  signature: string;
}

const agent = new Agent({ keepAlive: true, maxSockets: CONCURRENCY });

function post(port: number, path: string, p: Prepared, forwardedFor?: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = {
      'content-type': 'application/json',
      'content-length': String(Buffer.byteLength(p.body)),
      'stripe-signature': p.signature,
    };
    if (forwardedFor) headers['x-forwarded-for'] = forwardedFor;
    const req = httpRequest({ host: '127.0.0.1', port, path, method: 'POST', headers, agent }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('error', reject);
    req.end(p.body);
  });
}

/** Sends every prepared request, CONCURRENCY in flight; throughput and per-request latency. */
async function load(
  port: number,
  path: string,
  prepared: Prepared[],
  spoofClients = false,
): Promise<Load> {
  const latencies: number[] = [];
  const statuses: Record<number, number> = {};
  let next = 0;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      for (;;) {
        const i = next++;
        if (i >= prepared.length) return;
        const t0 = performance.now();
        const status = await post(port, path, prepared[i] as Prepared, spoofClients ? `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}` : undefined);
        latencies.push(performance.now() - t0);
        statuses[status] = (statuses[status] ?? 0) + 1;
      }
    }),
  );
  return { seconds: (performance.now() - started) / 1000, latencies, statuses };
}

/** Several loads as one: requests over total seconds, percentiles over every sample. */
function combine(loads: Load[]): { perSecond: number; latency: Summary; statuses: Record<number, number>; cpuMsPerRequest: Cpu } {
  const latencies = loads.flatMap((l) => l.latencies);
  const statuses: Record<number, number> = {};
  for (const l of loads) for (const [s, c] of Object.entries(l.statuses)) statuses[Number(s)] = (statuses[Number(s)] ?? 0) + c;
  const perRequest = (key: keyof Cpu) => (1000 * loads.reduce((a, l) => a + (l.cpu?.[key] ?? 0), 0)) / latencies.length;
  return {
    perSecond: latencies.length / loads.reduce((a, l) => a + l.seconds, 0),
    latency: summarize(latencies),
    statuses,
    cpuMsPerRequest: { server: perRequest('server'), postgres: perRequest('postgres'), generator: perRequest('generator') },
  };
}

function sign(event: Record<string, unknown>): Prepared {
  const body = JSON.stringify(event);
  return { body, signature: Stripe.webhooks.generateTestHeaderString({ payload: body, secret: SECRET }) };
}

let counter = 0;
function subscriptionEvent(k: number): Record<string, unknown> {
  return {
    id: `evt_bench_${randomBytes(8).toString('hex')}_${counter++}`,
    object: 'event',
    api_version: '2026-10-28.endive',
    created: Math.floor(Date.now() / 1000),
    type: 'customer.subscription.updated',
    data: {
      object: {
        id: `sub_bench_${k}`,
        object: 'subscription',
        customer: `cus_bench_${k}`,
        status: 'active',
        metadata: { blytz_customer: `wh-${k}` },
        items: { object: 'list', data: [] },
        livemode: false,
      },
    },
    livemode: false,
    pending_webhooks: 1,
    request: { id: null, idempotency_key: null },
  };
}

const distinct = (n: number) => Array.from({ length: n }, (_, i) => sign(subscriptionEvent(i % CUSTOMERS)));

/** Events already in the ledger when the run starts: a month of a few hundred customers' events. */
const LEDGER_HISTORY = 50_000;

async function seed(db: TestDatabase): Promise<void> {
  // Active customers already holding their Stripe ids; paused, so a controller leaves them alone.
  await sql`
    INSERT INTO customers (name, email, display_name, state, instructions, paused, stripe_customer_id, stripe_subscription_id)
    SELECT 'wh-' || i, 'wh-' || i || '@example.com', 'Bench', 'active', 'Bench.', true, 'cus_bench_' || i, 'sub_bench_' || i
    FROM generate_series(0, ${CUSTOMERS - 1}) AS i
  `.execute(db.handle.db);
  // A database that has been serving, as autovacuum leaves it: a ledger with history, and table
  // statistics. On an empty, never analysed ledger Postgres plans its lookups as scans of the
  // whole table, and a connection keeps that cached plan while the table grows, so a run of a few
  // seconds measured scans of thousands of rows per batch (a running server's autovacuum analyses
  // the ledger within a minute of its first 50 events, and the plans are made again).
  await sql`
    INSERT INTO webhook_events (event_id, type, customer, outcome, event_created, received_at)
    SELECT 'evt_history_' || i, 'customer.subscription.updated', 'wh-' || (i % ${CUSTOMERS}), 'applied',
      extract(epoch FROM now())::bigint - 2592000 + i * 50, now() - interval '30 days' + i * interval '50 seconds'
    FROM generate_series(1, ${LEDGER_HISTORY}) AS i
  `.execute(db.handle.db);
  await sql`ANALYZE`.execute(db.handle.db);
}

async function ledgerCount(db: TestDatabase): Promise<number> {
  const r = await sql<{ n: number }>`SELECT count(*)::int AS n FROM webhook_events`.execute(db.handle.db);
  return r.rows[0]?.n ?? 0;
}

/** CPU per request of each party, distinct events and duplicates beside verify-only. */
function cpuFigures(...[v, d, u]: Array<ReturnType<typeof combine>>): Figure[] {
  const parties: Array<[keyof Cpu, string]> = [
    ['server', 'the server process'],
    ['postgres', "the database's Postgres backends"],
    ['generator', 'the load generator (this process)'],
  ];
  return parties.flatMap(([key, who]) => {
    // Verify-only never touches Postgres: no baseline to divide by.
    const baseline = key === 'postgres' ? {} : { baseline: { name: 'verify-only', value: v!.cpuMsPerRequest[key] } };
    return [
      { name: `CPU per distinct event: ${who}`, value: d!.cpuMsPerRequest[key], unit: 'ms', ...baseline },
      { name: `CPU per duplicate: ${who}`, value: u!.cpuMsPerRequest[key], unit: 'ms', ...baseline },
    ];
  });
}

it(`webhooks: ${REQUESTS} signed requests per scenario, ${CONCURRENCY} in flight`, { timeout: 600_000 }, async () => {
  const busyStart = machineBusySeconds();
  const wallStart = performance.now();

  // Two servers on two databases seeded alike, side by side for the whole run: the built app
  // beside its verify-only route, and the built `blytz serve` as shipped (every request its own
  // client, as behind a proxy; its controller idles beside it).
  const db = await createTestDatabase();
  const db2 = await createTestDatabase();
  await Promise.all([seed(db), seed(db2)]);
  const port = await freePort();
  // BENCH_PROFILE_DIR: the server's CPU profile over the whole run (warm-up included), written on exit.
  const profileDir = process.env['BENCH_PROFILE_DIR'];
  const profile = profileDir ? ['--cpu-prof', `--cpu-prof-dir=${profileDir}`, '--cpu-prof-name=webhooks-server.cpuprofile'] : [];
  const child = spawn(process.execPath, [...profile, join(ROOT, 'bench/webhooks/bench-server.mjs')], {
    cwd: ROOT,
    env: { ...process.env, DATABASE_URL: db.url, STRIPE_WEBHOOK_SECRET: SECRET, PORT: String(port) },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  const served = await startServe({
    databaseUrl: db2.url,
    instance: `bench-wh-${randomBytes(3).toString('hex')}`,
    env: { STRIPE_WEBHOOK_SECRET: SECRET, BLYTZ_TRUST_PROXY: '127.0.0.1' },
  });
  const runs: Record<string, Load[]> = {};
  const results: Record<string, ReturnType<typeof combine>> = {};
  try {
    await waitFor(async () => {
      if (child.exitCode !== null) throw new Error(`bench server exited: ${stderr}`);
      return (await fetch(`http://127.0.0.1:${port}/healthz`)).ok;
    }, 30_000);

    // Warm-up (not measured): JIT, pool connections, the ledger's index pages.
    await load(port, '/bench/verify-only', distinct(300));
    await load(port, PATH, distinct(300));
    await load(served.port, PATH, distinct(300), true);
    const dupes = Array.from({ length: 16 }, (_, i) => sign(subscriptionEvent(i)));
    await load(port, PATH, dupes);
    await load(served.port, PATH, dupes, true);

    // Two halves per scenario, interleaved, so a burst of load from elsewhere hits all of them alike.
    const half = Math.ceil(REQUESTS / 2);
    const pid = child.pid as number;
    const servePid = served.child.pid as number;
    for (let round = 0; round < 2; round++) {
      const verifyLoad = distinct(half);
      (runs['verify'] ??= []).push(await measured(pid, db, () => load(port, '/bench/verify-only', verifyLoad)));
      const before = await ledgerCount(db);
      const distinctLoad = distinct(half);
      (runs['distinct'] ??= []).push(await measured(pid, db, () => load(port, PATH, distinctLoad)));
      expect(await ledgerCount(db)).toBe(before + half);
      const duplicateLoad = Array.from({ length: half }, (_, i) => dupes[i % dupes.length] as Prepared);
      (runs['duplicate'] ??= []).push(await measured(pid, db, () => load(port, PATH, duplicateLoad)));
      expect(await ledgerCount(db)).toBe(before + half);

      const serveBefore = await ledgerCount(db2);
      const serveDistinct = distinct(half);
      (runs['serve distinct'] ??= []).push(await measured(servePid, db2, () => load(served.port, PATH, serveDistinct, true)));
      expect(await ledgerCount(db2)).toBe(serveBefore + half);
      (runs['serve duplicate'] ??= []).push(await measured(servePid, db2, () => load(served.port, PATH, duplicateLoad, true)));
    }
    for (const [key, loads] of Object.entries(runs)) {
      results[key] = combine(loads);
      expect(Object.keys(results[key].statuses)).toEqual(['200']);
    }
  } finally {
    child.kill('SIGTERM');
    await new Promise((r) => (child.exitCode !== null ? r(undefined) : child.once('exit', r)));
    await served.stop();
    await Promise.all([db.drop(), db2.drop()]);
  }
  const v = results['verify']!;
  const sd = results['serve distinct']!;
  const su = results['serve duplicate']!;
  const note = 'built blytz serve as shipped (BLYTZ_TRUST_PROXY=127.0.0.1, a distinct X-Forwarded-For per request); its controller idles beside it';
  const serveFigures: Figure[] = [
    { name: 'blytz serve: distinct events per second', value: sd.perSecond, unit: 'req/s', baseline: { name: 'verify-only', value: v.perSecond }, note },
    { name: 'blytz serve: distinct events p99 latency', value: sd.latency.p99, unit: 'ms', baseline: { name: 'verify-only p99', value: v.latency.p99 } },
    { name: 'blytz serve: duplicates per second', value: su.perSecond, unit: 'req/s', baseline: { name: 'verify-only', value: v.perSecond } },
    { name: 'blytz serve: duplicates p99 latency', value: su.latency.p99, unit: 'ms', baseline: { name: 'verify-only p99', value: v.latency.p99 } },
    { name: 'blytz serve: CPU per distinct event: the server process', value: sd.cpuMsPerRequest.server, unit: 'ms', baseline: { name: 'verify-only', value: v.cpuMsPerRequest.server } },
    { name: "blytz serve: CPU per distinct event: the database's Postgres backends", value: sd.cpuMsPerRequest.postgres, unit: 'ms' },
  ];

  const wallSeconds = (performance.now() - wallStart) / 1000;
  const d = results['distinct']!;
  const u = results['duplicate']!;
  const figures: Figure[] = [
    { name: 'distinct events per second', value: d.perSecond, unit: 'req/s', baseline: { name: 'verify-only', value: v.perSecond } },
    { name: 'distinct events p50 latency', value: d.latency.p50, unit: 'ms', baseline: { name: 'verify-only p50', value: v.latency.p50 } },
    { name: 'distinct events p99 latency', value: d.latency.p99, unit: 'ms', baseline: { name: 'verify-only p99', value: v.latency.p99 } },
    { name: 'duplicates per second', value: u.perSecond, unit: 'req/s', baseline: { name: 'verify-only', value: v.perSecond } },
    { name: 'duplicates p50 latency', value: u.latency.p50, unit: 'ms', baseline: { name: 'verify-only p50', value: v.latency.p50 } },
    { name: 'duplicates p99 latency', value: u.latency.p99, unit: 'ms', baseline: { name: 'verify-only p99', value: v.latency.p99 } },
    ...cpuFigures(v, d, u),
    ...serveFigures,
    {
      name: 'machine CPU busy during the run (all processes, 2 cores = 2.0)',
      value: (machineBusySeconds() - busyStart) / wallSeconds,
      unit: 'cores',
      note: 'load generator, server and Postgres share these cores, as do other engineers\' test suites',
    },
  ];
  report('webhooks', `Stripe webhooks: ${REQUESTS} signed requests per scenario, ${CONCURRENCY} in flight, real Postgres`, figures, {
    method:
      'The first figures come from the built app (dist/) in its own process with the real router and ledger on Postgres (the limiter counts bad signatures only), the baseline being a route on that same server that only runs stripe.webhooks.constructEvent. Distinct = customer.subscription.updated (active) for one of 200 customers holding the subscription; duplicates = 16 recorded events sent again. Each scenario runs in two interleaved halves, 16 requests in flight. CPU per request: utime + stime from /proc of the server, of the Postgres backends serving the benchmark database and of the load generator (this process), over each scenario. The blytz serve rows are the shipped binary with its defaults on a database seeded alike, a distinct X-Forwarded-For per request, in the same interleaved rounds (its idle controller and the app server run side by side throughout). Both databases start as serving ones would: 50,000 earlier events in the ledger and table statistics.',
  });
});
