import { randomBytes } from 'node:crypto';
import { chown, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Docker from 'dockerode';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { removeInstanceObjects } from '../support/docker-cleanup.js';
import { pairingApprover } from '../../src/controller/customer/pairing.js';
import { createHttpApp } from '../../src/http/app.js';
import { createPairingApiRouter } from '../../src/http/pairing-api.js';
import type { RateLimit } from '../../src/http/rate-limit.js';
import { MemoryRateLimitBackend } from '../../src/store/rate-limit-counters.js';
import { HealthChecks } from '../../src/observability/health.js';
import { createLogger } from '../../src/observability/logger.js';
import { Metrics } from '../../src/observability/metrics.js';
import { Policies } from '../../src/resilience/policies.js';
import { DockerRuntime } from '../../src/runtime/docker/docker-runtime.js';
import type { CustomerRuntime } from '../../src/runtime/runtime.js';
import { BillingStore } from '../../src/store/billing-store.js';
import { postJson, type Json } from '../support/billing-app.js';
import { testSecretBox, uniqueName, stubHealth } from '../support/fixtures.js';
import { createTestDatabase, type TestDatabase } from '../support/postgres.js';

/**
 * POST /api/customers/:name/pairing against a real stub container on a real Docker engine: the
 * stand-in `openclaw` approves a code only when it is a line of the mounted
 * pending-pairing-codes file, and records every call in /tmp/openclaw-calls.log.
 */

const IMAGE = 'blytz/assistant-stub:dev';
const INSTANCE_LABEL = 'cloud.blytz.instance';
const instance = `pair-${randomBytes(3).toString('hex')}`;
// This file's share of the test port range: 31500-31599.
const hostPort = 31500 + Math.floor(Math.random() * 100);
const GOOD = 'ABCD2345';
const SECOND = 'QRST7890';
const WRONG = 'ZZZZ9999';

const docker = new Docker();
const runtime = new DockerRuntime(new Policies({ metrics: new Metrics({ defaultMetrics: false }) }).guard('docker'), {
  docker,
  extraLabels: { [INSTANCE_LABEL]: instance },
});

let db: TestDatabase;
let store: BillingStore;
let root: string;
let containerId: string;
let customer: { name: string; token: string; accessToken: string };
let idle: { name: string; token: string; accessToken: string };
const apps: Array<{ url: string; logs: string[]; close(): Promise<void> }> = [];
let app: (typeof apps)[number];

/** A signed-up customer and the session its access token opened (`token`), plus the spent access token. */
async function reserve(): Promise<{ name: string; token: string; accessToken: string }> {
  const r = await store.reserveSignup({
    email: `${uniqueName('pair')}@example.com`,
    displayName: 'Ada',
    instructions: 'keep my calendar',
    plan: 'personal',
    telegramBotToken: `${100000 + Math.floor(Math.random() * 800000)}:${'A'.repeat(35)}`,
    telegramBotUsername: 'ada_bot',
    client: '127.0.0.1',
  });
  const session = await store.exchangeAccessToken(r.name, r.accessToken);
  if (!session) throw new Error('the fresh access token opened no session');
  return { name: r.name, token: session, accessToken: r.accessToken };
}

/** `limit` undefined: the router's default, RATE_LIMITS.pairing. */
async function startApp(limit: RateLimit | undefined, rateLimits = new MemoryRateLimitBackend()) {
  const logs: string[] = [];
  const logger = createLogger({ level: 'debug', destination: { write: (line: string) => void logs.push(line) } });
  const express = createHttpApp({
    logger,
    metrics: new Metrics({ defaultMetrics: false }),
    health: new HealthChecks(),
    readiness: { breakers: () => ({}), leader: () => false },
    routers: [
      createPairingApiRouter({
        verifySession: (name, token) => store.verifySession(name, token),
        approvePairing: pairingApprover(runtime),
        rateLimits,
        logger,
        ...(limit ? { limit } : {}),
      }),
    ],
  });
  const server: Server = createServer(express);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const started = {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    logs,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
  apps.push(started);
  return started;
}

/** What the stand-in openclaw recorded inside the container. */
async function openclawCalls(): Promise<string[]> {
  const result = await runtime.exec(containerId, ['cat', '/tmp/openclaw-calls.log']);
  return result.exitCode === 0 ? result.stdout.split('\n').filter(Boolean) : [];
}

const pair = (name: string, body: unknown, token?: string) =>
  postJson(`${app.url}/api/customers/${name}/pairing`, body, token ? { authorization: `Bearer ${token}` } : {});

beforeAll(async () => {
  db = await createTestDatabase();
  store = new BillingStore(db.handle, testSecretBox(), { maxCustomers: 100 });
  customer = await reserve();
  idle = await reserve();

  // The customer's folder as the workspace module lays it out, owned by the container's user.
  root = await mkdtemp(join(tmpdir(), 'blytz-pairing-'));
  const home = join(root, customer.name);
  await mkdir(join(home, 'workspace'), { recursive: true });
  await writeFile(join(home, 'workspace', 'AGENTS.md'), '# Agents\n');
  await writeFile(join(home, 'pending-pairing-codes'), `${GOOD}\n${SECOND}\n`);
  for (const path of [home, join(home, 'workspace'), join(home, 'workspace', 'AGENTS.md'), join(home, 'pending-pairing-codes')]) {
    await chown(path, 1000, 1000);
  }
  containerId = await runtime.create({
    customer: customer.name,
    image: IMAGE,
    containerPort: 18789,
    hostPort,
    user: '1000:1000',
    mounts: [{ hostPath: home, containerPath: '/home/node/.openclaw', readOnly: false }],
    env: { PORT: '18789', OPENCLAW_HOME: '/home/node/.openclaw' },
    resources: { memoryBytes: 64 * 1024 * 1024, nanoCpus: 250_000_000, pidsLimit: 64, nodeHeapMiB: 64 },
    ...stubHealth(),
    specHash: 'pairing-test',
  });
  await runtime.start(containerId);
  app = await startApp({ limit: 10_000, windowMs: 60_000 });
});

afterAll(async () => {
  await Promise.all(apps.map((a) => a.close()));
  // Only what this file created: our unique instance label.
  await removeInstanceObjects(docker, INSTANCE_LABEL, instance);
  await rm(root, { recursive: true, force: true });
  await db?.drop();
});

describe('POST /api/customers/:name/pairing', () => {
  it('approves a pending code inside the customer container (200)', async () => {
    const res = await pair(customer.name, { code: GOOD }, customer.token);
    expect(res.status).toBe(200);
    expect(res.body).toEqual({ approved: true });
    expect(res.headers.get('cache-control')).toBe('no-store');
    expect(await openclawCalls()).toContain(`pairing approve telegram ${GOOD}`);
  });

  it('takes the session from its cookie and forgives lower case and spaces', async () => {
    const res = await postJson(
      `${app.url}/api/customers/${customer.name}/pairing`,
      { code: ` ${SECOND.toLowerCase()} ` },
      { cookie: `other=1; blytz_session=${customer.token}` },
    );
    expect(res.status).toBe(200);
    expect(await openclawCalls()).toContain(`pairing approve telegram ${SECOND}`);
  });

  it('answers 422 pairing_rejected for a code OpenClaw does not know', async () => {
    const res = await pair(customer.name, { code: WRONG }, customer.token);
    expect(res.status).toBe(422);
    expect(res.body.error.code).toBe('pairing_rejected');
    expect(res.body.error.message).toMatch(/wrong or has expired/);
    // It really was asked, and its output is not echoed back.
    expect(await openclawCalls()).toContain(`pairing approve telegram ${WRONG}`);
    expect(JSON.stringify(res.body)).not.toContain('No pending pairing request');
  });

  it('answers 502 pairing_failed when the command fails for another reason (not "wrong code")', async () => {
    // The stand-in fails this code the way OpenClaw did with a read-only config (EBUSY, exit 78).
    const res = await pair(customer.name, { code: 'FAIL0078' }, customer.token);
    expect(res.status).toBe(502);
    expect(res.body.error.code).toBe('pairing_failed');
    expect(res.body.error.message).toMatch(/not about the code/);
    expect(JSON.stringify(res.body)).not.toContain('EBUSY');
  });

  it('answers 400 for malformed codes without running anything', async () => {
    const before = (await openclawCalls()).length;
    const bad: unknown[] = [
      { code: 'ABC' },
      { code: 'ABCD23456' },
      { code: 'ABCD-234' },
      { code: '--help12' },
      { code: 12345678 },
      {},
      [],
      { code: null },
    ];
    for (const body of bad) {
      const res = await pair(customer.name, body, customer.token);
      expect(res.status, JSON.stringify(body)).toBe(400);
      expect(res.body.error.code).toBe('invalid');
      expect(res.body.error.fields).toEqual([{ field: 'code', message: expect.stringMatching(/8 characters/) }]);
    }
    const notJson = await pair(customer.name, '{"code":', customer.token);
    expect(notJson.status).toBe(400);
    expect((await openclawCalls()).length).toBe(before);
  });

  it('answers 404 without a valid token, revealing nothing (not even code rules)', async () => {
    const answers: Json[] = [];
    for (const [name, token] of [
      [customer.name, undefined],
      [customer.name, 'wrong-token'],
      [customer.name, customer.accessToken], // the access token, spent on opening the session
      [customer.name, idle.token], // another customer's session
      ['no-such-customer', customer.token],
      ['Not_A_Name', customer.token],
    ] as const) {
      for (const code of [GOOD, 'bad']) {
        const res = await pair(name, { code }, token);
        expect(res.status).toBe(404);
        answers.push(res.body);
      }
    }
    expect(new Set(answers.map((a) => JSON.stringify(a))).size).toBe(1);
  });

  it('answers 409 when the customer has no container', async () => {
    const res = await pair(idle.name, { code: GOOD }, idle.token);
    expect(res.status).toBe(409);
    expect(res.body.error.code).toBe('assistant_not_running');
  });

  it('answers 429 past RATE_LIMITS.pairing, wrong tokens included', async () => {
    // A frozen clock: the window cannot roll over mid-test.
    const limited = await startApp(undefined, new MemoryRateLimitBackend(() => 1_000));
    const statuses: number[] = [];
    for (let i = 0; i < 11; i++) {
      const res = await postJson(
        `${limited.url}/api/customers/${customer.name}/pairing`,
        { code: WRONG },
        { authorization: 'Bearer guess' },
      );
      statuses.push(res.status);
      if (res.status === 429) {
        expect(Number(res.headers.get('retry-after'))).toBeGreaterThan(0);
        expect(res.body.error.code).toBe('rate_limited');
      }
    }
    expect(statuses).toEqual([...Array<number>(10).fill(404), 429]);
  });

  it('never logs the access token or a code', () => {
    const logs = apps.flatMap((a) => a.logs).join('\n');
    expect(logs).toContain('telegram pairing');
    for (const secret of [customer.token, customer.accessToken, idle.token, GOOD, SECOND, WRONG]) expect(logs).not.toContain(secret);
  });

  it('answers 409 once the container is stopped', async () => {
    await runtime.stop(containerId);
    const res = await pair(customer.name, { code: GOOD }, customer.token);
    expect(res.status).toBe(409);
  });
});

describe('pairingApprover', () => {
  it('refuses a malformed code before touching the runtime', async () => {
    const calls: string[] = [];
    const fake = {
      listFor: async (name: string) => {
        calls.push(name);
        return [];
      },
      exec: async () => ({ exitCode: 0, stdout: '', stderr: '' }),
    } satisfies Pick<CustomerRuntime, 'listFor' | 'exec'>;
    await expect(pairingApprover(fake)('x', '--all')).rejects.toThrow(RangeError);
    expect(calls).toEqual([]);
  });
});
