import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { adminApiRouter } from '../../src/http/admin-api.js';
import { createHttpApp } from '../../src/http/app.js';
import { createModelUsageRouter } from '../../src/http/model-access-api.js';
import { periodKey } from '../../src/domain/model-budget.js';
import { ModelAccess } from '../../src/models/model-access.js';
import { HealthChecks } from '../../src/observability/health.js';
import { createLogger } from '../../src/observability/logger.js';
import { Metrics } from '../../src/observability/metrics.js';
import { Policies } from '../../src/resilience/policies.js';
import { BillingStore } from '../../src/store/billing-store.js';
import { CustomerStore } from '../../src/store/customer-store.js';
import { desiredCustomer, testSecretBox, uniqueName } from '../support/fixtures.js';
import { createTestDatabase, type TestDatabase } from '../support/postgres.js';

/**
 * Model usage and key rotation over HTTP: the admin API (`blytz describe`, `blytz
 * rotate-model-key`) and the status page's own view with the customer's access token.
 */

const ADMIN = 'admin-token-for-model-access-tests';
let db: TestDatabase;
let customers: CustomerStore;
let billing: BillingStore;
let models: ModelAccess;
let server: Server;
let url: string;
const rendered: string[] = [];

beforeAll(async () => {
  db = await createTestDatabase();
  const box = testSecretBox();
  customers = new CustomerStore(db.handle, box);
  billing = new BillingStore(db.handle, box, { maxCustomers: 100 });
  const metrics = new Metrics({ defaultMetrics: false });
  const logger = createLogger({ level: 'silent' });
  models = new ModelAccess(
    loadConfig({
      BLYTZ_MODEL_BUDGETS: 'personal=1000,pro=500/5000',
      // The gateway is configured (so customers have included access) but not started here.
      BLYTZ_MODEL_GATEWAY_LISTEN: '127.0.0.1:0',
      BLYTZ_ANTHROPIC_API_KEY: 'platform-key-not-used-here',
    }),
    {
      database: db.handle,
      secretBox: box,
      customers,
      policies: new Policies({ metrics }),
      metrics,
      logger,
      addresses: async () => [],
    },
  );
  const app = createHttpApp({
    logger,
    metrics,
    health: new HealthChecks(),
    readiness: { breakers: () => ({}), leader: () => true },
    routers: [
      createModelUsageRouter({ verifySession: (n, t) => billing.verifySession(n, t), usage: (n) => models.usage(n) }),
      adminApiRouter({
        store: customers,
        adminToken: ADMIN,
        modelAccess: {
          usage: (n) => models.usage(n),
          rotate: (n) =>
            models.rotate(n, async (customer) => {
              rendered.push(customer);
            }),
        },
      }),
    ],
  });
  server = createServer(app);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  await new Promise<void>((resolve) => {
    server?.close(() => resolve());
    server?.closeAllConnections();
  });
  await db?.drop();
});

const admin = (path: string, method = 'GET') =>
  fetch(`${url}/apis/blytz.cloud/v1alpha1/customers/${path}`, { method, headers: { authorization: `Bearer ${ADMIN}` } });

async function spend(name: string, input: number, output: number, id = uniqueName('req')) {
  await models.store.record(
    {
      id,
      customer: name,
      period: periodKey(new Date()),
      api: 'anthropic-messages',
      model: 'claude-haiku-4-5',
      usage: { inputTokens: input, cachedInputTokens: 1, outputTokens: output },
    },
    models.budgets['pro']!,
  );
}

