import type { AddressInfo } from 'node:net';
import { createServer, type Server } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHttpApp } from '../../src/http/app.js';
import { adminApiRouter, CUSTOMERS_PATH } from '../../src/http/admin-api.js';
import { MemoryRateLimitBackend } from '../../src/store/rate-limit-counters.js';
import { HealthChecks } from '../../src/observability/health.js';
import { createLogger } from '../../src/observability/logger.js';
import { Metrics } from '../../src/observability/metrics.js';
import { storePoolApi } from '../../src/http/pool-api.js';
import { CustomerStore } from '../../src/store/customer-store.js';
import { PoolStore } from '../../src/store/pool-store.js';
import { PortReservations } from '../../src/store/port-reservations.js';
import { createTestDatabase, type TestDatabase } from '../support/postgres.js';
import { TEST_BOT_TOKEN, testSecretBox, uniqueName } from '../support/fixtures.js';

const TOKEN = 'admin-token-for-tests-0123456789';

// Response bodies are loosely typed JSON here; the assertions check their shape.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Json = Record<string, any>;

function manifest(name: string, spec: Record<string, unknown> = {}, metadata: Record<string, unknown> = {}) {
  return {
    apiVersion: 'blytz.cloud/v1alpha1',
    kind: 'Customer',
    metadata: { name, ...metadata },
    spec: { email: `${name}@example.com`, displayName: 'Ada', instructions: 'Keep my calendar.', ...spec },
  };
}

