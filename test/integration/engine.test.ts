import { sql } from 'kysely';
import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { Controller } from '../../src/controller/controller.js';
import { CUSTOMER_CONTROLLER_NAME, CustomerReconciler } from '../../src/controller/customer/reconciler.js';
import { WorldCache } from '../../src/controller/customer/observe.js';
import { PostgresLeaderElector } from '../../src/store/leader-elector.js';
import { changeFeedSource } from '../../src/controller/change-feed-source.js';
import type { EventSource } from '../../src/controller/event-source.js';
import { createLogger } from '../../src/observability/logger.js';
import { Metrics } from '../../src/observability/metrics.js';
import { createChangeFeed } from '../../src/store/change-feed.js';
import { CustomerStore } from '../../src/store/customer-store.js';
import { openPostgres } from '../../src/store/database.js';
import { PortReservations } from '../../src/store/port-reservations.js';
import { testSecretBox, testDesiredDefaults } from '../support/fixtures.js';
import { adminUrl, createTestDatabase, type TestDatabase } from '../support/postgres.js';
import { insertActiveCustomers, waitUntilReady } from '../support/customers.js';
import { waitFor } from '../support/wait-for.js';
import { SimulatedRouteTable, SimulatedRuntime, SimulatedWorkspaces } from '../support/simulated-world.js';

const logger = createLogger({ level: 'silent' });
const box = testSecretBox();

/**
 * The whole engine (queue, workers, change feed, leader election, customer reconciler) on a real
 * Postgres store and a simulated world, as `blytz serve` wires it.
 */
