import { execFileSync } from 'node:child_process';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../support/postgres.js';
import type { RolloutView } from '../../src/domain/rollout.js';
import { notAnswering, sampleAvailability } from '../support/availability.js';
import { insertCustomersAndWaitUntilReady, phases as customerPhases } from '../support/customers.js';
import { waitFor } from '../support/wait-for.js';
import {
  buildNeverHealthyImage,
  tagStubImage,
  instanceContainers,
  startServe,
  STUB_IMAGE,
  throughCaddy,
  operatorCli,
  withServerLog,
  type Served,
  ROLLOUT_START_TIMEOUT_SECONDS,
} from '../support/blytz-serve.js';

/**
 * The blueGreen update strategy on a real Docker engine and a real Caddy, driven by the built
 * `blytz serve` on real Postgres. Customers use the `web-assistant` template (updateStrategy
 * blueGreen). The fleet change is a new BLYTZ_CUSTOMER_IMAGE and a restart of the server, paced
 * by the rollout gate. A sampler asks every customer's host through Caddy every 100 ms: with
 * blue-green nobody may miss a single request, neither while switching to a good image nor while
 * a broken image fails and is given up.
 */

const N = 6;
const LIMIT = 2;

describe('blueGreen updates end to end (real Docker and Caddy)', () => {
  let db: TestDatabase;
  let served: Served;
  const prefix = `bg${Math.random().toString(36).slice(2, 6)}`;
  const V2 = `blytz/assistant-stub:bluegreen-v2-${prefix}`;
  const BROKEN = `blytz/assistant-stub:bluegreen-broken-${prefix}`;
  const names = Array.from({ length: N }, (_, i) => `${prefix}-${String(i).padStart(2, '0')}`);
  const host = (name: string) => `${name}.blytz.localhost`;

  beforeAll(async () => {
    tagStubImage(V2);
    buildNeverHealthyImage(BROKEN);
    db = await createTestDatabase();
    served = await startServe({
      databaseUrl: db.url,
      env: {
        BLYTZ_ROLLOUT_START_TIMEOUT_SECONDS: ROLLOUT_START_TIMEOUT_SECONDS,
        BLYTZ_ROLLOUT_MAX_UNAVAILABLE: String(LIMIT),
      },
    });
  });
  afterAll(async () => {
    await served?.stop();
    await db?.drop();
    for (const image of [V2, BROKEN]) execFileSync('docker', ['rmi', '-f', image], { stdio: 'ignore' });
  });

  const cli = (...args: string[]) => operatorCli(served, ...args);
  const rollouts = async () => JSON.parse(await cli('rollout', 'status', '-o', 'json')) as RolloutView[];
  /** Every container of this instance by customer (more than one while a switch is in flight). */
  const containers = async () => {
    const byCustomer = new Map<string, Awaited<ReturnType<typeof instanceContainers>>>();
    for (const c of await instanceContainers(served.instance)) {
      const name = c.Labels['cloud.blytz.customer'] as string;
      byCustomer.set(name, [...(byCustomer.get(name) ?? []), c]);
    }
    return byCustomer;
  };
  const reservations = async () => {
    const r = await sql<{
      customer: string;
      port: number;
      slot: string;
    }>`SELECT customer, port, slot FROM port_reservations`.execute(db.handle.db);
    return r.rows;
  };
  const phases = () => customerPhases(db.handle.db);
  const withLog = (error: unknown) => withServerLog(served, error);

  /** Which customers' hosts do not answer 200 through Caddy, every 100 ms. */
  const startSampler = () => sampleAvailability(names, (name) => notAnswering(served.caddyListenPort, host(name)));

  /** One container per customer, named blytz-<name>, on the customer's only port reservation. */
  async function expectSettled(image: string) {
    const all = await containers();
    const ports = await reservations();
    for (const name of names) {
      const list = all.get(name) ?? [];
      expect(
        list.map((c) => c.Names[0]),
        name,
      ).toEqual([`/blytz-${name}`]);
      expect(list[0]?.Image, name).toBe(image);
      expect(list[0]?.State, name).toBe('running');
      const mine = ports.filter((p) => p.customer === name);
      expect(mine, name).toEqual([{ customer: name, port: Number(list[0]?.Labels['cloud.blytz.host-port']), slot: 'current' }]);
    }
  }

  it(`${N} web-assistant customers become Ready`, async () => {
    await insertCustomersAndWaitUntilReady(db.handle.db, names, { template: 'web-assistant', timeoutMs: 180_000, explain: withLog });
    for (const name of names) expect((await throughCaddy(served, host(name), '/AGENTS.md')).status, name).toBe(200);
    await expectSettled(STUB_IMAGE);
  }, 240_000);

  it('a new image goes out blue-green, the controller SIGKILLed mid-switch: no request fails, each ends on the new image with one container and one port', async () => {
    const sampler = startSampler();
    const before = await containers();
    served.env['BLYTZ_CUSTOMER_IMAGE'] = V2;
    await served.stopProcess();
    await served.restart();
    // The new containers run beside the old ones on a second port; kill the controller while
    // such a switch is in flight.
    await waitFor(async () => {
      const twoUp = [...(await containers()).values()].some((l) => l.length === 2);
      return twoUp && (await reservations()).some((r) => r.slot === 'next');
    }, 120_000).catch((e: unknown) => {
      throw withLog(e);
    });
    await served.stopProcess({ kill: true });
    await served.restart();
    await waitFor(async () => {
      const all = await containers();
      const [r] = await rollouts();
      return (
        r?.state === 'complete' && r.counts.done === N && [...all.values()].every((l) => l.length === 1 && l[0]?.Image === V2)
      );
    }, 240_000).catch((e: unknown) => {
      throw withLog(e);
    });
    await waitFor(async () => [...(await phases()).values()].every((p) => p === 'Ready'), 60_000);
    const sampled = await sampler.stop();

    await expectSettled(V2);
    const after = await containers();
    for (const name of names) expect(after.get(name)?.[0]?.Id, name).not.toBe(before.get(name)?.[0]?.Id);
    expect(sampled.length).toBeGreaterThan(20);
    const failures = sampled.filter((s) => s.down.length > 0);
    expect(failures, `requests failed during the switch: ${JSON.stringify(failures.slice(0, 5))}`).toEqual([]);
    const events = await sql<{ reason: string }>`SELECT reason FROM customer_events WHERE customer = ${names[0]!}`.execute(
      db.handle.db,
    );
    expect(events.rows.map((e) => e.reason)).toEqual(expect.arrayContaining(['UpdateSwitched', 'RolloutUpdated']));
    console.log(`[blue-green e2e] ${sampled.length} samples of ${N} customers during the switch, none failed`);
  }, 360_000);

  it('an image that never becomes healthy: the old containers serve throughout, the new ones are removed, the rollout pauses', async () => {
    const sampler = startSampler();
    const before = await containers();
    served.env['BLYTZ_CUSTOMER_IMAGE'] = BROKEN;
    await served.stopProcess();
    await served.restart();
    const settled = await waitFor(async () => {
      const [r] = await rollouts();
      const failed = r?.customers.filter((c) => c.state === 'failed') ?? [];
      const busy = r?.customers.filter((c) => c.state === 'rollingBack' || c.state === 'updating') ?? [];
      return r?.target.image === BROKEN && r.state === 'paused' && failed.length > 0 && busy.length === 0 ? r : undefined;
    }, 240_000).catch((e: unknown) => {
      throw withLog(e);
    });
    expect(settled.pausedReason).toBe('Failures');
    // The given-up containers and their next ports go.
    await waitFor(async () => {
      const all = await containers();
      return [...all.values()].every((l) => l.length === 1) && (await reservations()).every((r) => r.slot === 'current');
    }, 60_000).catch((e: unknown) => {
      throw withLog(e);
    });
    await waitFor(async () => [...(await phases()).values()].every((p) => p === 'Ready'), 60_000);
    const sampled = await sampler.stop();

    await expectSettled(V2);
    const after = await containers();
    // Blue-green never stopped the old containers: every customer still runs the very same one.
    for (const name of names) expect(after.get(name)?.[0]?.Id, name).toBe(before.get(name)?.[0]?.Id);
    const failures = sampled.filter((s) => s.down.length > 0);
    expect(failures, `requests failed: ${JSON.stringify(failures.slice(0, 5))}`).toEqual([]);
    const failed = settled.customers.filter((c) => c.state === 'failed').map((c) => c.customer);
    const events = await sql<{ reason: string }>`SELECT reason FROM customer_events WHERE customer = ${failed[0]!}`.execute(
      db.handle.db,
    );
    expect(events.rows.map((e) => e.reason)).toEqual(expect.arrayContaining(['RolloutFailed', 'RolledBack']));
  }, 400_000);
});