describe('admin API', () => {
  it("GET .../model-usage: this month's use against the plan's budget", async () => {
    const name = uniqueName('mu');
    await customers.apply(desiredCustomer(name, { plan: 'pro' }));
    await models.store.ensureCredential(name);
    await spend(name, 400, 200);
    await spend(name, 10, 5);
    const res = await admin(`${name}/model-usage`);
    expect(res.status).toBe(200);
    const body = (await res.json()) as Record<string, unknown>;
    expect(body).toMatchObject({
      kind: 'ModelUsage',
      name,
      access: 'included',
      plan: 'pro',
      period: periodKey(new Date()).slice(0, 7),
      includedTokens: 500,
      ceilingTokens: 5000,
      usedTokens: 615,
      inputTokens: 410,
      cachedInputTokens: 2,
      outputTokens: 205,
      requests: 2,
      overageTokens: 115,
      exhausted: false,
    });
    expect(body['credentialIssuedAt']).toEqual(expect.any(String));
    expect(JSON.stringify(body)).not.toMatch(/blytz-mk-/);
  });

  it('shows a customer on its own key as not metered', async () => {
    const name = uniqueName('own');
    await customers.apply(desiredCustomer(name, { model: { provider: 'anthropic', apiKey: 'sk-ant-own-key-0123456789' } }));
    expect(await (await admin(`${name}/model-usage`)).json()).toMatchObject({
      access: 'own-key',
      usedTokens: 0,
      exhausted: false,
    });
  });

  it('POST .../model-key/rotate: a new credential, rendered by a reconcile; 404 for an unknown customer', async () => {
    const name = uniqueName('rot');
    await customers.apply(desiredCustomer(name));
    const before = await models.store.ensureCredential(name);
    const res = await admin(`${name}/model-key/rotate`, 'POST');
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({ name, rendered: true, rotatedAt: expect.any(String) });
    expect(rendered).toContain(name);
    expect(await models.store.ensureCredential(name)).not.toBe(before);

    const missing = await admin(`${uniqueName('nobody')}/model-key/rotate`, 'POST');
    expect(missing.status).toBe(404);
    expect(await missing.json()).toMatchObject({ kind: 'Status', reason: 'NotFound' });
    expect((await admin(`${uniqueName('nobody')}/model-usage`)).status).toBe(404);
  });

  it('needs the admin token', async () => {
    const res = await fetch(`${url}/apis/blytz.cloud/v1alpha1/customers/x/model-usage`);
    expect(res.status).toBe(401);
  });
});

describe('status page API', () => {
  it("shows the customer its month's use in their session; a wrong session looks like no customer", async () => {
    const reservation = await billing.reserveSignup({
      email: `${uniqueName('page')}@example.com`,
      displayName: 'Ada',
      instructions: '',
      plan: 'personal',
      telegramBotToken: `123456:${'A'.repeat(35)}`,
      telegramBotUsername: 'ada_bot',
      client: '192.0.2.10',
    });
    await spend(reservation.name, 900, 150);
    // The access token from the signup link opens one session (its single use); the page then uses the session.
    const session = await billing.exchangeAccessToken(reservation.name, reservation.accessToken);
    expect(session).toBeDefined();
    const res = await fetch(`${url}/api/customers/${reservation.name}/model-usage`, {
      headers: { authorization: `Bearer ${session}` },
    });
    expect(res.status).toBe(200);
    expect(res.headers.get('cache-control')).toBe('no-store');
    const body = (await res.json()) as Record<string, unknown>;
    expect(body).toEqual({
      access: 'included',
      period: periodKey(new Date()).slice(0, 7),
      renewsAt: expect.stringMatching(/-01T00:00:00\.000Z$/),
      includedTokens: 1000,
      usedTokens: 1050,
      exhausted: true,
    });
    // The spent access token is no session; a wrong one looks like no customer at all.
    for (const token of [reservation.accessToken, 'wrong-token']) {
      const wrong = await fetch(`${url}/api/customers/${reservation.name}/model-usage`, { headers: { authorization: `Bearer ${token}` } });
      expect(wrong.status).toBe(404);
    }
    const nobody = await fetch(`${url}/api/customers/${uniqueName('nobody')}/model-usage`, { headers: { authorization: 'Bearer x' } });
    expect(nobody.status).toBe(404);
  });
});