describe('admin API', () => {
  let db: TestDatabase;
  let store: CustomerStore;
  let server: Server;
  let base: string;
  const reconciled: string[] = [];
  let poolWakes = 0;
  // The failed-authentication budget's clock: moves only when a test says so.
  let clock = 60_000 * 3 + 1_000;
  const failureLimit = { limit: 8, windowMs: 60_000 };

  beforeAll(async () => {
    db = await createTestDatabase();
    store = new CustomerStore(db.handle, testSecretBox());
    const app = createHttpApp({
      logger: createLogger({ level: 'silent' }),
      metrics: new Metrics(),
      health: new HealthChecks(),
      readiness: { breakers: () => ({}), leader: () => true },
      routers: [
        adminApiRouter({
          store,
          adminToken: TOKEN,
          rateLimits: new MemoryRateLimitBackend(() => clock),
          authFailureLimit: failureLimit,
          pools: storePoolApi(new PoolStore(db.handle, testSecretBox(), new PortReservations(db.handle, { from: 41_900, to: 41_909 })), {
            onChange: () => poolWakes++,
          }),
          reconcileNow: async (name) => {
            reconciled.push(name);
            return new Date('2030-01-02T03:04:05.000Z');
          },
          config: {
            TELEGRAM_API_BASE: 'https://api.telegram.org',
            STRIPE_SECRET_KEY: 'sk_test_x',
            STRIPE_WEBHOOK_SECRET: undefined,
            STRIPE_PRICE_ID: undefined,
          },
        }),
      ],
    });
    server = createServer(app);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });

  afterAll(async () => {
    await new Promise((resolve) => server.close(resolve));
    await db.drop();
  });

  async function call(method: string, path: string, body?: unknown, token: string | null = TOKEN) {
    const headers: Record<string, string> = {};
    if (token !== null) headers['authorization'] = `Bearer ${token}`;
    if (body !== undefined) headers['content-type'] = 'application/json';
    const res = await fetch(`${base}${path}`, {
      method,
      headers,
      ...(body !== undefined ? { body: typeof body === 'string' ? body : JSON.stringify(body) } : {}),
    });
    const text = await res.text();
    return { status: res.status, text, body: text ? (JSON.parse(text) as Json) : undefined };
  }

  const put = (name: string, body: unknown) => call('PUT', `${CUSTOMERS_PATH}/${name}`, body);

  describe('authentication', () => {
    it('answers 401 with a Status without a token, with a wrong one, and with a prefix of the right one', async () => {
      for (const token of [null, 'wrong-token', TOKEN.slice(0, -1), `${TOKEN}x`]) {
        const res = await call('GET', CUSTOMERS_PATH, undefined, token);
        expect(res.status).toBe(401);
        expect(res.body).toMatchObject({ kind: 'Status', status: 'Failure', reason: 'Unauthorized', code: 401 });
      }
    });

    it('answers 200 with the right token', async () => {
      const res = await call('GET', CUSTOMERS_PATH);
      expect(res.status).toBe(200);
      expect(res.body).toMatchObject({ kind: 'CustomerList', apiVersion: 'blytz.cloud/v1alpha1' });
    });

    it('throttles failed authentications: past the budget the client is refused (429), the right token too, until the window ends', async () => {
      clock += 60_000; // a fresh window: the 401 test above spent 4 failures
      const statuses: number[] = [];
      for (let i = 0; i < failureLimit.limit; i++) statuses.push((await call('GET', CUSTOMERS_PATH, undefined, `guess-${i}`)).status);
      expect(statuses).toEqual(statuses.map(() => 401));
      const refused = await call('GET', CUSTOMERS_PATH);
      expect(refused.status).toBe(429);
      expect(refused.body).toMatchObject({ kind: 'Status', reason: 'TooManyRequests', code: 429 });
      clock += 60_000;
      expect((await call('GET', CUSTOMERS_PATH)).status).toBe(200);
    });

    it('leaves routes outside the admin prefix alone', async () => {
      const res = await call('GET', '/healthz', undefined, null);
      expect(res.status).toBe(200);
    });
  });

  describe('apply (PUT)', () => {
    it('creates with 201, updates with 200, and a no-op keeps generation and resourceVersion', async () => {
      const name = uniqueName('apply');
      const created = await put(name, manifest(name));
      expect(created.status).toBe(201);
      expect(created.body).toMatchObject({
        kind: 'Customer',
        metadata: { name, generation: 1 },
        spec: { state: 'active', plan: 'personal' },
      });

      const same = await put(name, manifest(name));
      expect(same.status).toBe(200);
      expect(same.body?.['metadata'].generation).toBe(1);
      expect(same.body?.['metadata'].resourceVersion).toBe(created.body?.['metadata'].resourceVersion);

      const updated = await put(name, manifest(name, { instructions: 'Summarise my email.' }));
      expect(updated.status).toBe(200);
      expect(updated.body).toMatchObject({ metadata: { generation: 2 }, spec: { instructions: 'Summarise my email.' } });
    });

    it('is declarative: a field left out of the manifest returns to its default', async () => {
      const name = uniqueName('decl');
      await put(name, manifest(name, { plan: 'pro', paused: true }, { labels: { team: 'a' } }));
      const res = await put(name, manifest(name));
      expect(res.body).toMatchObject({ metadata: { labels: {} }, spec: { plan: 'personal', paused: false } });
    });

    it('ignores status in a manifest', async () => {
      const name = uniqueName('status');
      const res = await put(name, { ...manifest(name), status: { phase: 'Ready', url: 'https://evil.example' } });
      expect(res.status).toBe(201);
      expect(res.body?.['status'].phase).toBeUndefined();
      expect(res.body?.['status'].url).toBeUndefined();
    });

    it('refuses a body whose name differs from the URL: names are immutable', async () => {
      const name = uniqueName('immutable');
      await put(name, manifest(name));
      const other = uniqueName('renamed');
      const res = await put(name, manifest(other));
      expect(res.status).toBe(422);
      expect(res.body).toMatchObject({ kind: 'Status', reason: 'Invalid', details: { name, kind: 'Customer' } });
      expect(res.body?.['details'].causes).toContainEqual({
        field: 'metadata.name',
        message: expect.stringContaining('immutable'),
      });
      expect((await call('GET', `${CUSTOMERS_PATH}/${other}`)).status).toBe(404);
    });

    it('answers 409 Conflict on a stale resourceVersion and applies a current one', async () => {
      const name = uniqueName('rv');
      const created = await put(name, manifest(name));
      const rv = created.body?.['metadata'].resourceVersion as string;
      await put(name, manifest(name, { displayName: 'Changed' }));

      const stale = await put(name, manifest(name, { displayName: 'Mine' }, { resourceVersion: rv }));
      expect(stale.status).toBe(409);
      expect(stale.body).toMatchObject({ kind: 'Status', status: 'Failure', reason: 'Conflict', code: 409 });
      expect((await call('GET', `${CUSTOMERS_PATH}/${name}`)).body?.['spec'].displayName).toBe('Changed');

      const current = (await call('GET', `${CUSTOMERS_PATH}/${name}`)).body?.['metadata'].resourceVersion as string;
      const ok = await put(name, manifest(name, { displayName: 'Mine' }, { resourceVersion: current }));
      expect(ok.status).toBe(200);
      expect(ok.body?.['spec'].displayName).toBe('Mine');
    });

    it('answers 409 AlreadyExists when another live customer has the email', async () => {
      const a = uniqueName('email');
      const b = uniqueName('email');
      await put(a, manifest(a, { email: `${a}@example.org` }));
      const res = await put(b, manifest(b, { email: `${a}@example.org` }));
      expect(res.status).toBe(409);
      expect(res.body?.['reason']).toBe('AlreadyExists');
    });

    it.each([
      ['apiVersion', { apiVersion: 'v1' }],
      ['kind', { kind: 'Deployment' }],
      ['metadata.name', { metadata: { name: 'Not_A_Name' } }],
      ['metadata.labels.bad key!', { metadata: { labels: { 'bad key!': 'x' } } }],
      ['spec.email', { spec: { email: 'not-an-email', displayName: 'Ada' } }],
      ['spec.email', { spec: { displayName: 'Ada' } }],
      ['spec.displayName', { spec: { email: 'a@example.com', displayName: '   ' } }],
      ['spec.plan', { spec: { email: 'a@example.com', displayName: 'Ada', plan: 'gold' } }],
      ['spec.template', { spec: { email: 'a@example.com', displayName: 'Ada', template: '../etc' } }],
      ['spec.state', { spec: { email: 'a@example.com', displayName: 'Ada', state: 'running' } }],
      ['spec.instructions', { spec: { email: 'a@example.com', displayName: 'Ada', instructions: 'x'.repeat(5001) } }],
      ['spec.instructions', { spec: { email: 'a@example.com', displayName: 'Ada', instructions: 'bad\u0000byte' } }],
      ['spec.telegram.botToken', { spec: { email: 'a@example.com', displayName: 'Ada', telegram: { botToken: 'nope' } } }],
      ['spec.paused', { spec: { email: 'a@example.com', displayName: 'Ada', paused: 'yes' } }],
      ['spec.colour', { spec: { email: 'a@example.com', displayName: 'Ada', colour: 'blue' } }],
    ])('answers 422 Invalid naming %s', async (field, override) => {
      const name = uniqueName('invalid');
      const base = manifest(name);
      const body = {
        ...base,
        ...override,
        metadata: { ...base.metadata, ...((override as { metadata?: object }).metadata ?? {}) },
      };
      const url = (body.metadata as { name: string }).name === 'Not_A_Name' ? 'Not_A_Name' : name;
      const res = await put(url, body);
      expect(res.status).toBe(422);
      expect(res.body).toMatchObject({
        kind: 'Status',
        apiVersion: 'v1',
        status: 'Failure',
        reason: 'Invalid',
        code: 422,
        details: { kind: 'Customer' },
      });
      const fields = (res.body?.['details'].causes as Array<{ field: string; message: string }>).map((c) => c.field);
      expect(fields).toContain(field);
      expect((await call('GET', `${CUSTOMERS_PATH}/${name}`)).status).toBe(404);
    });

    it('lists every bad field at once', async () => {
      const name = uniqueName('many');
      const res = await put(name, manifest(name, { email: 'x', plan: 'gold', state: 'nope' }));
      const fields = (res.body?.['details'].causes as Array<{ field: string }>).map((c) => c.field).sort();
      expect(fields).toEqual(['spec.email', 'spec.plan', 'spec.state']);
    });

    it('answers 400 for malformed JSON and a non-object body, 415 for a non-JSON body, 413 past the size limit', async () => {
      const name = uniqueName('body');
      const malformed = await put(name, '{"apiVersion": ');
      expect(malformed.status).toBe(400);
      expect(malformed.body).toMatchObject({ kind: 'Status', reason: 'BadRequest' });
      expect((await put(name, [manifest(name)])).status).toBe(400);
      const text = await fetch(`${base}${CUSTOMERS_PATH}/${name}`, {
        method: 'PUT',
        headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'text/plain' },
        body: 'hello',
      });
      expect(text.status).toBe(415);
      const huge = await put(name, manifest(name, { instructions: 'x'.repeat(300 * 1024) }));
      expect(huge.status).toBe(413);
      expect(huge.body).toMatchObject({ kind: 'Status', reason: 'RequestEntityTooLarge' });
    });
  });

  describe('pools', () => {
    const POOLS = '/apis/blytz.cloud/v1alpha1/pools';
    const pool = (name: string, spec: Record<string, unknown>) => ({ apiVersion: 'blytz.cloud/v1alpha1', kind: 'Pool', metadata: { name }, spec });

    it('lists every plan, a plan never set at size 0; 401 without the token', async () => {
      const list = await call('GET', POOLS);
      expect(list.status).toBe(200);
      expect(list.body?.['kind']).toBe('PoolList');
      expect(list.body?.['items'].map((p: Json) => [p.metadata.name, p.spec.size])).toEqual([
        ['personal', 0],
        ['pro', 0],
      ]);
      expect((await call('GET', POOLS, undefined, null)).status).toBe(401);
    });

    it('applies a size: 201 then 200, the generation moving only on a change, the pool controller woken each time', async () => {
      const wakes = poolWakes;
      const created = await call('PUT', `${POOLS}/pro`, pool('pro', { size: 2 }));
      expect(created.status).toBe(201);
      expect(created.body).toMatchObject({ kind: 'Pool', metadata: { name: 'pro', generation: 1 }, spec: { size: 2, template: 'personal-assistant' } });
      expect(created.body?.['status']).toEqual({ ready: 0, warming: 0, bound: 0, retiring: 0 });
      const same = await call('PUT', `${POOLS}/pro`, pool('pro', { size: 2 }));
      expect(same.status).toBe(200);
      expect(same.body?.['metadata'].generation).toBe(1);
      expect((await call('PUT', `${POOLS}/pro`, pool('pro', { size: 1 }))).body?.['metadata'].generation).toBe(2);
      expect(poolWakes).toBe(wakes + 3);
      expect((await call('GET', `${POOLS}/pro`)).body?.['spec'].size).toBe(1);
    });

    it('refuses a pool of no plan, a bad size, a name other than the URL\'s, and a body that is not JSON, changing nothing', async () => {
      expect((await call('GET', `${POOLS}/gold`)).status).toBe(404);
      const bad = await call('PUT', `${POOLS}/personal`, pool('pro', { size: -1, color: 'red' }));
      expect(bad.status).toBe(422);
      expect(bad.body).toMatchObject({ kind: 'Status', reason: 'Invalid' });
      const fields = bad.body?.['details'].causes.map((c: Json) => c.field);
      expect(fields).toEqual(expect.arrayContaining(['spec.size', 'metadata.name']));
      expect((await call('PUT', `${POOLS}/gold`, pool('gold', { size: 1 }))).status).toBe(422);
      expect((await call('PUT', `${POOLS}/personal`, 'size=1')).status).toBe(400);
      expect((await call('GET', `${POOLS}/personal`)).body?.['spec'].size).toBe(0);
    });
  });

  describe('secrets', () => {
    it('accepts a bot token and never returns it: responses say botTokenSet', async () => {
      const name = uniqueName('secret');
      const created = await put(
        name,
        manifest(name, {
          telegram: { botToken: TEST_BOT_TOKEN },
          model: { provider: 'anthropic', apiKey: 'sk-ant-secret-value' },
        }),
      );
      expect(created.status).toBe(201);
      expect(created.body?.['spec'].telegram).toEqual({ botTokenSet: true });
      expect(created.body?.['spec'].model).toEqual({ provider: 'anthropic', apiKeySet: true });
      expect((await store.readSecrets(name)).telegramBotToken).toBe(TEST_BOT_TOKEN);

      const responses = [
        created.text,
        (await call('GET', `${CUSTOMERS_PATH}/${name}`)).text,
        (await call('GET', CUSTOMERS_PATH)).text,
        (
          await put(
            name,
            manifest(name, {
              telegram: { botToken: TEST_BOT_TOKEN },
              model: { provider: 'anthropic', apiKey: 'sk-ant-secret-value' },
            }),
          )
        ).text,
        (await call('DELETE', `${CUSTOMERS_PATH}/${name}`)).text,
      ];
      for (const text of responses) {
        expect(text).not.toContain(TEST_BOT_TOKEN);
        expect(text).not.toContain('sk-ant-secret-value');
      }
    });

    it('keeps a stored token when a manifest read back from the API (botTokenSet only) is applied again', async () => {
      const name = uniqueName('readback');
      await put(name, manifest(name, { telegram: { botToken: TEST_BOT_TOKEN } }));
      const readBack = (await call('GET', `${CUSTOMERS_PATH}/${name}`)).body as Json;
      const again = await put(name, readBack);
      expect(again.status).toBe(200);
      expect(again.body?.['metadata'].generation).toBe(1);
      expect(again.body?.['spec'].telegram.botTokenSet).toBe(true);
    });
  });

  describe('list', () => {
    it('pages with limit and continue, and filters by label selector', async () => {
      const group = uniqueName('grp');
      const names = [0, 1, 2, 3, 4].map((i) => `${group}-${i}`);
      for (const [i, name] of names.entries()) {
        await put(name, manifest(name, {}, { labels: { group, parity: i % 2 === 0 ? 'even' : 'odd' } }));
      }
      const seen: string[] = [];
      let token: string | undefined;
      let pages = 0;
      do {
        const query = new URLSearchParams({ limit: '2', labelSelector: `group=${group}` });
        if (token) query.set('continue', token);
        const res = await call('GET', `${CUSTOMERS_PATH}?${query}`);
        expect(res.status).toBe(200);
        const items = res.body?.['items'] as Array<{ metadata: { name: string } }>;
        expect(items.length).toBeLessThanOrEqual(2);
        seen.push(...items.map((i) => i.metadata.name));
        token = res.body?.['metadata'].continue as string | undefined;
        pages++;
      } while (token);
      expect(seen).toEqual(names);
      expect(pages).toBe(3);

      const odd = await call('GET', `${CUSTOMERS_PATH}?labelSelector=${encodeURIComponent(`group=${group},parity=odd`)}`);
      expect((odd.body?.['items'] as Array<{ metadata: { name: string } }>).map((i) => i.metadata.name)).toEqual([
        names[1],
        names[3],
      ]);
    });

    it('answers 400 for a bad limit, continue token or selector', async () => {
      for (const query of ['limit=0', 'limit=abc', 'continue=garbage', 'labelSelector=a!=b', 'labelSelector=a%20in%20(b)']) {
        const res = await call('GET', `${CUSTOMERS_PATH}?${query}`);
        expect(res.status, query).toBe(400);
        expect(res.body).toMatchObject({ kind: 'Status', reason: 'BadRequest' });
      }
    });
  });

  describe('get, delete, events, reconcile', () => {
    it('answers 404 NotFound Status for an unknown customer on every verb', async () => {
      const name = uniqueName('missing');
      for (const [method, path] of [
        ['GET', `${CUSTOMERS_PATH}/${name}`],
        ['DELETE', `${CUSTOMERS_PATH}/${name}`],
        ['GET', `${CUSTOMERS_PATH}/${name}/events`],
        ['POST', `${CUSTOMERS_PATH}/${name}/reconcile`],
      ] as const) {
        const res = await call(method, path);
        expect(res.status, `${method} ${path}`).toBe(404);
        expect(res.body).toMatchObject({ kind: 'Status', reason: 'NotFound', code: 404, details: { name, kind: 'Customer' } });
      }
    });

    it('delete makes the desired state cancelled', async () => {
      const name = uniqueName('del');
      await put(name, manifest(name));
      const res = await call('DELETE', `${CUSTOMERS_PATH}/${name}`);
      expect(res.status).toBe(200);
      expect(res.body).toMatchObject({ metadata: { name, generation: 2 }, spec: { state: 'cancelled' } });
      expect((await store.get(name))?.spec.state).toBe('cancelled');
    });

    it('lists events newest first with counts', async () => {
      const name = uniqueName('events');
      await put(name, manifest(name));
      await store.recordEvent(name, { type: 'Normal', reason: 'WorkspaceRendered', message: 'rendered' });
      await store.recordEvent(name, { type: 'Warning', reason: 'ContainerFailed', message: 'exit 1' });
      await store.recordEvent(name, { type: 'Warning', reason: 'ContainerFailed', message: 'exit 1' });
      const res = await call('GET', `${CUSTOMERS_PATH}/${name}/events`);
      expect(res.status).toBe(200);
      expect(res.body?.['kind']).toBe('EventList');
      const items = res.body?.['items'] as Array<Record<string, unknown>>;
      expect(items).toHaveLength(2);
      expect(items[0]).toMatchObject({ type: 'Warning', reason: 'ContainerFailed', message: 'exit 1', count: 2 });
      expect(items[1]).toMatchObject({ type: 'Normal', reason: 'WorkspaceRendered', count: 1 });
      expect(typeof items[0]?.['lastTimestamp']).toBe('string');
    });

    it('reconcile asks the controller and answers when it was handled', async () => {
      const name = uniqueName('recon');
      await put(name, manifest(name));
      const res = await call('POST', `${CUSTOMERS_PATH}/${name}/reconcile`);
      expect(res.status).toBe(200);
      expect(res.body).toEqual({ name, handledAt: '2030-01-02T03:04:05.000Z' });
      expect(reconciled).toContain(name);
    });

    it('diagnostics reports configuration presence and never values', async () => {
      const res = await call('GET', '/apis/blytz.cloud/v1alpha1/diagnostics');
      expect(res.status).toBe(200);
      expect(res.body?.['integrations']).toEqual([
        { name: 'stripe', status: 'fail', message: expect.stringContaining('STRIPE_WEBHOOK_SECRET') },
        { name: 'telegram', status: 'ok', message: expect.stringContaining('api.telegram.org') },
      ]);
      expect(res.text).not.toContain('sk_test_x');
    });
  });
});

