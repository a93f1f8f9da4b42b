import { sql } from 'kysely';
import { expect, it } from 'vitest';
import { Controller } from '../../src/controller/controller.js';
import { CustomerReconciler } from '../../src/controller/customer/reconciler.js';
import { WorldCache } from '../../src/controller/customer/observe.js';
import { createLogger } from '../../src/observability/logger.js';
import { Metrics } from '../../src/observability/metrics.js';
import { CustomerStore } from '../../src/store/customer-store.js';
import { PortReservations } from '../../src/store/port-reservations.js';
import { testSecretBox, testDesiredDefaults } from '../../test/support/fixtures.js';
import { createTestDatabase } from '../../test/support/postgres.js';
import { waitFor } from '../../test/support/wait-for.js';
import { SimulatedRouteTable, SimulatedRuntime, SimulatedWorkspaces } from '../../test/support/simulated-world.js';
import { profiled, report } from '../support.js';

/**
 * bench/engine: N customers in real Postgres, a simulated world. Cold full pass (everything is
 * created) and steady-state resync pass (nothing to do), against a baseline measured in the same
 * run: the same controller and queue with a reconcile that does nothing.
 */
// 2,000 by default: at 10,000 the cold pass alone outlasts the 600 s budget on this 2-core machine
// (7,903 reconciled when it ran out). Set BENCH_ENGINE_CUSTOMERS to measure more.
const N = Number(process.env['BENCH_ENGINE_CUSTOMERS'] ?? 2000);

it(`engine: ${N} customers`, { timeout: 600_000 }, async () => {
  const db = await createTestDatabase();
  const store = new CustomerStore(db.handle, testSecretBox());
  await sql`
    INSERT INTO customers (name, email, display_name, state, instructions)
    SELECT 'c' || lpad(i::text, 6, '0'), 'c' || i || '@example.com', 'Customer ' || i, 'active', 'I run a shop.' || chr(10) || '- answer mail'
    FROM generate_series(1, ${N}) AS i
  `.execute(db.handle.db);

  const runtime = new SimulatedRuntime();
  const routes = new SimulatedRouteTable();
  const workspaces = new SimulatedWorkspaces();
  const metrics = new Metrics({ defaultMetrics: false });
  const cache = new WorldCache();
  const reconciler = new CustomerReconciler({
    store,
    ports: new PortReservations(db.handle, { from: 20_000, to: 20_000 + N + 100 }),
    runtime,
    routes,
    workspaces,
    metrics,
    logger: createLogger({ level: 'silent' }),
    defaults: testDesiredDefaults({ baseDomain: 'blytz.localhost', customerImage: 'img', containerPort: 18789 }),
    publicScheme: 'https',
    retentionMs: 30 * 86_400_000,
    cache,
  });

  let reconciles = 0;
  const counting = async (key: string, signal: AbortSignal) => {
    reconciles++;
    return reconciler.reconcile(key, signal);
  };
  const noop = async (_key: string, _signal: AbortSignal) => {
    reconciles++;
    return {};
  };

  async function pass(reconcile: typeof counting, listKeys: () => Promise<string[]>, label: string) {
    reconciles = 0;
    const controller = new Controller({ name: label, reconciler: { reconcile, listKeys }, workers: 4, resyncSeconds: 0, metrics });
    const transactions = await commits();
    const listsBefore = (runtime.calls['list'] ?? 0) + (runtime.calls['listFor'] ?? 0) + (routes.calls['list'] ?? 0);
    const cpu = process.cpuUsage();
    const started = performance.now();
    await profiled(`engine-${label}`, async () => {
      await controller.start();
      await waitFor(() => reconciles >= N && controller.queue?.length === 0 && controller.queue?.processing === 0, 600_000, 5);
    });
    const seconds = (performance.now() - started) / 1000;
    const used = process.cpuUsage(cpu);
    await controller.stop();
    const worldLists = (runtime.calls['list'] ?? 0) + (runtime.calls['listFor'] ?? 0) + (routes.calls['list'] ?? 0) - listsBefore;
    return { seconds, cpuSeconds: (used.user + used.system) / 1e6, reconciles, queries: (await commits()) - transactions, worldLists };
  }

  async function commits(): Promise<number> {
    const r = await sql<{ n: string }>`SELECT xact_commit + xact_rollback AS n FROM pg_stat_database WHERE datname = current_database()`.execute(db.handle.db);
    await sql`SELECT pg_stat_clear_snapshot()`.execute(db.handle.db);
    return Number(r.rows[0]?.n ?? 0);
  }

  const listKeys = () => reconciler.listKeys();
  const baseline = await pass(noop, () => store.listNames(), 'baseline');
  const cold = await pass(counting, listKeys, 'cold');
  const ready = await sql<{ n: number }>`SELECT count(*)::int AS n FROM customers WHERE status->>'phase' = 'Ready'`.execute(db.handle.db);
  expect(ready.rows[0]?.n).toBe(N);
  const steady = await pass(counting, listKeys, 'steady');
  const rss = process.memoryUsage().rss;
  await db.drop();

  report(
    'engine',
    `Engine: ${N} customers, real Postgres, simulated world, 4 workers`,
    [
      { name: 'cold pass wall time', value: cold.seconds, unit: 's', baseline: { name: 'no-op pass', value: baseline.seconds } },
      { name: 'cold pass reconciles', value: cold.reconciles, unit: 'reconciles' },
      { name: 'cold pass Postgres transactions per reconcile', value: cold.queries / cold.reconciles, unit: 'tx' },
      { name: 'steady-state pass wall time', value: steady.seconds, unit: 's', baseline: { name: 'no-op pass', value: baseline.seconds } },
      { name: 'steady-state pass CPU', value: steady.cpuSeconds, unit: 's', baseline: { name: 'no-op pass CPU', value: baseline.cpuSeconds }, note: 'goal: at most 2 s' },
      { name: 'steady-state pass reconciles', value: steady.reconciles, unit: 'reconciles' },
      { name: 'steady-state Postgres transactions per reconcile', value: steady.queries / steady.reconciles, unit: 'tx' },
      { name: 'steady-state world list calls (Docker + Caddy)', value: steady.worldLists, unit: 'calls', note: 'constant, not one per customer' },
      { name: 'peak RSS', value: rss / 2 ** 20, unit: 'MiB' },
    ],
  );
});
