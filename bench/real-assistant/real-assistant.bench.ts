import { execFileSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { sql } from 'kysely';
import { it } from 'vitest';
import { HOST_RESERVE_BYTES } from '../../src/domain/capacity.js';
import { PLANS } from '../../src/domain/customer.js';
import { OPENCLAW_IMAGE } from '../../src/domain/openclaw.js';
import { PROBE_CLIENT_ADDRESS } from '../../src/domain/probes.js';
import { getWithHost } from '../../test/support/http-get.js';
import { docker, instanceContainers, startServe, type Served } from '../../test/support/blytz-serve.js';
import { createTestDatabase, type TestDatabase } from '../../test/support/postgres.js';
import { remoteClientAddress } from '../../test/support/remote-client.js';
import { BENCH_LABEL, BENCH_PORTS, freeHostPort, machineBusySeconds, runId, sleep, summarize } from '../lib.js';
import { report, type Figure } from '../support.js';

/**
 * bench/real-assistant (issue 18): the real OpenClaw gateway (the pinned image), driven by the
 * built `blytz serve` on real Postgres, Docker and Caddy.
 *
 * - Paid -> ready: from the customer's desired state turning `active` (what the paid Stripe
 *   webhook writes) to its gateway's `/readyz` answering 200 `{"ready":true}` through Caddy and
 *   the customer's subdomain. The floor, measured in the same run and interleaved: a bare
 *   `docker run` of the same image with the same limits, mounts and a valid config, to its first
 *   `/healthz` 200 on the published port (no controller, no proxy).
 * - Memory and idle CPU per customer: the cgroup's memory and CPU of a Ready gateway at rest.
 * - How many customers fit this host, per plan: at the plan's memory limit, and at the measured
 *   resident memory.
 */
const N = Number(process.env['BENCH_REAL_N'] ?? 3);
const POLL_MS = 100;
const IDLE_SECONDS = 30;

function cgroupMemory(id: string): { usage: number; rss: number } {
  const dir = `/sys/fs/cgroup/memory/docker/${id}`;
  const usage = Number(readFileSync(join(dir, 'memory.usage_in_bytes'), 'utf8'));
  const rss = Number(/^total_rss (\d+)$/m.exec(readFileSync(join(dir, 'memory.stat'), 'utf8'))?.[1] ?? NaN);
  return { usage, rss };
}

function cgroupCpuSeconds(id: string): number {
  return Number(readFileSync(`/sys/fs/cgroup/cpuacct/docker/${id}/cpuacct.usage`, 'utf8')) / 1e9;
}

/** A bare `docker run` of the image: the customer's limits and mounts, a minimal valid config. */
async function floorStart(run: string, index: number): Promise<number> {
  const dir = mkdtempSync(join(tmpdir(), 'blytz-bench-real-'));
  mkdirSync(join(dir, 'workspace'));
  writeFileSync(
    join(dir, 'openclaw.json'),
    JSON.stringify({
      gateway: { mode: 'local', port: 18789, bind: 'lan', auth: { mode: 'token', token: `floor-${run}-${index}-token` }, trustedProxies: ['172.17.0.1'] },
      agents: { defaults: { workspace: '/home/node/.openclaw/workspace' } },
    }),
  );
  execFileSync('chown', ['-R', '1000:1000', dir]);
  chmodSync(dir, 0o700);
  const port = await freeHostPort(BENCH_PORTS.realFloor);
  const plan = PLANS.personal;
  const started = performance.now();
  const container = await docker.createContainer({
    name: `bench-real-floor-${run}-${index}`,
    Image: OPENCLAW_IMAGE,
    User: '1000:1000',
    Labels: { [BENCH_LABEL]: run },
    Env: [`NODE_OPTIONS=--max-old-space-size=${plan.nodeHeapMiB}`],
    ExposedPorts: { '18789/tcp': {} },
    HostConfig: {
      Mounts: [{ Type: 'bind', Source: dir, Target: '/home/node/.openclaw', ReadOnly: false }],
      PortBindings: { '18789/tcp': [{ HostIp: '127.0.0.1', HostPort: String(port) }] },
      Memory: plan.memoryBytes,
      NanoCpus: plan.nanoCpus,
      ReadonlyRootfs: true,
      Tmpfs: { '/tmp': 'rw,uid=1000,gid=1000', '/home/node/.cache': 'rw,uid=1000,gid=1000' },
      Init: true,
    },
  });
  await container.start();
  try {
    for (;;) {
      const res = await fetch(`http://127.0.0.1:${port}/healthz`, { headers: { 'x-forwarded-for': PROBE_CLIENT_ADDRESS } }).catch(() => undefined);
      if (res?.status === 200 && ((await res.json()) as { ok?: boolean }).ok === true) return (performance.now() - started) / 1000;
      if (performance.now() - started > 600_000) throw new Error('the bare gateway did not answer /healthz within 600 s');
      await sleep(POLL_MS);
    }
  } finally {
    await container.remove({ force: true });
    rmSync(dir, { recursive: true, force: true });
  }
}

it('real assistant: active -> /readyz through Caddy vs a bare docker run to /healthz; memory, idle CPU, fit', { timeout: 3_600_000 }, async () => {
  const run = runId();
  const client = remoteClientAddress();
  const db: TestDatabase = await createTestDatabase();
  const served: Served = await startServe({
    databaseUrl: db.url,
    instance: `bench-real-${run}`,
    env: { BLYTZ_CUSTOMER_IMAGE: OPENCLAW_IMAGE, BLYTZ_ROUTE_SWEEP_SECONDS: '10' },
  });
  const busyStart = machineBusySeconds();
  const wallStart = performance.now();
  const blytz: number[] = [];
  const floor: number[] = [];
  let memory: { usage: number; rss: number } | undefined;
  let idleCpu: number | undefined;
  try {
    for (let i = 0; i < N; i++) {
      floor.push(await floorStart(run, i));
      const name = `real-${run}-${i}`;
      const host = `${name}.blytz.localhost`;
      const started = performance.now();
      await sql`INSERT INTO customers (name, email, display_name, state, instructions)
                VALUES (${name}, ${`${name}@example.com`}, 'Bench', 'active', 'I measure things.')`.execute(db.handle.db);
      for (;;) {
        const res = await getWithHost(served.caddyListenPort, host, '/readyz', { address: client, timeoutMs: 5000 }).catch(() => undefined);
        if (res?.status === 200 && (JSON.parse(res.body) as { ready?: boolean }).ready === true) break;
        if (performance.now() - started > 600_000) throw new Error(`${name} was not ready within 600 s`);
        await sleep(POLL_MS);
      }
      blytz.push((performance.now() - started) / 1000);
      if (i === N - 1) {
        // At rest: memory after the start settles, CPU over a quiet window.
        const [container] = await instanceContainers(served.instance, name);
        await sleep(10_000);
        const cpu0 = cgroupCpuSeconds(container!.Id);
        await sleep(IDLE_SECONDS * 1000);
        idleCpu = ((cgroupCpuSeconds(container!.Id) - cpu0) / IDLE_SECONDS) * 100;
        memory = cgroupMemory(container!.Id);
      }
      await sql`UPDATE customers SET state = 'cancelled' WHERE name = ${name}`.execute(db.handle.db);
      await waitGone(served, name);
    }
  } finally {
    await served.stop();
    await db.drop();
  }
  const busy = machineBusySeconds() - busyStart;
  const wall = (performance.now() - wallStart) / 1000;
  const b = summarize(blytz);
  const f = summarize(floor);
  const usable = totalmem() - HOST_RESERVE_BYTES;
  const figures: Figure[] = [
    { name: `active -> /readyz 200 through Caddy, p50 of ${N}`, value: b.p50, unit: 's', baseline: { name: 'bare docker run -> /healthz', value: f.p50 } },
    { name: `active -> /readyz 200 through Caddy, p99 of ${N}`, value: b.p99, unit: 's', baseline: { name: 'bare docker run -> /healthz', value: f.p99 } },
    { name: 'gateway memory at rest (cgroup usage)', value: (memory?.usage ?? NaN) / 2 ** 20, unit: 'MiB', baseline: { name: 'personal plan limit', value: PLANS.personal.memoryBytes / 2 ** 20 } },
    { name: 'gateway resident memory at rest (cgroup rss)', value: (memory?.rss ?? NaN) / 2 ** 20, unit: 'MiB' },
    { name: `gateway CPU at rest (${IDLE_SECONDS} s window)`, value: idleCpu ?? NaN, unit: '% of a core' },
  ];
  for (const [plan, resources] of Object.entries(PLANS)) {
    figures.push({
      name: `customers that fit this host on ${plan}, at the plan's memory limit`,
      value: Math.floor(usable / resources.memoryBytes),
      unit: 'customers',
      note: `${(totalmem() / 2 ** 30).toFixed(1)} GiB host, ${HOST_RESERVE_BYTES / 2 ** 30} GiB kept for the system`,
    });
  }
  if (memory) {
    figures.push({
      name: 'customers that fit this host at the measured memory at rest (any plan: the gateway is the same)',
      value: Math.floor(usable / memory.usage),
      unit: 'customers',
      note: 'over-committed: a CLI command beside the gateway (a pairing approval) adds about 0.3 to 0.4 GiB while it runs',
    });
  }
  report('real-assistant', 'The real assistant (OpenClaw gateway, pinned image)', figures, {
    method:
      `N = ${N} customers one after another, each a SQL row turning active (what the paid webhook writes) until its /readyz answers 200 {"ready":true} through Caddy from a remote address, polled every ${POLL_MS} ms; interleaved with a bare docker run of the same image (personal plan limits, read-only root, tmpfs, the state folder mounted) to its first /healthz 200. ` +
      `The machine was ${(busy / wall / 2).toFixed(2)} busy on average (of 2 cores) while it ran: other engineers' suites shared it.`,
  });
});

async function waitGone(served: Served, name: string): Promise<void> {
  for (let i = 0; i < 600; i++) {
    if ((await instanceContainers(served.instance, name)).length === 0) return;
    await sleep(100);
  }
}