describe('admin API without a controller', () => {
  let db: TestDatabase;
  let server: Server;
  let base: string;

  beforeAll(async () => {
    db = await createTestDatabase();
    const store = new CustomerStore(db.handle, testSecretBox());
    const app = createHttpApp({
      logger: createLogger({ level: 'silent' }),
      metrics: new Metrics(),
      health: new HealthChecks(),
      readiness: { breakers: () => ({}), leader: () => false },
      routers: [
        adminApiRouter({
          store,
          adminToken: TOKEN,
          pools: storePoolApi(new PoolStore(db.handle, testSecretBox(), new PortReservations(db.handle, { from: 41_910, to: 41_919 })), {
            onChange: () => {},
            unavailable: 'warm pools run on the Docker runtime only',
          }),
        }),
      ],
    });
    server = createServer(app);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });

  afterAll(async () => {
    await new Promise((resolve) => server.close(resolve));
    await db.drop();
  });

  it('answers 503 to reconcile when this replica cannot', async () => {
    const name = uniqueName('norecon');
    const headers = { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' };
    await fetch(`${base}${CUSTOMERS_PATH}/${name}`, { method: 'PUT', headers, body: JSON.stringify(manifest(name)) });
    const res = await fetch(`${base}${CUSTOMERS_PATH}/${name}/reconcile`, { method: 'POST', headers });
    expect(res.status).toBe(503);
    expect(await res.json()).toMatchObject({ kind: 'Status', reason: 'ServiceUnavailable', code: 503 });
  });

  it('where pools cannot run (the Kubernetes runtime), a size above 0 is refused and every pool says why; 0 is accepted', async () => {
    const headers = { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' };
    const body = (size: number) => JSON.stringify({ apiVersion: 'blytz.cloud/v1alpha1', kind: 'Pool', metadata: { name: 'personal' }, spec: { size } });
    const refused = await fetch(`${base}/apis/blytz.cloud/v1alpha1/pools/personal`, { method: 'PUT', headers, body: body(1) });
    expect(refused.status).toBe(422);
    expect(await refused.json()).toMatchObject({ details: { causes: [{ field: 'spec.size', message: 'warm pools run on the Docker runtime only' }] } });
    expect((await fetch(`${base}/apis/blytz.cloud/v1alpha1/pools/personal`, { method: 'PUT', headers, body: body(0) })).status).toBe(201);
    const list = (await (await fetch(`${base}/apis/blytz.cloud/v1alpha1/pools`, { headers })).json()) as Json;
    expect(list['items'].map((p: Json) => p.status.message)).toEqual(['warm pools run on the Docker runtime only', 'warm pools run on the Docker runtime only']);
  });
});

describe('admin API where included model access is not offered', () => {
  let db: TestDatabase;
  let server: Server;
  let base: string;
  const headers = { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' };

  beforeAll(async () => {
    db = await createTestDatabase();
    const store = new CustomerStore(db.handle, testSecretBox());
    const app = createHttpApp({
      logger: createLogger({ level: 'silent' }),
      metrics: new Metrics(),
      health: new HealthChecks(),
      readiness: { breakers: () => ({}), leader: () => false },
      routers: [
        adminApiRouter({
          store,
          adminToken: TOKEN,
          includedModels: { offered: false, reason: 'the model gateway is off (BLYTZ_MODEL_GATEWAY_LISTEN is unset)' },
        }),
      ],
    });
    server = createServer(app);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });

  afterAll(async () => {
    await new Promise((resolve) => server.close(resolve));
    await db.drop();
  });

  const put = (name: string, spec: Record<string, unknown> = {}) =>
    fetch(`${base}${CUSTOMERS_PATH}/${name}`, { method: 'PUT', headers, body: JSON.stringify(manifest(name, spec)) });

  it('accepts a customer without a model key, with a Warning saying it will have no model', async () => {
    const name = uniqueName('nomodel');
    const res = await put(name);
    expect(res.status).toBe(201);
    expect(res.headers.get('warning')).toBe(
      `299 - "customer/${name} has no model key of its own and this server does not offer included model access (the model gateway is off (BLYTZ_MODEL_GATEWAY_LISTEN is unset)): its assistant will have no model until spec.model has a key or the model gateway serves"`,
    );
    // Every apply says it again while it holds (kubectl shows an API server's warnings each time).
    expect((await put(name)).headers.get('warning')).toContain(`customer/${name} has no model key`);
  });

  it('says nothing for a customer with a key of its own', async () => {
    const res = await put(uniqueName('ownkey'), { model: { provider: 'openai', apiKey: 'sk-own-admin' } });
    expect(res.status).toBe(201);
    expect(res.headers.get('warning')).toBeNull();
    expect(await res.text()).not.toContain('sk-own-admin');
  });
});