describe('engine on a real store and a simulated world', () => {
  let db: TestDatabase;
  const stops: Array<() => Promise<void>> = [];

  beforeAll(async () => {
    db = await createTestDatabase();
  });
  afterEach(async () => {
    for (const stop of stops.splice(0).reverse()) await stop();
    // CASCADE: the tables that refer to customers (sessions, model credentials) go with them.
    await sql`TRUNCATE customers, customer_events, port_reservations CASCADE`.execute(db.handle.db);
  });
  afterAll(async () => {
    await db.drop();
  });

  /** One replica: its own connections, elector and controller, sharing the world given. */
  async function replica(
    world: { runtime: SimulatedRuntime; routes: SimulatedRouteTable; workspaces: SimulatedWorkspaces },
    hooks: { onReconcile?: (name: string) => void | Promise<void>; onEnqueue?: (name: string) => void } = {},
  ) {
    const handle = openPostgres(db.url, 5);
    const metrics = new Metrics({ defaultMetrics: false });
    const store = new CustomerStore(handle, box);
    const reconciler = new CustomerReconciler({
      store,
      ports: new PortReservations(handle, { from: 40_000, to: 40_999 }),
      ...world,
      metrics,
      logger,
      defaults: testDesiredDefaults({ baseDomain: 'blytz.localhost', customerImage: 'img', containerPort: 18789 }),
      publicScheme: 'https',
      retentionMs: 86_400_000,
      cache: new WorldCache(),
    });
    const elector = new PostgresLeaderElector({ name: 'engine-test', handle, logger, metrics, retryIntervalMs: 50, checkIntervalMs: 50 });
    const controller = new Controller({
      name: CUSTOMER_CONTROLLER_NAME,
      reconciler: {
        reconcile: async (name, signal) => {
          await hooks.onReconcile?.(name);
          return reconciler.reconcile(name, signal);
        },
        listKeys: () => reconciler.listKeys(),
        invalidate: (name) => reconciler.invalidate(name),
      },
      workers: 4, // the burst test counts on four
      resyncSeconds: 0,
      sources: [observed(changeFeedSource(createChangeFeed(handle, logger)), hooks.onEnqueue)],
      leadership: elector,
      metrics,
      logger,
    });
    await controller.start();
    await elector.start();
    const stop = async () => {
      await controller.stop();
      await elector.stop();
      await handle.close();
    };
    stops.push(stop);
    return { controller, elector, store, stop };
  }

  /** The source as it is, telling `onEnqueue` each customer it hands to the controller. */
  function observed(source: EventSource, onEnqueue?: (name: string) => void): EventSource {
    return {
      start: (sink) =>
        source.start({
          enqueue: (name) => {
            onEnqueue?.(name);
            sink.enqueue(name);
          },
          resync: (reason) => sink.resync(reason),
        }),
      stop: () => source.stop(),
    };
  }

  const newWorld = () => ({ runtime: new SimulatedRuntime(), routes: new SimulatedRouteTable(), workspaces: new SimulatedWorkspaces() });

  async function insertCustomers(count: number, prefix: string): Promise<string[]> {
    const names = Array.from({ length: count }, (_, i) => `${prefix}-${i}`);
    await insertActiveCustomers(db.handle.db, names);
    return names;
  }


  it('a burst of 1,000 spec changes to 100 customers reconciles each at most twice', async () => {
    const world = newWorld();
    const WORKERS = 4;
    const reconciles = new Map<string, number>();
    const enqueued = new Map<string, number>();
    // The workers are held while the burst arrives, so every change reaches the queue before any
    // reconcile ends: what the dedupe saves no longer depends on how fast the workers are.
    let releaseWorkers!: () => void;
    const held = new Promise<void>((resolve) => (releaseWorkers = resolve));
    let holding = false;
    const names = await insertCustomers(100, 'burst');
    const { elector } = await replica(world, {
      onReconcile: async (name) => {
        reconciles.set(name, (reconciles.get(name) ?? 0) + 1);
        if (holding) await held;
      },
      onEnqueue: (name) => enqueued.set(name, (enqueued.get(name) ?? 0) + 1),
    });
    await waitFor(() => elector.isLeader());
    await waitUntilReady(db.handle.db, names, 30_000);
    reconciles.clear();
    enqueued.clear();
    holding = true;

    // 1,000 UPDATEs, as psql would send them: ten rounds over 100 customers.
    for (let round = 0; round < 10; round++) {
      await sql`UPDATE customers SET instructions = ${`round ${round}`} WHERE name = ANY(${names})`.execute(db.handle.db);
    }
    // Every change has reached the queue (ten notifications per customer) while the workers hold.
    await waitFor(() => names.every((n) => (enqueued.get(n) ?? 0) >= 10), 30_000);
    holding = false;
    releaseWorkers();
    await waitFor(async () => {
      const r = await sql<{ n: number }>`SELECT count(*)::int AS n FROM customers WHERE (status->>'observedGeneration')::int = generation AND name = ANY(${names})`.execute(db.handle.db);
      return r.rows[0]?.n === 100;
    }, 30_000);
    const perCustomer = names.map((n) => reconciles.get(n) ?? 0);
    expect(Math.min(...perCustomer)).toBeGreaterThanOrEqual(1);
    // Dedupe in the queue: a waiting customer is in it once however many changes came; one a
    // worker held when its changes came goes once more after (client-go's dirty set). So at most
    // two reconciles each, and only the held ones get a second: 100 + WORKERS at most.
    expect(Math.max(...perCustomer)).toBeLessThanOrEqual(2);
    expect(perCustomer.reduce((a, b) => a + b, 0)).toBeLessThanOrEqual(100 + WORKERS);
    // The world converged once, without duplicates.
    expect(world.runtime.containers.size).toBe(100);
  });

  it('two replicas never both act; killing the leader connection hands over', async () => {
    const world = newWorld();
    const a = await replica(world);
    const b = await replica(world);
    await waitFor(() => a.elector.isLeader() || b.elector.isLeader());
    const [leader, standby] = a.elector.isLeader() ? [a, b] : [b, a];
    expect(standby.elector.isLeader()).toBe(false);
    const first = await insertCustomers(20, 'ha1');
    await waitUntilReady(db.handle.db, first, 30_000);
    expect(world.runtime.calls['create']).toBe(20); // one create per customer: only one replica acted

    // Kill the leader's session, as a network fault or a Postgres restart would.
    const admin = new pg.Client({ connectionString: adminUrl() });
    await admin.connect();
    try {
      await admin.query(
        `SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND granted AND database = (SELECT oid FROM pg_database WHERE datname = $1)`,
        [db.name],
      );
    } finally {
      await admin.end();
    }
    await waitFor(() => standby.elector.isLeader(), 15_000);
    const second = await insertCustomers(10, 'ha2');
    await waitUntilReady(db.handle.db, second, 30_000);
    expect(world.runtime.containers.size).toBe(30);
    expect(world.runtime.calls['create']).toBe(30);
    expect([...world.runtime.containers.values()].filter((c) => c.state === 'running')).toHaveLength(30);
    void leader;
  });
});
