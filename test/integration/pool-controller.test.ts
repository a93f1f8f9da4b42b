import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmod, mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import Docker from 'dockerode';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PoolReconciler } from '../../src/controller/pool/reconciler.js';
import { PoolReadiness } from '../../src/controller/pool/readiness.js';
import { resolveCustomer, resolvePoolSlot } from '../../src/controller/customer/desired.js';
import { boundContainers } from '../../src/controller/customer/bound-containers.js';
import { PoolBinder } from '../../src/controller/customer/pool-binding.js';
import { ReconcileEvents } from '../../src/controller/customer/reconcile-events.js';
import { POOL_SLOT_LABEL } from '../../src/domain/labels.js';
import { poolContainerName, poolEngineKey, poolFolderName } from '../../src/domain/pool.js';
import { createLogger } from '../../src/observability/logger.js';
import { Metrics } from '../../src/observability/metrics.js';
import { Policies } from '../../src/resilience/policies.js';
import { DockerRuntime } from '../../src/runtime/docker/docker-runtime.js';
import { runTokenProbe } from '../../src/runtime/docker/health.js';
import { CustomerStore } from '../../src/store/customer-store.js';
import { PoolStore } from '../../src/store/pool-store.js';
import { PortReservations } from '../../src/store/port-reservations.js';
import { FileWorkspaces, POOL_DIR } from '../../src/workspace/file-workspaces.js';
import { PoolFolders } from '../../src/workspace/pool-folders.js';
import { removeInstanceObjects } from '../support/docker-cleanup.js';
import { desiredCustomer, testDesiredDefaults, testSecretBox, uniqueName } from '../support/fixtures.js';
import { createTestDatabase, type TestDatabase } from '../support/postgres.js';
import { waitFor } from '../support/wait-for.js';

const ROOT = resolve(import.meta.dirname, '../..');
/** The stand-in built from this tree: its /readyz shows details to the holder of the token in force. */
const POOL_STUB = 'blytz/assistant-stub:pool';
const INSTANCE_LABEL = 'cloud.blytz.instance';
const instance = `pool-${randomBytes(3).toString('hex')}`;
const PORTS = { from: 44_500, to: 44_599 };
const TEMPLATE = 'personal-assistant';
const CONFIG_PROBE = { path: '/readyz', authorizedField: 'uptimeMs' };

/**
 * The pool controller against real Postgres and a real Docker engine (stand-in image): it warms
 * each pool to its size, marks a slot claimable only once its assistant shows its own token in
 * force, finishes what a crash left half done, removes what no slot names, and at size 0 leaves
 * nothing behind (no container, folder, network or host port). And the claim's world side: the
 * slot's container renamed for its customer and its folder moved, both idempotent; the binder
 * (pool-binding.ts) seeing the slot's gateway take the customer's configuration, or giving it up.
 */
