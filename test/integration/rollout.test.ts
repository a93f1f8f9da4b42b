import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CustomerReconciler } from '../../src/controller/customer/reconciler.js';
import { parseMaxUnavailable } from '../../src/controller/rollout/gate.js';
import { ReconcileStepError } from '../../src/controller/customer/execute.js';
import { Rollouts } from '../../src/controller/rollout/rollouts.js';
import { RolloutStore } from '../../src/store/rollout-store.js';
import { createLogger } from '../../src/observability/logger.js';
import { Metrics } from '../../src/observability/metrics.js';
import { CustomerStore } from '../../src/store/customer-store.js';
import { PortReservations } from '../../src/store/port-reservations.js';
import { desiredCustomer, testSecretBox, TEST_BOT_TOKEN, uniqueName, testDesiredDefaults } from '../support/fixtures.js';
import { createTestDatabase, type TestDatabase } from '../support/postgres.js';
import { SimulatedRouteTable, SimulatedRuntime, SimulatedWorkspaces } from '../support/simulated-world.js';

/**
 * Fleet rollouts through the customer reconciler on the real store and a simulated world where
 * a new container answers its health check only after a "tick" (so a recreate spans passes,
 * like a real image that takes time to start). Each round reconciles every customer once.
 */
describe('fleet rollouts (reconciler + store, simulated world)', () => {
  let db: TestDatabase;
  let store: CustomerStore;
  let runtime: SimulatedRuntime;
  let routes: SimulatedRouteTable;
  let reconciler: CustomerReconciler;
  let rollouts: Rollouts;
  let metrics: Metrics;
  let now = Date.now();
  const defaults = testDesiredDefaults({ customerImage: 'img:a' });
  const presentImages = new Set(['img:a', 'img:b', 'img:bad']);
  const names = Array.from({ length: 10 }, (_, i) => `${uniqueName('ro')}-${i}`).sort();
  const signal = new AbortController().signal;
  let wakes = 0;

  beforeAll(async () => {
    db = await createTestDatabase();
    store = new CustomerStore(db.handle, testSecretBox());
    runtime = new SimulatedRuntime();
    runtime.startHealth = () => 'starting';
    routes = new SimulatedRouteTable();
    metrics = new Metrics({ defaultMetrics: false });
    const logger = createLogger({ level: 'silent' });
    rollouts = new Rollouts({
      records: new RolloutStore(db.handle),
      store,
      settings: { maxUnavailable: parseMaxUnavailable('20%'), maxFailures: 1, startTimeoutSeconds: 5 },
      imagePresent: async (image) => presentImages.has(image),
      metrics,
      logger,
    });
    reconciler = new CustomerReconciler({
      store,
      ports: new PortReservations(db.handle, { from: 30000, to: 30100 }),
      runtime,
      routes,
      workspaces: new SimulatedWorkspaces(),
      metrics,
      logger,
      defaults,
      publicScheme: 'https',
      retentionMs: 86_400_000,
      // The test's clock stands still: a negative wait means "look once, never wait".
      healthWaitMs: -1,
      now: () => now,
      rollouts,
      onRolloutProgress: () => void wakes++,
    });
    for (const name of names) await store.apply(desiredCustomer(name, { telegram: { botToken: TEST_BOT_TOKEN } }));
  });
  afterAll(async () => {
    await db.drop();
  });

  /** Containers that just started answer their health check now (the bad image never does). */
  function tick() {
    for (const c of runtime.containers.values()) if (c.health === 'starting' && c.spec.image !== 'img:bad') c.health = 'healthy';
  }
  const containerOf = (name: string) => [...runtime.containers.values()].find((c) => c.customer === name);
  const unavailable = () => names.filter((n) => containerOf(n)?.health !== 'healthy').length;

  /** One pass over every customer; returns the most customers unavailable at once during it. */
  async function round(): Promise<number> {
    let peak = unavailable();
    for (const name of names) {
      // A step may fail here (a new container that never turns healthy): the status says why and
      // the next round looks again, as the queue would. Anything else is a bug.
      await reconciler.reconcile(name, signal).catch((error: unknown) => {
        if (!(error instanceof ReconcileStepError)) throw error;
      });
      peak = Math.max(peak, unavailable());
    }
    return peak;
  }

  async function rolloutStatus() {
    const [view] = await rollouts.list();
    return view;
  }

  it('provisions everyone at once (new customers are never held back)', async () => {
    await round();
    tick();
    await round();
    for (const name of names) expect((await store.get(name))?.status.phase, name).toBe('Ready');
    expect(await rollouts.list()).toEqual([]);
  });

  it('a new image rolls out in waves of at most 20% (2 of 10), each only after the last became healthy', async () => {
    const before = new Map(names.map((n) => [n, containerOf(n)!.id]));
    defaults.customerImage = 'img:b';
    const peaks: number[] = [];
    peaks.push(await round());
    // Only two customers were touched; the rest keep serving on img:a and say why.
    expect(names.filter((n) => containerOf(n)?.spec.image === 'img:b')).toHaveLength(2);
    const held = names.find((n) => containerOf(n)?.spec.image === 'img:a')!;
    const heldStatus = (await store.get(held))?.status;
    expect(heldStatus?.phase).toBe('Ready');
    expect(heldStatus?.conditions?.find((c) => c.type === 'UpToDate')?.reason).toBe('WaitingForRollout');
    expect((await rolloutStatus())?.counts).toMatchObject({ inProgress: 2, waiting: 8, done: 0 });
    for (
      let i = 0;
      i < 12 && names.some((n) => containerOf(n)?.spec.image !== 'img:b' || containerOf(n)?.health !== 'healthy');
      i++
    ) {
      tick();
      peaks.push(await round());
    }
    expect(Math.max(...peaks)).toBeLessThanOrEqual(2);
    expect(peaks.filter((p) => p > 0).length).toBeGreaterThanOrEqual(5); // ten customers, two at a time
    for (const name of names) {
      expect(containerOf(name)?.spec.image).toBe('img:b');
      expect(containerOf(name)?.id).not.toBe(before.get(name));
    }
    await round();
    const view = await rolloutStatus();
    expect(view).toMatchObject({ state: 'complete', counts: { done: 10, waiting: 0, inProgress: 0, failed: 0 } });
    expect(view?.target.image).toBe('img:b');
    expect(wakes).toBeGreaterThan(0);
    for (const name of names)
      expect(
        (await store.get(name))?.status.conditions?.some((c) => c.type === 'UpToDate'),
        name,
      ).toBe(false);
  });

  it('a customer whose spec changes during a rollout is applied at once', async () => {
    defaults.customerImage = 'img:a';
    await round();
    // The image change started a new rollout: two are updating, the rest wait.
    const heldName = names.find((n) => containerOf(n)?.spec.image === 'img:b')!;
    const idBefore = containerOf(heldName)!.id;
    await rollouts.pause();
    await store.apply(desiredCustomer(heldName, { instructions: 'now a baker', telegram: { botToken: TEST_BOT_TOKEN } }));
    await reconciler.reconcile(heldName, signal);
    // Instructions re-render in place: same container, still held on img:b by the paused rollout.
    expect(containerOf(heldName)?.id).toBe(idBefore);
    const status = (await store.get(heldName))?.status;
    expect(status?.conditions?.find((c) => c.type === 'WorkspaceReady')?.status).toBe('True');
    expect(status?.conditions?.find((c) => c.type === 'UpToDate')?.reason).toBe('RolloutPaused');
    // A change of what the container runs (the bot token) is the customer's own: recreated now.
    await store.apply(
      desiredCustomer(heldName, {
        instructions: 'now a baker',
        telegram: { botToken: '987654321:ZZbbccddeeffgghhiijjkkllmmnnooppqqr' },
      }),
    );
    await reconciler.reconcile(heldName, signal);
    expect(containerOf(heldName)?.id).not.toBe(idBefore);
    await rollouts.resume();
    for (let i = 0; i < 12; i++) {
      tick();
      await round();
    }
    for (const name of names) expect(containerOf(name)?.spec.image, name).toBe('img:a');
    expect((await rolloutStatus())?.state).toBe('complete');
  });

  it('undo sends updated customers back to their previous image, in waves', async () => {
    defaults.customerImage = 'img:b';
    const peaks = [await round()];
    for (let i = 0; i < 3; i++) {
      tick();
      peaks.push(await round());
    }
    const onB = names.filter((n) => containerOf(n)?.spec.image === 'img:b');
    expect(onB.length).toBeGreaterThan(0);
    expect(onB.length).toBeLessThan(10);
    expect(await rollouts.undo()).toBe(1);
    for (let i = 0; i < 10; i++) {
      tick();
      peaks.push(await round());
    }
    expect(Math.max(...peaks)).toBeLessThanOrEqual(2);
    for (const name of names) expect(containerOf(name)?.spec.image, name).toBe('img:a');
    const view = await rolloutStatus();
    expect(view?.undone).toBe(true);
    expect(view?.counts.rolledBack).toBe(onB.length);
    const reverted = (await store.get(onB[0]!))?.status;
    expect(reverted?.phase).toBe('Ready');
    expect(reverted?.conditions?.find((c) => c.type === 'UpToDate')?.reason).toBe('RolloutUndone');
  });

  it('a missing image pauses the rollout before any container is touched', async () => {
    const before = new Map(names.map((n) => [n, containerOf(n)!.id]));
    defaults.customerImage = 'img:missing';
    await round();
    const view = await rolloutStatus();
    expect(view).toMatchObject({ state: 'paused', pausedReason: 'ImageMissing' });
    expect(view?.pausedMessage).toContain('img:missing');
    for (const name of names) expect(containerOf(name)?.id).toBe(before.get(name));
    expect((await store.get(names[0]!))?.status.conditions?.find((c) => c.type === 'UpToDate')?.reason).toBe('RolloutPaused');
  });

  it('a container found stopped during a paused rollout is started again on its old image, not recreated on the missing one', async () => {
    // As after an engine restart, or a customer resumed mid-rollout: recreating it here would
    // remove a working container for an image that is not there.
    const name = names[3]!;
    const stopped = containerOf(name)!;
    stopped.state = 'exited';
    stopped.health = 'unknown';
    await reconciler.reconcile(name, signal);
    tick();
    await reconciler.reconcile(name, signal);
    expect(containerOf(name)).toMatchObject({ id: stopped.id, state: 'running', health: 'healthy' });
    expect(containerOf(name)?.spec.image).toBe('img:a');
    expect((await store.get(name))?.status.phase).toBe('Ready');
  });

  it('a report made before an undo cannot settle the entry the undo turned around', async () => {
    const name = names[4]!;
    presentImages.add('img:race');
    const admission = await rollouts.admit({
      customer: name,
      key: 'race',
      fingerprint: 'fp-race',
      image: 'img:race',
      toHash: 'hash-race',
      change: { fromHash: 'hash-old', image: 'img:a' },
      now,
    });
    expect(admission.entry?.state).toBe('updating');
    await rollouts.undo();
    // The worker that held the admission from before the undo now reports its container current.
    const progress = await rollouts.report(admission, { customer: name, current: true, now, templateStartTimeoutSeconds: 5 });
    expect(progress).toEqual({ freed: false, failed: false });
    const rows = await sql<{ state: string; target: string }>`
      SELECT rc.state, rc.target FROM rollout_customers rc JOIN rollouts r ON r.id = rc.rollout_id
      WHERE r.key = 'race' AND rc.customer = ${name}
    `.execute(db.handle.db);
    expect(rows.rows).toEqual([{ state: 'updating', target: 'previous' }]);
  });

  it('updates that never become healthy pause the rollout past the failure limit and roll back', async () => {
    const before = new Map(names.map((n) => [n, containerOf(n)!.id]));
    defaults.customerImage = 'img:bad';
    for (let i = 0; i < 8; i++) {
      await round();
      tick();
      now += 6_000;
    }
    const view = await rolloutStatus();
    expect(view).toMatchObject({ state: 'paused', pausedReason: 'Failures' });
    const failed = view!.customers.filter((c) => c.state === 'failed' || c.state === 'rollingBack').map((c) => c.customer);
    // More than BLYTZ_ROLLOUT_MAX_FAILURES=1 failed; at most the two in flight did.
    expect(failed.length).toBe(2);
    for (const name of names) {
      expect(containerOf(name)?.spec.image, name).toBe('img:a');
      expect(containerOf(name)?.health, name).toBe('healthy');
      if (failed.includes(name)) {
        expect(containerOf(name)?.id).not.toBe(before.get(name));
        const status = (await store.get(name))?.status;
        expect(status?.phase).toBe('Ready');
        expect(status?.conditions?.find((c) => c.type === 'UpToDate')?.reason).toBe('RolledBack');
      } else {
        expect(containerOf(name)?.id, `${name} was never touched`).toBe(before.get(name));
      }
    }
    const events = await store.listEvents(failed[0]!);
    expect(events.map((e) => e.reason)).toEqual(expect.arrayContaining(['RolloutFailed', 'RolledBack']));
    await rollouts.refreshMetrics();
    const text =
      (await metrics.registry.getSingleMetricAsString('blytz_rollout_paused')) +
      (await metrics.registry.getSingleMetricAsString('blytz_rollout_customers'));
    expect(text).toMatch(/blytz_rollout_paused\{reason="failures"\} 1/);
    expect(text).toMatch(/blytz_rollout_customers\{state="failed"\} 2/);
    const rows = await sql<{ n: number }>`SELECT count(*)::int AS n FROM rollouts`.execute(db.handle.db);
    expect(rows.rows[0]?.n).toBeGreaterThanOrEqual(4);
  });

  it('a customer suspended while being updated gives its slot back and, resumed much later, is updated afresh (not failed)', async () => {
    presentImages.add('img:c');
    defaults.customerImage = 'img:c';
    const ofImageC = async () => (await rollouts.list()).find((r) => r.target.image === 'img:c');
    await round();
    const started = (await ofImageC())!;
    const updating = started.customers.filter((c) => c.state === 'updating').map((c) => c.customer);
    // One slot or two: the last test's rollback may still hold one.
    expect(updating.length).toBeGreaterThan(0);
    const suspended = updating[0]!;
    await store.apply(desiredCustomer(suspended, { state: 'suspended', telegram: { botToken: TEST_BOT_TOKEN } }));
    const wakesBefore = wakes;
    await reconciler.reconcile(suspended, signal);
    expect(wakes).toBe(wakesBefore + 1);
    // Its entry keeps its place (its container may run the new image already) but loses its
    // start time, which counts again from its return; not active, it holds no slot meanwhile.
    const entry = await sql<{ state: string; started_at: Date | null }>`
      SELECT state, started_at FROM rollout_customers WHERE rollout_id = ${started.id} AND customer = ${suspended}
    `.execute(db.handle.db);
    expect(entry.rows).toEqual([{ state: 'updating', started_at: null }]);

    // Everyone else goes on; the suspended customer comes back long after the start timeout.
    for (let i = 0; i < 4; i++) {
      tick();
      await round();
    }
    now += 600_000;
    await store.apply(desiredCustomer(suspended, { telegram: { botToken: TEST_BOT_TOKEN } }));
    for (let i = 0; i < 40 && (await ofImageC())?.state !== 'complete'; i++) {
      tick();
      await round();
    }
    const view = await ofImageC();
    expect(view?.customers.find((c) => c.customer === suspended)?.state).toBe('done');
    expect(view).toMatchObject({ state: 'complete', counts: { done: 10, failed: 0 } });
    for (const name of names) expect(containerOf(name)?.spec.image, name).toBe('img:c');
  });
});
