import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { Controller, NotLeaderError } from '../../src/controller/controller.js';
import { PostgresLeaderElector } from '../../src/store/leader-elector.js';
import { createLogger } from '../../src/observability/logger.js';
import { Metrics } from '../../src/observability/metrics.js';
import { adminUrl, createTestDatabase, type TestDatabase } from '../support/postgres.js';
import { waitFor } from '../support/wait-for.js';

const logger = createLogger({ level: 'silent' });

describe('leader election (Postgres advisory lock)', () => {
  let db: TestDatabase;
  let admin: pg.Client;
  const cleanups: Array<() => Promise<void>> = [];

  beforeAll(async () => {
    db = await createTestDatabase();
    admin = new pg.Client({ connectionString: adminUrl() });
    await admin.connect();
  });

  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });

  afterAll(async () => {
    await admin.end();
    await db.drop();
  });

  /** Records every leadership change of every elector in one ordered log. */
  function campaign(lock: string, id: string, log: string[]): { elector: PostgresLeaderElector; metrics: Metrics } {
    const metrics = new Metrics({ defaultMetrics: false });
    const elector = new PostgresLeaderElector({
      name: lock,
      handle: db.handle,
      logger,
      metrics,
      retryIntervalMs: 50,
      checkIntervalMs: 50,
    });
    elector.onChange((leading) => log.push(`${id}:${leading ? 'lead' : 'lost'}`));
    cleanups.push(() => elector.stop());
    return { elector, metrics };
  }

  /** Counts leaders after every change: never more than one. */
  function leadersAfterEachChange(log: string[]): number[] {
    const leading = new Set<string>();
    return log.map((entry) => {
      const [id, what] = entry.split(':');
      if (what === 'lead') leading.add(id ?? '');
      else leading.delete(id ?? '');
      return leading.size;
    });
  }

  /** The backend that holds the advisory lock in the test database. */
  async function lockHolderPid(elector: PostgresLeaderElector): Promise<number | undefined> {
    const key = BigInt.asUintN(64, BigInt(elector.lockKey));
    const result = await admin.query<{ pid: number }>(
      `SELECT l.pid FROM pg_locks l JOIN pg_database d ON d.oid = l.database
       WHERE l.locktype = 'advisory' AND l.granted AND d.datname = $1
         AND l.classid = $2::oid AND l.objid = $3::oid AND l.objsubid = 1`,
      [db.name, (key >> 32n).toString(), (key & 0xffffffffn).toString()],
    );
    return result.rows[0]?.pid;
  }

  async function status(metrics: Metrics, lock: string): Promise<number | undefined> {
    const metric = (await metrics.registry.getMetricsAsJSON()).find((m) => m.name === 'leader_election_master_status');
    return metric?.values.find((v) => v.labels['name'] === lock)?.value;
  }

  it('lets exactly one of two electors lead, and hands over when the leader stops', async () => {
    const lock = `lock-${randomBytes(4).toString('hex')}`;
    const log: string[] = [];
    const a = campaign(lock, 'a', log);
    const b = campaign(lock, 'b', log);
    await a.elector.start();
    await b.elector.start();
    expect(a.elector.isLeader()).toBe(true);
    expect(b.elector.isLeader()).toBe(false);
    expect(await status(a.metrics, lock)).toBe(1);
    expect(await status(b.metrics, lock)).toBe(0);
    expect(await lockHolderPid(a.elector)).toBeDefined();

    await a.elector.stop();
    await waitFor(() => b.elector.isLeader());
    expect(a.elector.isLeader()).toBe(false);
    expect(await status(a.metrics, lock)).toBe(0);
    expect(await status(b.metrics, lock)).toBe(1);
    expect(log).toEqual(['a:lead', 'a:lost', 'b:lead']);
  });

  it('drops leadership at once when the leader’s connection is killed, and a standby takes over', async () => {
    const lock = `lock-${randomBytes(4).toString('hex')}`;
    const log: string[] = [];
    const a = campaign(lock, 'a', log);
    const b = campaign(lock, 'b', log);
    await a.elector.start();
    await b.elector.start();
    const pid = await lockHolderPid(a.elector);
    expect(pid).toBeDefined();

    await admin.query('SELECT pg_terminate_backend($1)', [pid]);
    await waitFor(() => b.elector.isLeader());
    expect(a.elector.isLeader()).toBe(false);
    expect(log.indexOf('a:lost')).toBeGreaterThan(-1);
    expect(log.indexOf('a:lost')).toBeLessThan(log.indexOf('b:lead'));
    expect(Math.max(...leadersAfterEachChange(log))).toBe(1);

    // The old leader reconnected and campaigns again: it takes over when b goes.
    await waitFor(async () => (await lockHolderPid(b.elector)) !== undefined);
    await b.elector.stop();
    await waitFor(() => a.elector.isLeader());
    expect(Math.max(...leadersAfterEachChange(log))).toBe(1);
  });

  it('stops a controller bound to the elector at once, before the new leader’s controller acts', async () => {
    const lock = `lock-${randomBytes(4).toString('hex')}`;
    const log: string[] = [];
    const active = new Set<string>();
    let overlapped = false;
    const reasons: unknown[] = [];

    const controllerFor = (id: string, elector: PostgresLeaderElector): Controller => {
      const controller = new Controller({
        name: `controller-${id}`,
        leadership: elector,
        resyncSeconds: 0,
        drainTimeoutMs: 100,
        reconciler: {
          listKeys: async () => ['customer-1'],
          // Acts until told to stop, like a long provisioning step.
          reconcile: (key, signal) =>
            new Promise<void>((resolve) => {
              if (active.size > 0) overlapped = true;
              active.add(id);
              log.push(`${id}:reconcile ${key}`);
              signal.addEventListener('abort', () => {
                active.delete(id);
                reasons.push(signal.reason);
                log.push(`${id}:aborted`);
                resolve();
              });
            }),
        },
      });
      cleanups.push(() => controller.stop());
      return controller;
    };

    const a = campaign(lock, 'a', log);
    await a.elector.start();
    const b = campaign(lock, 'b', log);
    await b.elector.start();
    const controllerA = controllerFor('a', a.elector);
    const controllerB = controllerFor('b', b.elector);
    await controllerA.start();
    await controllerB.start();
    await waitFor(() => log.includes('a:reconcile customer-1'));
    expect(controllerB.working).toBe(false);

    await admin.query('SELECT pg_terminate_backend($1)', [await lockHolderPid(a.elector)]);
    await waitFor(() => log.includes('b:reconcile customer-1'));

    expect(overlapped).toBe(false);
    expect(reasons[0]).toBeInstanceOf(NotLeaderError);
    expect(controllerA.working).toBe(false);
    const order = ['a:lost', 'a:aborted', 'b:lead', 'b:reconcile customer-1'].map((entry) => log.indexOf(entry));
    expect(order.every((index) => index >= 0)).toBe(true);
    expect(order).toEqual([...order].sort((x, y) => x - y));
  });
});
