// The engine benchmark's controller, in a plain Node process of its own, so its memory and CPU
// are the controller's and not the test runner's: the built code (dist/, through
// bench/built-imports.mjs) with the simulated world of test/support/simulated-world.ts on real
// Postgres. bench/engine/engine.bench.ts fills the database, starts this and reports what it
// writes to RESULT_FILE.
//
// Environment: DATABASE_URL (filled with N customers), N, LIVE_NAMES (comma-separated: the
// customers written after the steady pass, one reconcile each), RESULT_FILE; BENCH_PROFILE_DIR
// (a CPU profile per pass), BENCH_HEAP_SNAPSHOT_DIR (a heap snapshot with the steady pass's
// listing held).
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { getHeapSpaceStatistics, setFlagsFromString, writeHeapSnapshot } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { sql } from 'kysely';
import pg from 'pg';
import { Controller } from '../../src/controller/controller.js';
import { CustomerReconciler } from '../../src/controller/customer/reconciler.js';
import { WorldCache } from '../../src/controller/customer/observe.js';
import { createLogger } from '../../src/observability/logger.js';
import { Metrics } from '../../src/observability/metrics.js';
import { CustomerStore } from '../../src/store/customer-store.js';
import { openPostgres } from '../../src/store/database.js';
import { PortReservations } from '../../src/store/port-reservations.js';
import { SecretBox } from '../../src/store/secret-box.js';
import { SimulatedRouteTable, SimulatedRuntime, SimulatedWorkspaces } from '../../test/support/simulated-world.js';
import { profiled } from '../support.js';

const env = (name: string): string => {
  const value = process.env[name];
  if (value === undefined) throw new Error(`${name} is not set`);
  return value;
};
const N = Number(env('N'));
const LIVE_NAMES = env('LIVE_NAMES').split(',').filter(Boolean);

// A full collection on demand, to tell what the process keeps from what V8 has not yet collected.
// It changes nothing else: V8's heap grows and shrinks as it would.
setFlagsFromString('--expose-gc');
const collectGarbage = runInNewContext('gc') as () => void;
/** Heap in use right after a full collection: what is really kept. */
function liveHeap(): number {
  collectGarbage();
  return process.memoryUsage().heapUsed;
}

/** Transactions this process sends, counted on the client: a statement outside BEGIN ... COMMIT is one, an explicit transaction is one. */
let transactions = 0;
const inTransaction = new WeakSet<pg.Client>();
const query = pg.Client.prototype.query;
pg.Client.prototype.query = function (this: pg.Client, ...args: unknown[]) {
  const first = args[0] as string | { text?: string } | undefined;
  const text = (typeof first === 'string' ? first : (first?.text ?? '')).trimStart().slice(0, 8).toLowerCase();
  if (text.startsWith('begin')) {
    inTransaction.add(this);
    transactions++;
  } else if (text.startsWith('commit') || text.startsWith('rollback')) {
    inTransaction.delete(this);
  } else if (!inTransaction.has(this)) {
    transactions++;
  }
  return (query as (...a: unknown[]) => unknown).apply(this, args);
} as typeof query;

const rssAtStart = process.memoryUsage().rss;
const liveAtStart = liveHeap();

const handle = openPostgres(env('DATABASE_URL'), 10);
const store = new CustomerStore(handle, new SecretBox(Buffer.alloc(32, 7)));
const runtime = new SimulatedRuntime();
const routes = new SimulatedRouteTable();
const workspaces = new SimulatedWorkspaces();
const metrics = new Metrics({ defaultMetrics: false });
const reconciler = new CustomerReconciler({
  store,
  ports: new PortReservations(handle, { from: 20_000, to: 20_000 + N + LIVE_NAMES.length + 100 }),
  runtime,
  routes,
  workspaces,
  metrics,
  logger: createLogger({ level: 'silent' }),
  defaults: {
    baseDomain: 'blytz.localhost',
    customerImage: 'img',
    containerPort: 18789,
    publicOrigins: (host) => [`https://${host}`],
    trustedProxies: ['172.17.0.1'],
  },
  publicScheme: 'https',
  retentionMs: 30 * 86_400_000,
  cache: new WorldCache(),
});

let reconciles = 0;
type Reconcile = (key: string, signal: AbortSignal) => Promise<object>;
const counting: Reconcile = async (key, signal) => {
  reconciles++;
  return reconciler.reconcile(key, signal);
};
const noop: Reconcile = async () => {
  reconciles++;
  return {};
};

