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
 * Health-gated fleet rollouts on a real Docker engine and a real Caddy, driven by the built
 * `blytz serve` on real Postgres. The fleet change is the one an operator makes: a new
 * BLYTZ_CUSTOMER_IMAGE and a restart of the server. A sampler asks every customer's host through
 * Caddy every 100 ms and records who does not answer.
 */

const N = 20; // customers; the default BLYTZ_ROLLOUT_MAX_UNAVAILABLE=10% lets 2 update at a time
const LIMIT = 2;
const MAX_FAILURES = 2; // the default
const V2 = 'blytz/assistant-stub:rollout-v2';
const BROKEN = 'blytz/assistant-stub:rollout-broken';


describe('fleet rollouts end to end (real Docker and Caddy)', () => {
  let db: TestDatabase;
  let served: Served;
  const prefix = `ro${Math.random().toString(36).slice(2, 6)}`;
  const names = Array.from({ length: N }, (_, i) => `${prefix}-${String(i).padStart(2, '0')}`);
  const host = (name: string) => `${name}.blytz.localhost`;

  beforeAll(async () => {
    // A second image (same content, another name: a new spec hash) and one that never listens.
    tagStubImage(V2);
    buildNeverHealthyImage(BROKEN);
    db = await createTestDatabase();
    served = await startServe({
      databaseUrl: db.url,
      env: { BLYTZ_ROLLOUT_START_TIMEOUT_SECONDS: ROLLOUT_START_TIMEOUT_SECONDS },
    });
  });
  afterAll(async () => {
    await served?.stop();
    await db?.drop();
  });

  const cli = (...args: string[]) => operatorCli(served, ...args);
  const rollouts = async () => JSON.parse(await cli('rollout', 'status', '-o', 'json')) as RolloutView[];
  const containers = async () => {
    const list = await instanceContainers(served.instance);
    return new Map(list.map((c) => [c.Labels['cloud.blytz.customer'] as string, c]));
  };
  const phases = () => customerPhases(db.handle.db);
  const withLog = (error: unknown) => withServerLog(served, error);

  /** Which customers' hosts do not answer 200 through Caddy, every 100 ms. */
  const startSampler = () => sampleAvailability(names, (name) => notAnswering(served.caddyListenPort, host(name)));

  it(`${N} customers become Ready`, async () => {
    await insertCustomersAndWaitUntilReady(db.handle.db, names, { timeoutMs: 240_000, explain: withLog });
    for (const name of names) expect((await throughCaddy(served, host(name), '/AGENTS.md')).status, name).toBe(200);
  }, 300_000);

  it('a new image rolls out in waves; pause holds it, a customer change still applies; a killed controller resumes', async () => {
    const sampler = startSampler();
    const original = await containers();
    served.env['BLYTZ_CUSTOMER_IMAGE'] = V2;
    await served.stopProcess();
    await served.restart();
    const onV2 = async () =>
      [...(await containers()).entries()].filter(([, c]) => c.Image === V2 && c.State === 'running').map(([n]) => n);

    // Pause after a few: nobody else starts; those in flight finish.
    await waitFor(async () => (await onV2()).length >= 3, 120_000).catch((e: unknown) => {
      throw withLog(e);
    });
    expect(await cli('rollout', 'pause')).toMatch(/1 rollout\(s\) paused/);
    await waitFor(async () => (await rollouts())[0]?.counts.inProgress === 0, 60_000);
    const paused = (await rollouts())[0]!;
    expect(paused.state).toBe('paused');
    expect(paused.pausedReason).toBe('Operator');
    const status = await cli('rollout', 'status');
    expect(status).toMatch(/state: +paused: Operator/);
    expect(status).toContain(`image ${V2}`);

    // A held customer's own instruction change is applied at once, on its current container.
    const waiting = paused.customers.find((c) => c.state === 'waiting')!.customer;
    const heldBefore = (await containers()).get(waiting)!;
    expect(heldBefore.Image).toBe(STUB_IMAGE);
    await sql`UPDATE customers SET instructions = ${'I now run a bakery.\n- order flour'} WHERE name = ${waiting}`.execute(
      db.handle.db,
    );
    await waitFor(async () => (await throughCaddy(served, host(waiting), '/AGENTS.md')).body.includes('order flour'), 30_000);
    expect((await containers()).get(waiting)?.Id).toBe(heldBefore.Id);
    const onV2WhilePaused = (await onV2()).length;
    expect(onV2WhilePaused).toBe(paused.counts.done);

    expect(await cli('rollout', 'resume')).toMatch(/1 rollout\(s\) resumed/);
    // Kill the controller mid-rollout: the restarted one goes on where it was.
    await waitFor(async () => (await onV2()).length >= 10, 120_000).catch((e: unknown) => {
      throw withLog(e);
    });
    const beforeKill = await rollouts();
    const doneBeforeKill = beforeKill[0]!.customers.filter((c) => c.state === 'done').map((c) => c.customer);
    const idsBeforeKill = await containers();
    await served.stopProcess({ kill: true });
    await served.restart();

    await waitFor(async () => {
      const [r] = await rollouts();
      return r?.state === 'complete' && r.counts.done === N;
    }, 240_000).catch((e: unknown) => {
      throw withLog(e);
    });
    await waitFor(async () => [...(await phases()).values()].every((p) => p === 'Ready'), 60_000);
    const sampled = await sampler.stop();
    const samples = sampled.map((s) => s.down);
    const period = (sampled.at(-1)!.at - sampled[0]!.at) / Math.max(1, sampled.length - 1);

    const after = await containers();
    for (const name of names) {
      expect(after.get(name)?.Image, name).toBe(V2);
      expect(after.get(name)?.Id, name).not.toBe(original.get(name)?.Id);
      expect((await throughCaddy(served, host(name), '/AGENTS.md')).status, name).toBe(200);
    }
    // The restarted controller did not redo what was done before it was killed.
    for (const name of doneBeforeKill) expect(after.get(name)?.Id, `${name} recreated twice`).toBe(idsBeforeKill.get(name)?.Id);
    // Never more than the limit down at once; each customer down at most in one stretch (its own recreate).
    expect(samples.length).toBeGreaterThan(50);
    const peak = Math.max(...samples.map((s) => s.length));
    expect(peak).toBeLessThanOrEqual(LIMIT);
    for (const name of names) {
      const down = samples.map((s) => s.includes(name));
      const stretches = down.filter((d, i) => d && !down[i - 1]).length;
      expect(stretches, `${name} was down ${stretches} separate times`).toBeLessThanOrEqual(1);
    }
    console.log(
      `[rollout e2e] ${samples.length} samples (one per ${Math.round(period)} ms), at most ${peak} of ${N} customers down at once (limit ${LIMIT})`,
    );
  }, 600_000);

  it('an image that never becomes healthy pauses the rollout; failed customers are back on the old image, the rest untouched', async () => {
    const before = await containers();
    served.env['BLYTZ_CUSTOMER_IMAGE'] = BROKEN;
    await served.stopProcess();
    await served.restart();
    const settled = await waitFor(async () => {
      const [r] = await rollouts();
      const rolledBack = r?.customers.filter((c) => c.state === 'failed') ?? [];
      const rollingBack = r?.customers.filter((c) => c.state === 'rollingBack' || c.state === 'updating') ?? [];
      return r?.target.image === BROKEN && r.state === 'paused' && rolledBack.length > 0 && rollingBack.length === 0
        ? r
        : undefined;
    }, 240_000).catch((e: unknown) => {
      throw withLog(e);
    });
    expect(settled.pausedReason).toBe('Failures');
    const failed = settled.customers.filter((c) => c.state === 'failed').map((c) => c.customer);
    expect(failed.length).toBeGreaterThan(MAX_FAILURES);
    expect(failed.length).toBeLessThanOrEqual(MAX_FAILURES + LIMIT);
    await waitFor(async () => {
      const p = await phases();
      return failed.every((n) => p.get(n) === 'Ready');
    }, 60_000);
    const now = await containers();
    for (const name of names) {
      const c = now.get(name)!;
      expect(c.Image, name).toBe(V2);
      expect((await throughCaddy(served, host(name), '/AGENTS.md')).status, name).toBe(200);
      if (failed.includes(name)) expect(c.Id, `${name} was rolled back onto a new container`).not.toBe(before.get(name)?.Id);
      else expect(c.Id, `${name} was never touched`).toBe(before.get(name)?.Id);
    }
    expect(await cli('rollout', 'status')).toMatch(/state: +paused: Failures/);
    const metrics = await (await fetch(`${served.url}/metrics`)).text();
    expect(metrics).toMatch(/blytz_rollout_paused\{reason="failures"\} 1/);
    const events = await sql<{ reason: string }>`SELECT reason FROM customer_events WHERE customer = ${failed[0]!}`.execute(
      db.handle.db,
    );
    expect(events.rows.map((e) => e.reason)).toEqual(expect.arrayContaining(['RolloutFailed', 'RolledBack']));
  }, 400_000);
});
