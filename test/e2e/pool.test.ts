import { execFile, execFileSync } from 'node:child_process';
import { readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { baseEnv, BLYTZ, docker, instanceContainers, operatorCli, ROOT, throughCaddy, withServerLog, type Served } from '../support/blytz-serve.js';
import { startSellingServe, type SellingServe } from '../support/selling-serve.js';
import { completedSessionObject, signatureHeader, stripeEvent, type FakeStripe } from '../support/fake-stripe.js';
import { waitFor } from '../support/wait-for.js';

const WEBHOOK_SECRET = 'whsec_e2e_warm_pool_0123456789';
const BOT_TOKEN = `4343434343:${'C'.repeat(35)}`;
/**
 * The stand-in image built from this tree (scripts/build-test-image.sh; rebuilt only when its
 * inputs change): its /readyz shows OpenClaw's details to the holder of the gateway token in
 * force, which is how the controller sees a slot take a customer's configuration.
 */
const POOL_STUB = 'blytz/assistant-stub:pool';
const run = promisify(execFile);

interface PoolView {
  metadata: { name: string; generation: number };
  spec: { size: number; template: string };
  status: { ready: number; warming: number; bound: number; retiring: number };
}

/**
 * Warm pools through the built `blytz serve` on real Postgres, Docker and Caddy: a pool size set
 * with `blytz apply` warms slots, `blytz get pool` shows them, a customer who pays is bound to a
 * ready slot (its already-running container serves them, renamed and reconfigured), the pool
 * refills in the background, and size 0 removes every idle slot.
 */
describe('warm pools end to end', () => {
  let stripe: FakeStripe;
  let served: Served;
  let world: SellingServe;

  beforeAll(async () => {
    execFileSync(join(ROOT, 'scripts/build-test-image.sh'), [POOL_STUB], { cwd: ROOT, stdio: 'ignore' });
    world = await startSellingServe(WEBHOOK_SECRET, { BLYTZ_CUSTOMER_IMAGE: POOL_STUB });
    ({ stripe, served } = world);
  });
  afterAll(async () => {
    await world?.close();
  });

  const cli = (...args: string[]) => operatorCli(served, ...args);
  /** `blytz ARGS` with its exit code, for the runs expected to fail. */
  const blytz = async (...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> => {
    try {
      return { code: 0, ...(await run(BLYTZ, [...args, '--server', served.url], { cwd: ROOT, env: { ...baseEnv(), BLYTZ_ADMIN_TOKEN: served.adminToken } })) };
    } catch (error) {
      const failed = error as { code: number; stdout: string; stderr: string };
      return { code: failed.code, stdout: failed.stdout, stderr: failed.stderr };
    }
  };
  const pool = async () => JSON.parse(await cli('get', 'pool', 'personal', '-o', 'json')) as PoolView;
  const applyPool = async (size: number) => {
    const file = join(served.dataDir, `pool-${size}.yaml`);
    writeFileSync(file, `apiVersion: blytz.cloud/v1alpha1\nkind: Pool\nmetadata:\n  name: personal\nspec:\n  size: ${size}\n`);
    return cli('apply', '-f', file);
  };
  /** Containers made as pool slots (bound to a customer or not), by id. */
  const slotContainers = async () =>
    (await instanceContainers(served.instance)).filter((c) => c.Labels['cloud.blytz.pool-slot'] !== undefined);
  const idleSlotContainers = async () => (await slotContainers()).filter((c) => c.Names[0]?.startsWith('/blytz-pool_'));
  const waitLogged = <T>(check: () => Promise<T>, ms: number) =>
    waitFor(check, ms).catch((error: unknown) => {
      throw withServerLog(served, error);
    });

  async function deliver(event: Record<string, unknown>): Promise<number> {
    const payload = JSON.stringify(event);
    const res = await fetch(`${served.url}/api/webhooks/stripe`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'stripe-signature': signatureHeader(payload, WEBHOOK_SECRET) },
      body: payload,
    });
    return res.status;
  }

  let warmIds: string[] = [];

  it('a pool size set with `blytz apply` warms that many slots, shown by `blytz get pool`', async () => {
    // Size 0 (never set) costs nothing: no slot, no container.
    expect((await pool()).spec.size).toBe(0);
    expect(await slotContainers()).toEqual([]);

    expect(await applyPool(2)).toContain('pool/personal created');
    const ready = await waitLogged(async () => {
      const p = await pool();
      return p.status.ready === 2 ? p : undefined;
    }, 60_000);
    expect(ready.status).toMatchObject({ ready: 2, warming: 0, bound: 0 });
    const table = await cli('get', 'pools');
    expect(table).toMatch(/^PLAN\s+DESIRED\s+READY\s+WARMING\s+BOUND/);
    expect(table).toMatch(/\npersonal\s+2\s+2\s+0\s+0\n/);
    expect(table).toMatch(/\npro\s+0\s+0\s+0\s+0\n/);

    const idle = await idleSlotContainers();
    expect(idle.map((c) => c.State)).toEqual(['running', 'running']);
    // No slot belongs to a customer: labelled with its slot, never with a customer.
    expect(idle.every((c) => c.Labels['cloud.blytz.customer'] === undefined)).toBe(true);
    warmIds = idle.map((c) => c.Id);
    expect(await applyPool(2)).toContain('pool/personal unchanged');
  });

  it('diff shows a pool\'s size change and exits 1; a pool of no plan or too large a size is refused, naming the field', async () => {
    const file = join(served.dataDir, 'pool-diff.yaml');
    writeFileSync(file, 'apiVersion: blytz.cloud/v1alpha1\nkind: Pool\nmetadata:\n  name: personal\nspec:\n  size: 3\n');
    const diff = await blytz('diff', '-f', file);
    expect(diff.code).toBe(1);
    expect(diff.stdout).toContain('-size: 2');
    expect(diff.stdout).toContain('+size: 3');
    writeFileSync(file, 'apiVersion: blytz.cloud/v1alpha1\nkind: Pool\nmetadata:\n  name: gold\nspec:\n  size: 99\n');
    const bad = await blytz('apply', '-f', file);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toContain('metadata.name: must be a plan');
    expect(bad.stderr).toContain('spec.size: must be at most 20');
    const unknown = await blytz('get', 'pool', 'gold');
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toContain('pool "gold" not found');
    expect((await pool()).spec.size).toBe(2);
  });

  it('a customer who pays is bound to a ready slot, which serves them; the pool refills', async () => {
    const signup = await fetch(`${served.url}/api/signup`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      // A model key of the customer's own: this server runs no model gateway (included access is not offered).
      body: JSON.stringify({
        email: `pool-${Date.now()}@example.com`,
        name: 'Lin',
        instructions: 'I run a bakery.\n- order flour on Mondays',
        telegramBotToken: BOT_TOKEN,
        modelProvider: 'anthropic',
        modelApiKey: 'sk-ant-lin-own-key',
      }),
    });
    expect(signup.status).toBe(201);
    const { customerId: name } = (await signup.json()) as { customerId: string };
    const session = [...stripe.sessions.values()].find((s) => s.client_reference_id === name);
    expect(await deliver(stripeEvent('checkout.session.completed', completedSessionObject(session!)))).toBe(200);

    const host = `${name}.blytz.localhost`;
    const page = await waitLogged(async () => {
      const res = await throughCaddy(served, host, '/AGENTS.md');
      return res.status === 200 ? res.body : undefined;
    }, 60_000);
    expect(page).toContain('order flour on Mondays');
    await waitLogged(async () => (await cli('get', 'customer', name)).includes('Ready'), 30_000);

    // Its container is one that was already running before the payment: a warm slot, renamed.
    const [container] = (await instanceContainers(served.instance)).filter((c) => c.Names[0] === `/blytz-${name}`);
    expect(warmIds).toContain(container?.Id);
    const described = await cli('describe', 'customer', name);
    expect(described).toContain('PoolSlotClaimed');
    expect(described).toContain('PoolSlotBound');
    // Its state folder is the customer's now, with the customer's configuration in it.
    expect(readdirSync(join(served.dataDir, 'customers'))).toContain(name);
    const inspect = await docker.getContainer(container!.Id).inspect();
    expect(JSON.stringify(inspect)).not.toContain(BOT_TOKEN);

    // The pool refills: two ready again, beside the one now bound.
    const refilled = await waitLogged(async () => {
      const p = await pool();
      return p.status.ready === 2 && p.status.bound === 1 ? p : undefined;
    }, 60_000);
    expect(refilled.status.warming).toBe(0);
    const idle = await idleSlotContainers();
    expect(idle).toHaveLength(2);
    expect(idle.filter((c) => !warmIds.includes(c.Id))).toHaveLength(1);

    // The slot gauges are published at the end of the pool's pass, a moment after its rows change.
    const metrics = await waitLogged(async () => {
      const text = await (await fetch(`${served.url}/metrics`)).text();
      return text.includes('blytz_pool_slots{plan="personal",state="ready"} 2') ? text : undefined;
    }, 30_000);
    expect(metrics).toContain('blytz_assistant_starts_total{plan="personal",source="pool"} 1');
    expect(metrics).toContain('blytz_pool_slots{plan="personal",state="ready"} 2');
    expect(metrics).toMatch(/blytz_pool_bind_duration_seconds_count 1\n/);
  });

  it('size 0 removes every idle slot, its folder and its network; the bound customer keeps serving', async () => {
    expect(await applyPool(0)).toContain('pool/personal configured');
    // A slot goes in steps (its container, its network, its folder, then its row): the containers
    // are gone a moment before the rest, so wait for the end of the last step.
    const slotNetworks = () =>
      docker.listNetworks({ filters: { label: [`cloud.blytz.instance=${served.instance}`, 'cloud.blytz.pool-slot'] } });
    await waitLogged(async () => {
      if ((await idleSlotContainers()).length > 0) return false;
      const { ready, warming, retiring } = (await pool()).status;
      return ready + warming + retiring === 0;
    }, 60_000);
    const p = await pool();
    expect(p.status).toMatchObject({ ready: 0, warming: 0, retiring: 0 });
    expect(readdirSync(join(served.dataDir, 'pool')).filter((f) => f.startsWith('slot-'))).toEqual([]);
    const networks = await slotNetworks();
    // Only the bound customer's slot network is left (it goes with its container).
    expect(networks).toHaveLength(1);
    const customers = (await instanceContainers(served.instance)).filter((c) => c.State === 'running');
    expect(customers).toHaveLength(1);
  });
});
