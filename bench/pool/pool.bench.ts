import { networkInterfaces } from 'node:os';
import { sql } from 'kysely';
import { it } from 'vitest';
import { loadSecretKey } from '../../src/data-dir.js';
import { OPENCLAW_IMAGE } from '../../src/domain/openclaw.js';
import { SecretBox } from '../../src/store/secret-box.js';
import { getWithHost } from '../../test/support/http-get.js';
import { docker, instanceContainers, startServe, type Served } from '../../test/support/blytz-serve.js';
import { createTestDatabase, type TestDatabase } from '../../test/support/postgres.js';
import { machineBusySeconds, runId, sleep, summarize } from '../lib.js';
import { report, type Figure } from '../support.js';

/**
 * bench/pool (issue 22, item 1): payment -> ready with a warm pool slot, beside the same with the
 * pool at size 0 (a cold start), both measured in this run on the built `blytz serve`, real
 * Postgres, Docker and Caddy, the pinned OpenClaw image by default (BENCH_POOL_IMAGE to change).
 *
 * Paid -> ready: from the customer's desired state turning `active` (what the paid Stripe webhook
 * writes) to its gateway's `/readyz` answering 200 `{"ready":true}` through Caddy and the
 * customer's subdomain from a remote address. Warm: N customers one after another while the pool
 * of size N was full when the first paid (each claim starts a refill in the background, as in
 * production). Cold: then the pool set to 0, its idle slots gone, N more customers.
 *
 * BENCH_POOL_OWN_KEY=1: every customer brings a model key of their own (Anthropic, sealed into
 * the row as the signup stores it), which the bind renders into the slot's openclaw.json too.
 * Unset: customers without a model, the hot-reload figure.
 */
const N = Number(process.env['BENCH_POOL_N'] ?? 3);
const OWN_KEY = process.env['BENCH_POOL_OWN_KEY'] === '1';
const IMAGE = process.env['BENCH_POOL_IMAGE'] ?? OPENCLAW_IMAGE;
const POLL_MS = 100;
const LIMIT_MS = 900_000;

function remoteClientAddress(): string {
  for (const [name, addresses] of Object.entries(networkInterfaces())) {
    if (name === 'lo' || name.startsWith('docker') || name.startsWith('br-') || name.startsWith('veth')) continue;
    const v4 = addresses?.find((a) => a.family === 'IPv4' && !a.internal);
    if (v4) return v4.address;
  }
  throw new Error('no non-loopback IPv4 address to act as a remote client from');
}

async function until(check: () => Promise<boolean>, what: string): Promise<void> {
  const started = performance.now();
  while (!(await check().catch(() => false))) {
    if (performance.now() - started > LIMIT_MS) throw new Error(`${what} did not happen within ${LIMIT_MS / 1000} s`);
    await sleep(POLL_MS);
  }
}

