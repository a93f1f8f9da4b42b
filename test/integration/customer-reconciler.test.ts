import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CustomerReconciler } from '../../src/controller/customer/reconciler.js';
import { createLogger } from '../../src/observability/logger.js';
import { Metrics } from '../../src/observability/metrics.js';
import { CustomerStore } from '../../src/store/customer-store.js';
import { PortReservations } from '../../src/store/port-reservations.js';
import { desiredCustomer, testSecretBox, TEST_BOT_TOKEN, uniqueName, stubHealth, testDesiredDefaults } from '../support/fixtures.js';
import { createTestDatabase, type TestDatabase } from '../support/postgres.js';
import { SimulatedRouteTable, SimulatedRuntime, SimulatedWorkspaces } from '../support/simulated-world.js';
import { modelAccessConfig, type ModelAccessFragment } from '../../src/workspace/model-access-config.js';

const DAY = 86_400_000;

describe('customer reconciler on a simulated world with the real store', () => {
  let db: TestDatabase;
  let store: CustomerStore;
  let runtime: SimulatedRuntime;
  let routes: SimulatedRouteTable;
  let workspaces: SimulatedWorkspaces;
  let metrics: Metrics;
  let now = Date.now();
  let reconciler: CustomerReconciler;
  const signal = new AbortController().signal;

  beforeAll(async () => {
    db = await createTestDatabase();
    store = new CustomerStore(db.handle, testSecretBox());
    runtime = new SimulatedRuntime();
    routes = new SimulatedRouteTable();
    workspaces = new SimulatedWorkspaces();
    metrics = new Metrics({ defaultMetrics: false });
    reconciler = new CustomerReconciler({
      store,
      ports: new PortReservations(db.handle, { from: 30000, to: 30010 }),
      runtime,
      routes,
      workspaces,
      metrics,
      logger: createLogger({ level: 'silent' }),
      defaults: testDesiredDefaults({ baseDomain: 'blytz.localhost', customerImage: 'blytz/assistant-stub:dev', containerPort: 18789 }),
      publicScheme: 'https',
      retentionMs: 30 * DAY,
      now: () => now,
    });
  });
  afterAll(async () => {
    await db.drop();
  });

  async function reconcile(name: string) {
    return reconciler.reconcile(name, signal);
  }

  it('brings an active customer to Ready in one pass and then does nothing', async () => {
    const name = uniqueName('rc');
    await store.apply(desiredCustomer(name, { telegram: { botToken: TEST_BOT_TOKEN } }));
    expect(await reconcile(name)).toEqual({});
    const customer = await store.get(name);
    expect(customer?.status.phase).toBe('Ready');
    expect(customer?.status.observedGeneration).toBe(1);
    expect(customer?.status.url).toBe(`https://${name}.blytz.localhost`);
    expect(customer?.status.conditions?.map((c) => `${c.type}=${c.status}`)).toEqual([
      'WorkspaceReady=True',
      'ContainerReady=True',
      'RouteReady=True',
      'Ready=True',
    ]);
    const containerCount = runtime.containers.size;
    const statusBefore = JSON.stringify(customer?.status);
    const versionBefore = customer?.resourceVersion;
    await reconcile(name);
    expect(runtime.containers.size).toBe(containerCount);
    const again = await store.get(name);
    expect(JSON.stringify(again?.status)).toBe(statusBefore);
    expect(again?.resourceVersion).toBe(versionBefore); // no status write when nothing changed
    const events = await store.listEvents(name);
    expect(events.map((e) => e.reason)).toEqual(
      expect.arrayContaining(['ContainerCreated', 'RouteReady', 'WorkspaceRendered', 'PortReserved']),
    );
  });

  /** A reconciler of its own (metrics, logger, URL settings) on the shared store and world. */
  function reconcilerWith(overrides: Partial<ConstructorParameters<typeof CustomerReconciler>[0]>): CustomerReconciler {
    return new CustomerReconciler({
      store,
      ports: new PortReservations(db.handle, { from: 30020, to: 30030 }),
      runtime,
      routes,
      workspaces,
      metrics: new Metrics({ defaultMetrics: false }),
      logger: createLogger({ level: 'silent' }),
      defaults: testDesiredDefaults(),
      publicScheme: 'https',
      retentionMs: 30 * DAY,
      now: () => now,
      ...overrides,
    });
  }

  it('tells the backup gate once, when a customer first becomes Ready (its state can be read from then on)', async () => {
    const readable: string[] = [];
    const backups = {
      holdOf: async () => undefined,
      beforeUpdate: async () => undefined,
      beforePurge: async () => undefined,
      restoreBeforeUpdate: async () => false,
      stateReadable: (customer: string) => readable.push(customer),
    };
    const own = reconcilerWith({ backups });
    const name = uniqueName('rc');
    await store.apply(desiredCustomer(name, { telegram: { botToken: TEST_BOT_TOKEN } }));
    await own.reconcile(name, signal);
    expect((await store.get(name))?.status.phase).toBe('Ready');
    expect(readable).toEqual([name]);
    // Ready already: another pass says nothing new.
    await own.reconcile(name, signal);
    expect(readable).toEqual([name]);
  });

  it('says ModelReady=False for a customer without a key where included model access is not offered, and drops it once offered', async () => {
    let fragment: ModelAccessFragment | undefined;
    const own = reconcilerWith({ modelAccess: async () => fragment });
    const name = uniqueName('rc');
    await store.apply(desiredCustomer(name, { telegram: { botToken: TEST_BOT_TOKEN } }));
    fragment = undefined; // the model gateway is off: no openclaw.json model block to render
    await own.reconcile(name, signal);
    const without = await store.get(name);
    expect(without?.status.phase).toBe('Ready');
    expect(without?.status.conditions?.find((c) => c.type === 'ModelReady')).toMatchObject({
      status: 'False',
      reason: 'NoModelAccess',
    });
    // The operator configures the gateway: the next pass renders the model and the condition goes.
    fragment = modelAccessConfig({ gatewayUrl: 'http://172.17.0.1:8090', credential: 'blytz-mk-rc', model: 'anthropic/claude-haiku-4-5' });
    await own.reconcile(name, signal);
    expect((await store.get(name))?.status.conditions?.map((c) => c.type)).not.toContain('ModelReady');
    // A key of the customer's own never needed the gateway.
    fragment = undefined;
    const byok = uniqueName('rc');
    await store.apply(desiredCustomer(byok, { telegram: { botToken: TEST_BOT_TOKEN }, model: { provider: 'openai', apiKey: 'sk-own-rc' } }));
    await own.reconcile(byok, signal);
    expect((await store.get(byok))?.status.conditions?.map((c) => c.type)).not.toContain('ModelReady');
  });

  it('shows Provisioning between nothing and Ready, and not while repairing a Ready customer', async () => {
    const own = reconcilerWith({});
    const reconcile = (name: string) => own.reconcile(name, signal);
    const name = uniqueName('rc');
    await store.apply(desiredCustomer(name));
    const phases: Array<string | undefined> = [];
    // Every status write ends here (updateStatus too), with the reconcile's events or without.
    const writeStatusAndEvents = store.writeStatusAndEvents.bind(store);
    store.writeStatusAndEvents = async (who, status, events) => {
      if (who === name && status) phases.push(status.phase);
      return writeStatusAndEvents(who, status, events);
    };
    try {
      await reconcile(name);
      expect(phases).toEqual(['Provisioning', 'Ready']);
      // Provisioning was written from the world before the actions: nothing there yet.
      phases.length = 0;
      routes.routes.delete(name);
      await reconcile(name);
      expect(phases).toEqual([]); // repaired within the pass; Ready all along
      expect(routes.routes.has(name)).toBe(true);
    } finally {
      store.writeStatusAndEvents = writeStatusAndEvents;
    }
  });

  it('logs one line per action on the world, says what a correction corrects, and shows the URL with its port', async () => {
    const lines: Array<{ level: number; msg: string; reason?: string; customer?: string }> = [];
    const logger = createLogger({
      level: 'info',
      destination: new Writable({
        write(chunk: Buffer, _encoding, callback) {
          for (const line of chunk.toString().split('\n').filter(Boolean)) lines.push(JSON.parse(line) as (typeof lines)[number]);
          callback();
        },
      }),
    });
    const logging = reconcilerWith({ logger, publicScheme: 'http', publicPort: 8081 });
    const name = uniqueName('rc');
    await store.apply(desiredCustomer(name));
    await logging.reconcile(name, signal);
    const port = (await store.get(name))?.status.hostPort;
    expect(lines.map((l) => [l.level, l.reason, l.msg])).toEqual([
      [30, 'WorkspaceRendered', `${name}: workspace files rendered from the template`],
      [30, 'PortReserved', `${name}: host port ${port} reserved`],
      [30, 'ContainerCreated', `${name}: container created and started on 127.0.0.1:${port}`],
      [30, 'RouteReady', `${name}: ${name}.blytz.localhost routes to 127.0.0.1:${port}`],
    ]);
    expect((await store.get(name))?.status.url).toBe(`http://${name}.blytz.localhost:8081`);

    // A stopped container (docker kill) and a deleted route: two actions, two lines, each a correction.
    lines.length = 0;
    const [container] = await runtime.listFor(name);
    await runtime.stop(container!.id);
    routes.routes.delete(name);
    await logging.reconcile(name, signal);
    expect(lines.map((l) => [l.level, l.reason, l.msg])).toEqual([
      [30, 'ContainerStarted', `${name}: container had stopped and was started again (corrects container stopped)`],
      [30, 'RouteReady', `${name}: ${name}.blytz.localhost routes to 127.0.0.1:${port} (corrects route missing)`],
    ]);
    expect((await store.listEvents(name)).find((e) => e.reason === 'ContainerStarted')?.message).toBe(
      'container had stopped and was started again',
    );

    // Nothing to do: no line.
    lines.length = 0;
    await logging.reconcile(name, signal);
    expect(lines).toEqual([]);
  });

  it('instruction and bot token changes re-render in place (the gateway reloads its config); a plan change recreates', async () => {
    const name = uniqueName('rc');
    await store.apply(desiredCustomer(name, { telegram: { botToken: TEST_BOT_TOKEN } }));
    await reconcile(name);
    const [first] = await runtime.listFor(name);
    await store.apply(desiredCustomer(name, { instructions: 'new instructions', telegram: { botToken: TEST_BOT_TOKEN } }));
    await reconcile(name);
    expect((await runtime.listFor(name)).map((c) => c.id)).toEqual([first?.id]);
    const renderedBefore = workspaces.folders.get(name);
    await store.apply(
      desiredCustomer(name, {
        instructions: 'new instructions',
        telegram: { botToken: '987654321:ZZbbccddeeffgghhiijjkkllmmnnooppqqr' },
      }),
    );
    await reconcile(name);
    expect((await runtime.listFor(name)).map((c) => c.id)).toEqual([first?.id]);
    expect(workspaces.folders.get(name)).not.toBe(renderedBefore);
    await store.apply(
      desiredCustomer(name, {
        plan: 'pro',
        instructions: 'new instructions',
        telegram: { botToken: '987654321:ZZbbccddeeffgghhiijjkkllmmnnooppqqr' },
      }),
    );
    await reconcile(name);
    const after = await runtime.listFor(name);
    expect(after).toHaveLength(1);
    expect(after[0]?.id).not.toBe(first?.id);
    expect((await store.get(name))?.status.phase).toBe('Ready');
  });

  it('corrects drift and counts it', async () => {
    const name = uniqueName('rc');
    await store.apply(desiredCustomer(name));
    await reconcile(name);
    const [container] = await runtime.listFor(name);
    await runtime.stop(container!.id);
    routes.routes.delete(name);
    await reconcile(name);
    expect((await runtime.listFor(name))[0]?.state).toBe('running');
    expect(routes.routes.has(name)).toBe(true);
    const text = await metrics.registry.getSingleMetricAsString('blytz_drift_corrections_total');
    expect(text).toMatch(/kind="container_stopped"} 1/);
    expect(text).toMatch(/kind="route_missing"} 1/);
  });

  it('starts a stopped container it saw serving before reading the rest of the world; once per convergence, at the same generation only', async () => {
    const name = uniqueName('rc');
    await store.apply(desiredCustomer(name));
    await reconcile(name);
    const [container] = await runtime.listFor(name);
    const id = container!.id;
    // The order of the calls that matter: the start, the template render, the route read.
    const order: string[] = [];
    const { start, listFor } = runtime;
    const { render } = workspaces;
    const { get } = routes;
    runtime.start = (cid) => (order.push('start'), start.call(runtime, cid));
    workspaces.render = (input) => (order.push('render'), render.call(workspaces, input));
    routes.get = (customer) => (order.push('route'), get.call(routes, customer));
    const startHealth = runtime.startHealth;
    try {
      // Killed: started first, then the reconcile goes on and finds it serving.
      await runtime.stop(id);
      await reconcile(name);
      expect(order).toEqual(['start', 'render', 'route']);
      expect((await runtime.listFor(name))[0]).toMatchObject({ id, state: 'running' });
      expect((await store.get(name))?.status.phase).toBe('Ready');
      expect((await store.listEvents(name)).find((e) => e.reason === 'ContainerStarted')?.count).toBe(1);

      // Killed again, and it does not come up healthy: repaired once, then the ordinary path
      // (render and route first) until it has been seen serving again.
      runtime.startHealth = () => 'starting';
      await runtime.stop(id);
      order.length = 0;
      await reconcile(name);
      expect(order).toEqual(['start', 'render', 'route']);
      expect((await store.get(name))?.status.phase).not.toBe('Ready');
      await runtime.stop(id);
      order.length = 0;
      await reconcile(name);
      expect(order).toEqual(['render', 'route', 'start', 'route']); // the route read again for status, after the action

      // Serving again, then a spec change arrives with the container stopped: the new
      // generation goes the ordinary way.
      runtime.startHealth = startHealth;
      runtime.containers.get(id)!.health = 'healthy';
      await reconcile(name);
      expect((await store.get(name))?.status.phase).toBe('Ready');
      await runtime.stop(id);
      await store.apply(desiredCustomer(name, { instructions: 'something else' }));
      order.length = 0;
      await reconcile(name);
      expect(order).toEqual(['render', 'route', 'start', 'route']); // the route read again for status, after the action
      expect((await runtime.listFor(name))[0]).toMatchObject({ id, state: 'running' });
    } finally {
      Object.assign(runtime, { start, listFor, startHealth });
      workspaces.render = render;
      routes.get = get;
    }
  });

  it('a container the engine keeps refusing to start is replaced by a fresh one after 3 refusals', async () => {
    const name = uniqueName('rc');
    await store.apply(desiredCustomer(name));
    await reconcile(name);
    const [broken] = await runtime.listFor(name);
    await runtime.stop(broken!.id);
    runtime.refuseStart.add(broken!.id);
    for (let i = 0; i < 3; i++) await expect(reconcile(name)).rejects.toThrow();
    expect(runtime.containers.has(broken!.id)).toBe(false);
    expect((await store.listEvents(name)).map((e) => e.reason)).toContain('ContainerUnstartable');
    await reconcile(name);
    const after = await runtime.listFor(name);
    expect(after).toHaveLength(1);
    expect(after[0]?.id).not.toBe(broken!.id);
    expect(after[0]?.state).toBe('running');
    expect((await store.get(name))?.status.phase).toBe('Ready');
  });

  it('a container that stays unhealthy is restarted with a growing back-off, shown in status, reset once it stays healthy', async () => {
    const name = uniqueName('rc');
    await store.apply(desiredCustomer(name));
    await reconcile(name);
    const [container] = await runtime.listFor(name);
    const id = container!.id;
    const sick = new Set([name]);
    const startHealth = runtime.startHealth;
    runtime.startHealth = (spec) => (sick.has(spec.customer) ? 'unhealthy' : 'healthy');
    runtime.containers.get(id)!.health = 'unhealthy';
    const restarts = async () =>
      (await store.listEvents(name)).filter((e) => e.reason === 'ContainerRestarted').reduce((sum, e) => sum + e.count, 0);
    const drift = async () =>
      Number(
        /kind="container_unhealthy"} (\d+)/.exec(
          await metrics.registry.getSingleMetricAsString('blytz_drift_corrections_total'),
        )?.[1] ?? 0,
      );
    try {
      const driftBefore = await drift();
      // Seconds after each restart: held for 30 s, then 60 s, then 120 s.
      const timeline: [number, number][] = [
        [0, 1],
        [1, 1],
        [29, 1],
        [30, 2],
        [59, 2],
        [60, 3],
        [119, 3],
        [120, 4],
      ];
      let lastRestart = now;
      for (const [sinceLast, expected] of timeline) {
        now = lastRestart + sinceLast * 1000;
        const before = await restarts();
        await reconcile(name);
        const count = await restarts();
        if (count > before) lastRestart = now;
        expect(count, `${sinceLast} s after the last restart`).toBe(expected);
      }
      // Drift is counted once, when a Ready customer broke: the later restarts (and the held
      // passes between them) belong to the same repair.
      expect(await drift()).toBe(driftBefore + 1);
      expect(runtime.containers.has(id)).toBe(true); // restarted in place, never replaced
      const held = (await store.get(name))?.status.conditions?.find((c) => c.type === 'ContainerReady');
      expect(held).toMatchObject({ status: 'False', reason: 'RestartBackOff' });
      expect(held?.message).toContain(`restarted 4 times, next restart after ${new Date(lastRestart + 240_000).toISOString()}`);

      // Held passes look again less often (at most every 10 s), and write no status.
      const version = (await store.get(name))?.resourceVersion;
      now = lastRestart + 1_000;
      expect(await reconcile(name)).toEqual({ requeueAfterMs: 10_000 });
      now = lastRestart + 235_000;
      expect(await reconcile(name)).toEqual({ requeueAfterMs: 5_000 });
      expect((await store.get(name))?.resourceVersion).toBe(version);
      expect(await restarts()).toBe(4);

      // It recovers and stays healthy for ten minutes: the next failure is restarted at once.
      sick.delete(name);
      runtime.containers.get(id)!.health = 'healthy';
      await reconcile(name);
      expect((await store.get(name))?.status.phase).toBe('Ready');
      now += 600_000;
      await reconcile(name);
      runtime.containers.get(id)!.health = 'unhealthy';
      await reconcile(name);
      expect(await restarts()).toBe(5);
      // One event, counted: a restart count in its text would add a row per restart.
      expect((await store.listEvents(name)).filter((e) => e.reason === 'ContainerRestarted')).toHaveLength(1);
    } finally {
      runtime.startHealth = startHealth;
    }
  });

  it('suspend stops and shows the page; resume starts the same container; cancel tears down and purges later', async () => {
    const name = uniqueName('rc');
    await store.apply(desiredCustomer(name));
    await reconcile(name);
    const [container] = await runtime.listFor(name);
    await store.setState(name, 'suspended');
    await reconcile(name);
    expect((await runtime.listFor(name))[0]?.state).toBe('exited');
    expect(routes.routes.get(name)?.target).toEqual({ kind: 'suspended' });
    expect((await store.get(name))?.status.phase).toBe('Suspended');
    await store.setState(name, 'active');
    await reconcile(name);
    expect((await runtime.listFor(name)).map((c) => [c.id, c.state])).toEqual([[container!.id, 'running']]);
    await store.setState(name, 'cancelled');
    const outcome = await reconcile(name);
    expect(await runtime.listFor(name)).toEqual([]);
    expect(routes.routes.has(name)).toBe(false);
    expect(workspaces.folders.has(name)).toBe(true);
    expect((await store.get(name))?.status.phase).toBe('Terminated');
    expect(outcome.requeueAfterMs).toBeGreaterThan(0);
    now += 31 * DAY;
    await reconcile(name);
    expect(workspaces.folders.has(name)).toBe(false);
    expect(await store.get(name)).toBeUndefined();
    now -= 31 * DAY;
  });

  it('aborted mid-action (leadership lost), it writes no status, event or rollout report afterwards', async () => {
    const name = uniqueName('rc');
    await store.apply(desiredCustomer(name, { telegram: { botToken: TEST_BOT_TOKEN } }));
    const deposed = new AbortController();
    const create = runtime.create.bind(runtime);
    runtime.create = async (spec) => {
      const id = await create(spec); // the action in flight still completes...
      deposed.abort(new Error('not the leader any more'));
      return id;
    };
    try {
      await expect(reconciler.reconcile(name, deposed.signal)).rejects.toThrow('not the leader any more');
    } finally {
      runtime.create = create;
    }
    // ...but nothing after it: no further action, no status (only the Provisioning written
    // before the actions, from the world as it was then).
    const customer = await store.get(name);
    expect(customer?.status.phase).toBe('Provisioning');
    expect(customer?.status.conditions?.find((c) => c.type === 'ContainerReady')?.reason).toBe('ContainerMissing');
    // Only the actions that ran say so; no failure is recorded for the abort, no route was written.
    const events = await store.listEvents(name);
    expect(events.filter((e) => e.type === 'Warning')).toEqual([]);
    expect(events.map((e) => e.reason)).not.toContain('RouteUpdated');
    expect(routes.routes.has(name)).toBe(false);
    // The next reconcile (the new leader) finishes the job from what it finds.
    expect(await reconcile(name)).toEqual({});
    expect((await store.get(name))?.status.phase).toBe('Ready');
  });

  it('a port taken by something else: the customer moves to another port and its route follows at once', async () => {
    const name = uniqueName('rc');
    await store.apply(desiredCustomer(name, { telegram: { botToken: TEST_BOT_TOKEN } }));
    await reconcile(name);
    const before = [...runtime.containers.values()].find((c) => c.customer === name)!;
    const taken = before.hostPort!;
    expect(routes.routes.get(name)?.target).toEqual({ kind: 'upstream', dial: `127.0.0.1:${taken}` });
    // The container stopped, and meanwhile another process on the host took its port.
    before.state = 'exited';
    runtime.takenPorts.add(taken);
    try {
      // The start is refused: the step fails (the queue backs off) after moving the customer.
      await expect(reconcile(name)).rejects.toThrow(/host port \d+ is taken by something else on this host; moved to \d+/);
      // Never left dialling the taken port (a foreign process, later maybe another customer).
      const moved = routes.routes.get(name)?.target;
      expect(moved).toMatchObject({ kind: 'upstream' });
      expect(moved).not.toEqual({ kind: 'upstream', dial: `127.0.0.1:${taken}` });
      // The next pass creates the container on the new port and routes to it.
      await reconcile(name);
      const after = [...runtime.containers.values()].find((c) => c.customer === name)!;
      expect(after.hostPort).not.toBe(taken);
      expect(routes.routes.get(name)?.target).toEqual({ kind: 'upstream', dial: `127.0.0.1:${after.hostPort}` });
      expect((await store.get(name))?.status.phase).toBe('Ready');
      expect((await store.listEvents(name)).map((e) => e.reason)).toContain('PortClash');
    } finally {
      runtime.takenPorts.delete(taken);
    }
  });

  it('removes orphans that carry our marks', async () => {
    const name = uniqueName('orphan');
    await runtime.create({
      customer: name,
      image: 'x',
      containerPort: 1,
      hostPort: 30009,
      user: '1000:1000',
      mounts: [],
      env: {},
      resources: { memoryBytes: 1, nanoCpus: 1, pidsLimit: 1, nodeHeapMiB: 64 },
      ...stubHealth(),
      specHash: 'h',
    });
    await routes.ensure({ customer: name, host: `${name}.blytz.localhost`, target: { kind: 'suspended' } });
    expect(await reconciler.listKeys()).toContain(name);
    await reconcile(name);
    expect(await runtime.listFor(name)).toEqual([]);
    expect(routes.routes.has(name)).toBe(false);
  });

  it('an unknown template fails terminally with a clear status', async () => {
    const name = uniqueName('rc');
    await store.apply(desiredCustomer(name, { template: 'no-such-template' }));
    await expect(reconcile(name)).rejects.toThrow(/template no-such-template/);
    const customer = await store.get(name);
    expect(customer?.status.phase).toBe('Failed');
    expect(customer?.status.conditions?.find((c) => c.type === 'Ready')?.reason).toBe('TemplateInvalid');
  });

  it('exhausted ports are a condition, not a crash', async () => {
    const names = Array.from({ length: 12 }, () => uniqueName('full'));
    const outcomes = [];
    for (const name of names) {
      await store.apply(desiredCustomer(name));
      outcomes.push(await reconcile(name));
    }
    const phases = await Promise.all(names.map(async (n) => (await store.get(n))?.status));
    const exhausted = phases.filter((s) => s?.conditions?.find((c) => c.type === 'Ready')?.reason === 'PortsExhausted');
    expect(exhausted.length).toBeGreaterThan(0);
    expect(outcomes.some((o) => (o.requeueAfterMs ?? 0) >= 30_000)).toBe(true);
  });
});
