import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CustomerReconciler } from '../../src/controller/customer/reconciler.js';
import { WorldCache } from '../../src/controller/customer/observe.js';
import { createLogger } from '../../src/observability/logger.js';
import { Metrics } from '../../src/observability/metrics.js';
import { CustomerStore } from '../../src/store/customer-store.js';
import { openPostgres, type DatabaseHandle } from '../../src/store/database.js';
import { PortReservations } from '../../src/store/port-reservations.js';
import { testDesiredDefaults, testSecretBox } from '../support/fixtures.js';
import { insertActiveCustomers, phases } from '../support/customers.js';
import { createTestDatabase, type TestDatabase } from '../support/postgres.js';
import { SimulatedRouteTable, SimulatedRuntime, SimulatedWorkspaces } from '../support/simulated-world.js';

/**
 * How many Postgres transactions the reconcile of a new customer costs when the change feed hands
 * it over (no full pass's listing to read from), counted on the client as bench/engine counts
 * them: a statement outside BEGIN ... COMMIT is one, an explicit transaction is one. Issue 22's
 * goal is at most 4: the view (which also mints the gateway token), the port reservation, the
 * status write and the reconcile's events.
 */
describe('transactions per reconcile of a new customer', () => {
  let db: TestDatabase;
  let handle: DatabaseHandle;
  const query = pg.Client.prototype.query;
  let counting = false;
  const statements: string[] = [];
  let transactions = 0;
  const inTransaction = new WeakSet<pg.Client>();

  beforeAll(async () => {
    db = await createTestDatabase();
    handle = openPostgres(db.url, 5);
    pg.Client.prototype.query = function (this: pg.Client, ...args: unknown[]) {
      if (counting) {
        const first = args[0] as string | { text?: string } | undefined;
        const text = (typeof first === 'string' ? first : (first?.text ?? '')).trimStart();
        const head = text.slice(0, 8).toLowerCase();
        if (head.startsWith('begin')) {
          inTransaction.add(this);
          transactions++;
          statements.push(text.slice(0, 80));
        } else if (head.startsWith('commit') || head.startsWith('rollback')) {
          inTransaction.delete(this);
        } else if (!inTransaction.has(this)) {
          transactions++;
          statements.push(text.slice(0, 80));
        }
      }
      return (query as (...a: unknown[]) => unknown).apply(this, args);
    } as typeof query;
  });
  afterAll(async () => {
    pg.Client.prototype.query = query;
    await handle?.close();
    await db?.drop();
  });

  it('is at most 4, and the new customer ends Ready with its gateway token stored', async () => {
    const box = testSecretBox();
    const store = new CustomerStore(handle, box);
    const reconciler = new CustomerReconciler({
      store,
      ports: new PortReservations(handle, { from: 41_000, to: 41_099 }),
      runtime: new SimulatedRuntime(),
      routes: new SimulatedRouteTable(),
      workspaces: new SimulatedWorkspaces(),
      metrics: new Metrics({ defaultMetrics: false }),
      logger: createLogger({ level: 'silent' }),
      defaults: testDesiredDefaults({ baseDomain: 'blytz.localhost', customerImage: 'img', containerPort: 18789 }),
      publicScheme: 'https',
      retentionMs: 86_400_000,
      cache: new WorldCache(),
    });
    const name = 'newcomer';
    await insertActiveCustomers(db.handle.db, [name]);
    // The pool's connections opened before counting: a connection's own setup is not the reconcile's.
    await store.get(name);

    counting = true;
    try {
      await reconciler.reconcile(name, new AbortController().signal);
    } finally {
      counting = false;
    }

    expect((await phases(db.handle.db)).get(name)).toBe('Ready');
    const token = await store.gatewayToken(name);
    expect(token.length).toBeGreaterThanOrEqual(24);
    expect(transactions, statements.join('\n')).toBeLessThanOrEqual(4);
  });
});