/** Calls that read the world: Docker lists (all, or one customer's) and route reads (all, or one). */
const worldReads = () =>
  (runtime.calls['list'] ?? 0) + (runtime.calls['listFor'] ?? 0) + (routes.calls['list'] ?? 0) + (routes.calls['get'] ?? 0);

/** Live heap right after a full pass listed the world, and what measuring it cost (taken off the pass). */
let listed: { live: number; cpuSeconds: number; seconds: number } | undefined;
/** Full listings so far: the cold pass's is the first, the steady pass's the second. */
let listings = 0;
const listKeys = async () => {
  const keys = await reconciler.listKeys();
  listings++;
  const cpu = process.cpuUsage();
  const started = performance.now();
  const live = liveHeap();
  // Taking the snapshot costs memory of its own: peak RSS is then not the controller's.
  if (process.env['BENCH_HEAP_SNAPSHOT_DIR'] && listings === 2)
    writeHeapSnapshot(join(process.env['BENCH_HEAP_SNAPSHOT_DIR'], 'engine-listed.heapsnapshot'));
  const used = process.cpuUsage(cpu);
  listed = { live, cpuSeconds: (used.user + used.system) / 1e6, seconds: (performance.now() - started) / 1000 };
  return keys;
};

/** Where RSS goes right after a pass, before any forced collection: V8's heap (committed, by space) and memory outside it. */
function memory() {
  const { rss, heapTotal, heapUsed, external, arrayBuffers } = process.memoryUsage();
  const spaces = Object.fromEntries(getHeapSpaceStatistics().map((s) => [s.space_name, s.physical_space_size]));
  return { rss, heapTotal, heapUsed, external, arrayBuffers, spaces };
}

async function until(done: () => boolean): Promise<void> {
  while (!done()) await new Promise((r) => setTimeout(r, 5));
}

/** A full pass (the controller's start lists every key), or with `arriving` those keys enqueued one by one. */
async function pass(reconcile: Reconcile, keys: () => Promise<string[]>, label: string, arriving: string[] = []) {
  reconciles = 0;
  listed = undefined;
  const controller = new Controller({
    name: label,
    reconciler: { reconcile, listKeys: keys },
    workers: 4,
    resyncSeconds: 0,
    metrics,
  });
  const expected = arriving.length > 0 ? arriving.length : N;
  const transactionsBefore = transactions;
  const readsBefore = worldReads();
  const cpu = process.cpuUsage();
  const started = performance.now();
  await profiled(`engine-${label}`, async () => {
    await controller.start();
    for (const key of arriving) controller.enqueue(key);
    await until(() => reconciles >= expected && controller.queue?.length === 0 && controller.queue?.processing === 0);
  });
  const seconds = (performance.now() - started) / 1000;
  const used = process.cpuUsage(cpu);
  await controller.stop();
  // Set by listKeys during the pass (a full pass lists; a live one does not).
  const held = listed as { live: number; cpuSeconds: number; seconds: number } | undefined;
  const measuring = held ?? { live: 0, cpuSeconds: 0, seconds: 0 };
  return {
    seconds: seconds - measuring.seconds,
    cpuSeconds: (used.user + used.system) / 1e6 - measuring.cpuSeconds,
    reconciles,
    transactions: transactions - transactionsBefore,
    worldReads: worldReads() - readsBefore,
    rss: process.memoryUsage().rss,
    peakRss: process.resourceUsage().maxRSS * 1024,
    memory: memory(),
    live: held?.live ?? liveHeap(),
  };
}

const baseline = await pass(noop, () => store.listNames(), 'baseline');
const cold = await pass(counting, listKeys, 'cold');
const steady = await pass(counting, listKeys, 'steady');
// New customers written one at a time, each handed to the controller as the change feed would.
await sql`
  INSERT INTO customers (name, email, display_name, state, instructions)
  SELECT name, name || '@example.com', 'Live customer', 'active', 'I run a shop.'
  FROM unnest(${LIVE_NAMES}::text[]) AS name
`.execute(handle.db);
const live = await pass(counting, async () => [], 'live', LIVE_NAMES);
await handle.close();
writeFileSync(
  env('RESULT_FILE'),
  JSON.stringify({ rssAtStart, liveAtStart, baseline, cold, steady, live, peakRss: process.resourceUsage().maxRSS * 1024 }),
);