it('pool: paid -> /readyz through Caddy with a warm slot vs cold; an idle slot\'s memory', { timeout: 3_600_000 }, async () => {
  const run = runId();
  const client = remoteClientAddress();
  const db: TestDatabase = await createTestDatabase();
  const served: Served = await startServe({
    databaseUrl: db.url,
    instance: `bench-pool-${run}`,
    env: { BLYTZ_CUSTOMER_IMAGE: IMAGE, BLYTZ_ROUTE_SWEEP_SECONDS: '10' },
  });
  // The key the server seals customer secrets with (it made one in its data folder).
  const box = new SecretBox(loadSecretKey(served.dataDir, served.env['BLYTZ_SECRET_KEY']));
  const admin = { authorization: `Bearer ${served.adminToken}`, 'content-type': 'application/json' };
  const setPool = async (size: number) => {
    const body = { apiVersion: 'blytz.cloud/v1alpha1', kind: 'Pool', metadata: { name: 'personal' }, spec: { size } };
    const res = await fetch(`${served.url}/apis/blytz.cloud/v1alpha1/pools/personal`, { method: 'PUT', headers: admin, body: JSON.stringify(body) });
    if (!res.ok) throw new Error(`PUT pool: ${res.status} ${await res.text()}`);
  };
  const pool = async () =>
    ((await (await fetch(`${served.url}/apis/blytz.cloud/v1alpha1/pools/personal`, { headers: admin })).json()) as { status: Record<string, number> }).status;
  const idleSlots = async () => (await instanceContainers(served.instance)).filter((c) => c.Names[0]?.startsWith('/blytz-pool_'));

  /** One customer from active to /readyz 200 through Caddy; cancelled and gone again afterwards (memory). */
  const paidToReady = async (name: string): Promise<{ seconds: number; container: string }> => {
    const started = performance.now();
    const provider = OWN_KEY ? 'anthropic' : null;
    const key = OWN_KEY ? box.seal(`sk-ant-bench-${name}`, name) : null;
    await sql`INSERT INTO customers (name, email, display_name, state, instructions, model_provider, model_api_key_enc)
              VALUES (${name}, ${`${name}@example.com`}, 'Bench', 'active', 'I measure things.', ${provider}, ${key})`.execute(db.handle.db);
    await until(async () => {
      const res = await getWithHost(served.caddyListenPort, `${name}.blytz.localhost`, '/readyz', { address: client, timeoutMs: 5000 });
      return res.status === 200 && (JSON.parse(res.body) as { ready?: boolean }).ready === true;
    }, `${name} ready`);
    const seconds = (performance.now() - started) / 1000;
    const [container] = (await instanceContainers(served.instance)).filter((c) => c.Names[0] === `/blytz-${name}`);
    await sql`UPDATE customers SET state = 'cancelled' WHERE name = ${name}`.execute(db.handle.db);
    await until(async () => !(await instanceContainers(served.instance)).some((c) => c.Names[0] === `/blytz-${name}`), `${name} gone`);
    return { seconds, container: container?.Id ?? '' };
  };

  const busyStart = machineBusySeconds();
  const wallStart = performance.now();
  const warm: number[] = [];
  const cold: number[] = [];
  let warmedIn: number | undefined;
  let idleMiB: number | undefined;
  let fromSlot = 0;
  let bindSeconds: number | undefined;
  try {
    const fillStarted = performance.now();
    await setPool(N);
    await until(async () => (await pool()).ready === N, `the pool filled to ${N}`);
    warmedIn = (performance.now() - fillStarted) / 1000;
    const slots = await idleSlots();
    const stats = await docker.getContainer(slots[0]!.Id).stats({ stream: false });
    const inactive = Number((stats.memory_stats.stats as Record<string, number> | undefined)?.['total_inactive_file'] ?? (stats.memory_stats.stats as Record<string, number> | undefined)?.['inactive_file'] ?? 0);
    idleMiB = (stats.memory_stats.usage - inactive) / 2 ** 20;
    const slotIds = new Set(slots.map((c) => c.Id));

    for (let i = 0; i < N; i++) {
      const { seconds, container } = await paidToReady(`pool-warm-${run}-${i}`);
      warm.push(seconds);
      if (slotIds.has(container)) fromSlot++;
    }
    const metrics = await (await fetch(`${served.url}/metrics`)).text();
    const sum = Number(/^blytz_pool_bind_duration_seconds_sum (\S+)$/m.exec(metrics)?.[1]);
    const count = Number(/^blytz_pool_bind_duration_seconds_count (\S+)$/m.exec(metrics)?.[1]);
    bindSeconds = sum / count;

    await setPool(0);
    await until(async () => (await idleSlots()).length === 0, 'the idle slots removed');
    for (let i = 0; i < N; i++) cold.push((await paidToReady(`pool-cold-${run}-${i}`)).seconds);
  } finally {
    await served.stop();
    await db.drop();
  }
  const busy = machineBusySeconds() - busyStart;
  const wall = (performance.now() - wallStart) / 1000;
  const w = summarize(warm);
  const c = summarize(cold);
  const figures: Figure[] = [
    { name: `paid -> /readyz 200 through Caddy, warm slot, p50 of ${N}`, value: w.p50, unit: 's', baseline: { name: 'cold (pool size 0)', value: c.p50 } },
    { name: `paid -> /readyz 200 through Caddy, warm slot, p99 of ${N}`, value: w.p99, unit: 's', baseline: { name: 'cold (pool size 0)', value: c.p99 } },
    { name: 'claim -> customer\'s configuration in force on the slot\'s gateway, mean', value: bindSeconds ?? NaN, unit: 's', note: 'blytz_pool_bind_duration_seconds' },
    { name: 'customers served by a slot that was warm before they paid', value: fromSlot, unit: `of ${N}` },
    { name: 'an idle ready slot\'s memory (cgroup usage less inactive file cache)', value: idleMiB ?? NaN, unit: 'MiB', note: 'size 0 (the default) holds nothing' },
    { name: `pool size set -> ${N} slots ready (one slot warming at a time)`, value: warmedIn ?? NaN, unit: 's' },
  ];
  report(OWN_KEY ? 'pool-own-key' : 'pool', `Warm pools: payment -> ready, warm slot vs cold${OWN_KEY ? ', customers with a model key of their own' : ''}`, figures, {
    method:
      `image ${IMAGE}; ${OWN_KEY ? 'each customer with an Anthropic key of their own (models.providers.anthropic.apiKey); ' : ''}N = ${N} customers one after another per case, each a SQL row turning active (what the paid webhook writes) until its /readyz answers 200 {"ready":true} through Caddy from a remote address, polled every ${POLL_MS} ms, then cancelled. ` +
      `Warm: the pool of size ${N} full when the first paid, refilled in the background after each claim. Cold: the pool at size 0 and its idle slots gone. ` +
      `The machine was ${(busy / wall / 2).toFixed(2)} busy on average (of 2 cores) while it ran: other engineers' suites shared it.`,
  });
});