describe('the pool controller (Postgres, Docker)', () => {
  let db: TestDatabase;
  let dataDir: string;
  let pools: PoolStore;
  let customers: CustomerStore;
  let slots: FileWorkspaces;
  let customerFiles: FileWorkspaces;
  let reconciler: PoolReconciler;
  const readiness = new PoolReadiness();
  const docker = new Docker();
  const metrics = new Metrics({ defaultMetrics: false });
  const runtime = new DockerRuntime(new Policies({ metrics }).guard('docker'), { docker, extraLabels: { [INSTANCE_LABEL]: instance } });
  const defaults = testDesiredDefaults({ customerImage: POOL_STUB, startTimeoutSeconds: 20 });
  const box = testSecretBox();

  beforeAll(async () => {
    execFileSync(join(ROOT, 'scripts/build-test-image.sh'), [POOL_STUB], { cwd: ROOT, stdio: 'ignore' });
    db = await createTestDatabase();
    dataDir = await mkdtemp(join(tmpdir(), 'blytz-pool-'));
    await chmod(dataDir, 0o755);
    const ports = new PortReservations(db.handle, PORTS);
    pools = new PoolStore(db.handle, box, ports);
    customers = new CustomerStore(db.handle, box);
    const files = { dataDir, templatesDir: join(ROOT, 'templates'), defaults: { image: POOL_STUB, containerPort: 18789 } };
    slots = new FileWorkspaces({ ...files, folder: POOL_DIR });
    customerFiles = new FileWorkspaces(files);
    reconciler = new PoolReconciler({
      pools,
      runtime,
      workspaces: slots,
      defaults,
      readiness,
      metrics,
      logger: createLogger({ level: process.env['POOL_TEST_LOG'] ?? 'silent' }),
    });
  });
  afterAll(async () => {
    await removeInstanceObjects(docker, INSTANCE_LABEL, instance);
    if (dataDir) await rm(dataDir, { recursive: true, force: true });
    await db?.drop();
  });

  /** Passes of the controller until `done` holds, as its requeues would run them. */
  const settle = async <T>(done: () => Promise<T>, timeoutMs = 45_000): Promise<NonNullable<T>> =>
    waitFor(async () => {
      await reconciler.reconcile('pools', new AbortController().signal);
      return done();
    }, timeoutMs, 200);
  const rows = () => pools.slots();
  const slotFolders = async () => (await readdir(join(dataDir, POOL_DIR))).filter((f) => f.startsWith('slot-')).sort();
  const slotContainers = () =>
    docker.listContainers({ all: true, filters: { label: [`${INSTANCE_LABEL}=${instance}`, POOL_SLOT_LABEL] } });
  const poolPorts = async () =>
    (await sql<{ n: number }>`SELECT count(*)::int AS n FROM port_reservations WHERE slot = 'pool'`.execute(db.handle.db)).rows[0]?.n;

  it('warms a pool to its size; each slot is its own container, network, folder and port, claimable once it shows its own token', async () => {
    await pools.apply({ plan: 'personal', size: 2, template: TEMPLATE });
    const ready = await settle(async () => {
      const r = await rows();
      return r.length === 2 && r.every((s) => s.state === 'ready') ? r : undefined;
    });
    expect(readiness.mayClaim(`${TEMPLATE}/personal`)).toBe(true);
    expect(await slotFolders()).toEqual(ready.map((s) => poolFolderName(s.id)).sort());
    expect(await poolPorts()).toBe(2);
    for (const slot of ready) {
      const [info] = await docker.listContainers({ all: true, filters: { name: [`^/${poolContainerName(slot.id, instance)}$`] } });
      expect(info?.State).toBe('running');
      expect(info?.Labels[POOL_SLOT_LABEL]).toBe(String(slot.id));
      expect(info?.Labels['cloud.blytz.customer']).toBeUndefined();
      expect(info?.HostConfig.NetworkMode).toBe(`blytz-${poolEngineKey(slot.id, instance)}`);
      // Its gateway answers to the slot's own token, which is in its folder's openclaw.json (0600), not its environment.
      const token = (await pools.slotToken(slot.id)) as string;
      const port = info?.Ports.find((p) => p.PublicPort)?.PublicPort as number;
      expect(await runTokenProbe(port, CONFIG_PROBE, token, { timeoutMs: 2000 })).toBe('accepted');
      expect(await runTokenProbe(port, CONFIG_PROBE, 'not-the-token', { timeoutMs: 2000 })).toBe('refused');
      expect(await readFile(join(dataDir, POOL_DIR, poolFolderName(slot.id), 'openclaw.json'), 'utf8')).toContain(token);
      expect(JSON.stringify((await docker.getContainer(info!.Id).inspect()).Config.Env)).not.toContain(token);
    }
    // A converged pool: another pass does nothing.
    const before = (await slotContainers()).map((c) => c.Id).sort();
    expect(await reconciler.reconcile('pools', new AbortController().signal)).toEqual({});
    expect((await slotContainers()).map((c) => c.Id).sort()).toEqual(before);
  });

  it('a slot whose container was removed by hand is retired and replaced; a container and a folder no slot names are removed', async () => {
    const [victim] = await rows();
    const [container] = await docker.listContainers({ all: true, filters: { name: [`^/${poolContainerName(victim!.id, instance)}$`] } });
    await docker.getContainer(container!.Id).remove({ force: true });
    // (Its network too: one left without a container is swept only once ten minutes old.)
    await docker.getNetwork(`blytz-${poolEngineKey(victim!.id, instance)}`).remove();
    // Leftovers of a crash: a slot container and a folder whose rows never were (ids far ahead).
    const strayId = victim!.id + 1000;
    const stray = await resolvePoolSlot({ id: strayId, plan: 'personal', template: TEMPLATE, token: 'stray' }, { workspaces: slots, defaults });
    await slots.write(poolFolderName(strayId), stray.rendered);
    await runtime.create(stray.containerSpec(PORTS.to));
    await slots.write(poolFolderName(strayId + 1), stray.rendered);

    const after = await settle(async () => {
      const r = await rows();
      const live = r.filter((s) => s.state === 'ready');
      const folders = await slotFolders();
      return live.length === 2 && !r.some((s) => s.id === victim!.id) && folders.length === 2 && (await slotContainers()).length === 2
        ? r
        : undefined;
    });
    expect(after.map((s) => s.id)).not.toContain(victim!.id);
    expect(await slotFolders()).toEqual(after.map((s) => poolFolderName(s.id)).sort());
    expect(await poolPorts()).toBe(2);
  });

  it('a claim takes the slot out of the pool: its container renamed for the customer, its folder moved, both idempotent; the pool refills', async () => {
    const name = uniqueName('ada');
    await customers.apply(desiredCustomer(name));
    const [slot] = await rows();
    const claimed = await pools.claim({
      customer: name,
      plan: 'personal',
      template: TEMPLATE,
      fingerprint: slot!.fingerprint,
      specHash: 'spec',
      ownHash: 'own',
    });
    expect(claimed?.slot).toBe(slot!.id);
    const id = await runtime.bindPoolContainer(claimed!.slot, name);
    expect(await runtime.bindPoolContainer(claimed!.slot, name)).toBe(id);
    const folders = new PoolFolders(slots, customerFiles);
    expect(await folders.moveToCustomer(claimed!.slot, name)).toBe('moved');
    expect(await folders.moveToCustomer(claimed!.slot, name)).toBe('done');

    // The customer's now: listed as theirs, no longer in the customers' listing as a pool's.
    const theirs = await runtime.listFor(name);
    expect(theirs.map((c) => [c.id, c.name, c.poolSlot])).toEqual([[id, `blytz-${name}`, claimed!.slot]]);
    expect((await runtime.list()).filter((c) => c.poolSlot !== undefined && c.customer === '')).toEqual([]);
    // Its folder (and the running gateway's files) are at the customer's place.
    expect(await readFile(join(dataDir, 'customers', name, 'openclaw.json'), 'utf8')).toContain(claimed!.slotToken);

    // The pool refills to two ready slots beside the bound one, and keeps its hands off the bound one.
    const refilled = await settle(async () => {
      const r = await rows();
      return r.filter((s) => s.state === 'ready').length === 2 ? r : undefined;
    });
    expect(refilled.find((s) => s.id === claimed!.slot)?.state).toBe('bound');
    expect((await docker.getContainer(id!).inspect()).State.Running).toBe(true);
  });

  /** A binder as the customer controller holds one; `applyTimeoutMs` 0 gives a bind up at its first wait. */
  const binder = (applyTimeoutMs?: number) =>
    new PoolBinder({
      pools,
      runtime,
      folders: new PoolFolders(slots, customerFiles),
      workspaces: customerFiles,
      readiness,
      metrics,
      logger: createLogger({ level: 'silent' }),
      onClaimed: () => {},
      now: Date.now,
      waitMs: 5_000,
      ...(applyTimeoutMs === undefined ? {} : { applyTimeoutMs }),
    });
  /** A new active customer as its reconcile sees it: the view, resolved against the template, no container yet. */
  const newCustomer = async () => {
    const name = uniqueName('bo');
    await customers.apply(desiredCustomer(name, { telegram: { botToken: `7070707070:${'T'.repeat(35)}` } }));
    const view = (await customers.reconcileView(name))!;
    const resolved = await resolveCustomer(view, { store: customers, workspaces: customerFiles, defaults });
    return { name, view, resolved };
  };

  it('a new customer is bound: the slot\'s gateway runs the customer\'s configuration (token, bot) before the bind is applied', async () => {
    await settle(async () => readiness.mayClaim(`${TEMPLATE}/personal`));
    const { name, view, resolved } = await newCustomer();
    const events = new ReconcileEvents();
    const outcome = await binder().bind(view, resolved, [], events, new AbortController().signal);
    expect(outcome).toEqual({ kind: 'bound' });
    expect(events.take().map((e) => e.reason)).toEqual(['PoolSlotClaimed', 'PoolSlotBound']);
    const [container] = await runtime.listFor(name);
    expect(container?.name).toBe(`blytz-${name}`);
    // The customer's token opens the gateway, the slot's no longer does; the bot token is in its config file.
    const token = resolved.gatewayToken as string;
    expect(await runtime.probeToken(container!.hostPort!, CONFIG_PROBE, token)).toBe('accepted');
    expect(await runtime.probeToken(container!.hostPort!, CONFIG_PROBE, view.binding!.slotToken)).toBe('refused');
    expect(await readFile(join(dataDir, 'customers', name, 'openclaw.json'), 'utf8')).toContain('7070707070:');
    // Its reconcile view now carries the applied binding, and the planner sees the customer's own container.
    const after = (await customers.reconcileView(name))!;
    expect(after.binding?.appliedAt).not.toBeNull();
    expect(boundContainers([container!], after.binding)[0]).toMatchObject({ specHash: resolved.desired.specHash, health: 'healthy' });
    // Nothing more to do on the next reconcile.
    expect(await binder().bind(after, resolved, [container!], new ReconcileEvents(), new AbortController().signal)).toEqual({ kind: 'none' });
  });

  it('a gateway that never shows the customer\'s token is given up: the binding records why, and its container is replaced', async () => {
    await settle(async () => readiness.mayClaim(`${TEMPLATE}/personal`));
    const { name, view, resolved } = await newCustomer();
    // A gateway that does not take the new configuration: as if the token it should show were another.
    const stuck = { ...resolved, gatewayToken: 'a-token-the-gateway-never-gets' };
    const pending = await binder().bind(view, stuck, [], new ReconcileEvents(), new AbortController().signal);
    expect(pending).toMatchObject({ kind: 'pending' });
    const events = new ReconcileEvents();
    const failed = await binder(0).bind((await customers.reconcileView(name))!, stuck, [], events, new AbortController().signal);
    expect(failed).toMatchObject({ kind: 'failed' });
    expect(events.take().map((e) => e.reason)).toEqual(['PoolBindFailed']);
    const after = (await customers.reconcileView(name))!;
    expect(after.binding?.failed).toContain('did not take the customer\'s configuration');
    const [container] = await runtime.listFor(name);
    expect(boundContainers([container!], after.binding)[0]?.specHash).toBeUndefined();
  });

  it('size 0 removes every idle slot with its folder, network and host port; a bound slot stays its customer\'s until its container goes', async () => {
    await pools.apply({ plan: 'personal', size: 0, template: TEMPLATE });
    await settle(async () => (await rows()).every((s) => s.state === 'bound') && (await slotFolders()).length === 0);
    expect(readiness.mayClaim(`${TEMPLATE}/personal`)).toBe(false);
    expect(await poolPorts()).toBe(0);
    // Only the bound slots' containers are left, each named for its customer, each with its own network.
    const left = await slotContainers();
    expect(left).toHaveLength(3);
    expect(left.every((c) => /^\/blytz-(ada|bo)-/.test(c.Names[0] ?? ''))).toBe(true);
    const networks = await docker.listNetworks({ filters: { label: [`${INSTANCE_LABEL}=${instance}`] } });
    expect(networks.map((n) => n.Name).sort()).toEqual(left.map((c) => `blytz-${poolEngineKey(Number(c.Labels[POOL_SLOT_LABEL]), instance)}`).sort());

    // The customer's controller replaces a bound container (a crash, a plan change): the row goes with it.
    for (const c of left) await runtime.remove(c.Id);
    await settle(async () => (await rows()).length === 0);
    expect(await docker.listNetworks({ filters: { label: [`${INSTANCE_LABEL}=${instance}`] } })).toEqual([]);
  });
});
