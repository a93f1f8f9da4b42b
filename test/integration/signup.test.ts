import { sql } from 'kysely';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { disambiguatedName, nameFromEmail } from '../../src/domain/naming.js';
import { Policies } from '../../src/resilience/policies.js';
import { CustomerStore } from '../../src/store/customer-store.js';
import { hashToken } from '../../src/store/billing-store.js';
import type { SecretBox } from '../../src/store/secret-box.js';
import {
  botToken,
  openSession,
  postJson,
  type Json,
  PUBLIC_URL,
  signupBody,
  startBillingApp,
  type BillingApp,
  type BillingAppOptions,
} from '../support/billing-app.js';
import { FAKE_PRICE_ID, startFakeStripe, type FakeStripe } from '../support/fake-stripe.js';
import { botUsername, startFakeTelegram, type FakeTelegram } from '../support/fake-telegram.js';
import { testSecretBox, uniqueName } from '../support/fixtures.js';
import { createPgliteDatabase, createTestDatabase, type TestDatabase } from '../support/postgres.js';
import { waitFor } from '../support/wait-for.js';

let db: TestDatabase;
let box: SecretBox;
let stripe: FakeStripe;
let telegram: FakeTelegram;
let customers: CustomerStore;
const apps: BillingApp[] = [];

beforeAll(async () => {
  [db, stripe, telegram] = await Promise.all([createTestDatabase(), startFakeStripe(), startFakeTelegram()]);
  box = testSecretBox();
  customers = new CustomerStore(db.handle, box);
});

afterAll(async () => {
  await Promise.all(apps.map((a) => a.close()));
  await Promise.all([db.drop(), stripe.close(), telegram.close()]);
});

afterEach(() => {
  stripe.mode = 'ok';
  telegram.mode = 'ok';
});

async function app(options: Partial<BillingAppOptions> = {}): Promise<BillingApp> {
  const started = await startBillingApp({ handle: db.handle, box, stripe, telegram, ...options });
  apps.push(started);
  return started;
}

const email = () => `${uniqueName('user')}@example.com`;

async function rowsFor(address: string) {
  return db.handle.db
    .selectFrom('customers')
    .selectAll()
    .where(sql<boolean>`lower(email) = ${address.toLowerCase()}`)
    .execute();
}

function tokenOf(statusUrl: string): string {
  return new URL(statusUrl).searchParams.get('token') as string;
}

async function getStatus(base: string, name: string, init: { token?: string; bearer?: string; cookie?: string } = {}) {
  const query = init.token !== undefined ? `?token=${encodeURIComponent(init.token)}` : '';
  const headers: Record<string, string> = {};
  if (init.bearer) headers['authorization'] = `Bearer ${init.bearer}`;
  if (init.cookie) headers['cookie'] = `blytz_session=${init.cookie}`;
  const response = await fetch(`${base}/api/customers/${name}/status${query}`, { headers });
  return { status: response.status, body: (await response.json()) as Json, headers: response.headers };
}

/** The session a signup's status link opens (its access token is spent doing so). */
async function sessionOf(base: string, statusUrl: string): Promise<string> {
  const opened = await openSession(base, statusUrl);
  expect(opened.session).toBeDefined();
  return opened.session as string;
}

describe('POST /api/signup: validation', () => {
  const long = (n: number) => 'x'.repeat(n);
  it.each<[string, unknown, string]>([
    ['email missing', { email: undefined }, 'email'],
    ['email malformed', { email: 'not-an-email' }, 'email'],
    ['email too long', { email: `${long(250)}@example.com` }, 'email'],
    ['name missing', { name: undefined }, 'name'],
    ['name blank', { name: '   ' }, 'name'],
    ['name over 50 characters', { name: long(51) }, 'name'],
    ['name not a string', { name: 42 }, 'name'],
    ['instructions missing', { instructions: undefined }, 'instructions'],
    ['instructions over 5000 characters', { instructions: long(5001) }, 'instructions'],
    ['instructions with control characters', { instructions: 'a\u0000b' }, 'instructions'],
    ['bot token missing', { telegramBotToken: undefined }, 'telegramBotToken'],
    ['bot token without a colon', { telegramBotToken: 'A'.repeat(40) }, 'telegramBotToken'],
    ['bot token with a short secret', { telegramBotToken: '123456:short' }, 'telegramBotToken'],
    ['bot token with bad characters', { telegramBotToken: `123456:${'A'.repeat(34)}!` }, 'telegramBotToken'],
    ['unknown plan', { plan: 'enterprise' }, 'plan'],
    ['unknown model provider', { modelProvider: 'acme', modelApiKey: 'k' }, 'modelProvider'],
    ['model API key without provider', { modelApiKey: 'sk-abc' }, 'modelProvider'],
    ['empty model API key', { modelProvider: 'openai', modelApiKey: '' }, 'modelApiKey'],
    ['unknown field', { admin: true }, 'admin'],
  ])('%s -> 400 naming the field', async (_case, override, field) => {
    const a = await app();
    const address = email();
    const calls = telegram.calls.length;
    const res = await postJson(`${a.url}/api/signup`, signupBody(address, override as Record<string, unknown>));
    expect(res.status).toBe(400);
    expect(res.body.error.code).toBe('invalid');
    expect(res.body.error.fields.map((f: { field: string }) => f.field)).toContain(field);
    expect(telegram.calls.length).toBe(calls);
    expect(await rowsFor(address)).toHaveLength(0);
  });

  it('reports every bad field at once', async () => {
    const a = await app();
    const res = await postJson(`${a.url}/api/signup`, { email: 'x', name: '', instructions: 5, telegramBotToken: 'nope' });
    expect(res.status).toBe(400);
    expect(res.body.error.fields.map((f: { field: string }) => f.field).sort()).toEqual([
      'email',
      'instructions',
      'name',
      'telegramBotToken',
    ]);
  });

  it('answers 400 for a body that is not a JSON object, and for broken JSON', async () => {
    const a = await app();
    expect((await postJson(`${a.url}/api/signup`, [1, 2])).body.error.fields).toEqual([
      { field: '(root)', message: 'must be a JSON object' },
    ]);
    const broken = await postJson(`${a.url}/api/signup`, '{"email":');
    expect(broken.status).toBe(400);
    expect(broken.body.error.code).toBe('bad_request');
  });

  it('answers 413 for an oversized body', async () => {
    const a = await app();
    const res = await postJson(`${a.url}/api/signup`, signupBody(email(), { instructions: 'x'.repeat(100_000) }));
    expect(res.status).toBe(413);
    expect(res.body.error.code).toBe('payload_too_large');
  });
});

describe('POST /api/signup', () => {
  it('creates a pending customer and a subscription checkout, storing secrets sealed and the token hashed', async () => {
    const now = Math.floor(Date.now() / 1000) * 1000;
    const a = await app({ checkoutClock: () => now });
    const address = email();
    const token = botToken(7);
    const res = await postJson(
      `${a.url}/api/signup`,
      signupBody(address, { telegramBotToken: token, plan: 'pro', modelProvider: 'openai', modelApiKey: 'sk-model-secret-123' }),
    );
    expect(res.status).toBe(201);
    const name = nameFromEmail(address);
    expect(res.body.customerId).toBe(name);
    const accessToken = tokenOf(res.body.statusUrl);
    expect(res.body.statusUrl).toBe(`${PUBLIC_URL}/status/${name}?token=${accessToken}`);
    expect(accessToken.length).toBeGreaterThanOrEqual(43);

    const session = [...stripe.sessions.values()].find((s) => s.client_reference_id === name);
    expect(session).toBeDefined();
    expect(res.body.checkoutUrl).toBe(session?.url);
    const request = stripe.requests.find((r) => r.path === '/v1/checkout/sessions' && r.params['client_reference_id'] === name);
    expect(request?.params).toMatchObject({
      mode: 'subscription',
      line_items: { '0': { price: FAKE_PRICE_ID, quantity: '1' } },
      client_reference_id: name,
      customer_email: address,
      metadata: { blytz_customer: name, blytz_uid: expect.any(String) },
      subscription_data: { metadata: { blytz_customer: name } },
      success_url: `${PUBLIC_URL}/status/${name}?token=${accessToken}`,
      cancel_url: `${PUBLIC_URL}/status/${name}?token=${accessToken}&checkout=cancelled`,
      // Unpaid signups hold capacity about as long as Stripe's shortest checkout (30 minutes, plus 2 of margin).
      expires_at: String(now / 1000 + 1920),
    });
    expect(request?.idempotencyKey).toMatch(new RegExp(`^blytz-signup-${name}-`));

    const [row] = await rowsFor(address);
    expect((request?.params['metadata'] as Json)['blytz_uid']).toBe(row?.uid);
    expect((request?.params['subscription_data'] as Json)['metadata']['blytz_uid']).toBe(row?.uid);
    expect(row).toMatchObject({
      name,
      state: 'pending',
      plan: 'pro',
      display_name: 'Ada Lovelace',
      model_provider: 'openai',
      telegram_bot_username: botUsername(token),
      stripe_checkout_session_id: session?.id,
      access_token_hash: hashToken(accessToken),
    });
    expect(new Date(row!.pending_expires_at!).getTime()).toBe((session?.expires_at ?? 0) * 1000);
    const raw = JSON.stringify(row);
    for (const secret of [token, 'sk-model-secret-123', accessToken]) expect(raw).not.toContain(secret);
    expect(await customers.readSecrets(name)).toEqual({ telegramBotToken: token, modelApiKey: 'sk-model-secret-123' });
    const logs = a.logs.join('\n');
    for (const secret of [token, 'sk-model-secret-123', accessToken]) expect(logs).not.toContain(secret);
  });

  it('answers 400 on the token field when Telegram rejects the token or it is not a bot', async () => {
    const a = await app();
    const unknown = botToken(8);
    const user = botToken(9);
    telegram.invalidTokens.add(unknown);
    telegram.userTokens.add(user);
    for (const token of [unknown, user]) {
      const address = email();
      const res = await postJson(`${a.url}/api/signup`, signupBody(address, { telegramBotToken: token }));
      expect(res.status).toBe(400);
      expect(res.body.error.fields).toEqual([{ field: 'telegramBotToken', message: expect.any(String) }]);
      expect(JSON.stringify(res.body)).not.toContain(token);
      expect(await rowsFor(address)).toHaveLength(0);
    }
  });

  it.each(['error', 'down'] as const)(
    'answers 503 when Telegram is %s, storing nothing and never logging the token',
    async (mode) => {
      const a = await app();
      telegram.mode = mode;
      const address = email();
      const token = botToken(10);
      const res = await postJson(`${a.url}/api/signup`, signupBody(address, { telegramBotToken: token }));
      expect(res.status).toBe(503);
      expect(res.body.error.code).toBe('dependency_unavailable');
      expect(res.body.error.message).toContain('Telegram');
      expect(res.headers.get('retry-after')).toBe('60');
      expect(await rowsFor(address)).toHaveLength(0);
      expect(a.logs.join('\n')).not.toContain(token);
    },
  );

  it('with the real telegram guard: rejected tokens do not trip the breaker; an outage opens it (503 without calling) until Telegram is back', async () => {
    const policies = new Policies({ overrides: { telegram: { retries: 0, failureThreshold: 2, halfOpenAfterMs: 200 } } });
    const policy = policies.policy('telegram');
    const a = await app({ telegramGuard: policies.guard('telegram') });
    const rejected = botToken(12);
    telegram.invalidTokens.add(rejected);
    for (let i = 0; i < 3; i++) {
      expect((await postJson(`${a.url}/api/signup`, signupBody(email(), { telegramBotToken: rejected }))).status).toBe(400);
    }
    expect(policy.state).toBe('closed');

    telegram.mode = 'error';
    for (let i = 0; i < 2; i++) expect((await postJson(`${a.url}/api/signup`, signupBody(email()))).status).toBe(503);
    expect(policy.state).toBe('open');
    const hits = telegram.hits;
    const fast = await postJson(`${a.url}/api/signup`, signupBody(email()));
    expect(fast.status).toBe(503);
    expect(fast.body.error.message).toContain('Telegram');
    expect(telegram.hits).toBe(hits);

    telegram.mode = 'ok';
    const back = await waitFor(async () => {
      const res = await postJson(`${a.url}/api/signup`, signupBody(email()));
      return res.status === 201 ? res : undefined;
    });
    expect(back.body.checkoutUrl).toBeTruthy();
    expect(policy.state).toBe('closed');
  });

  it('answers 503 when Stripe is not configured', async () => {
    const a = await app({ stripeConfigured: false });
    const address = email();
    const res = await postJson(`${a.url}/api/signup`, signupBody(address));
    expect(res.status).toBe(503);
    expect(res.body.error.code).toBe('stripe_not_configured');
    expect(await rowsFor(address)).toHaveLength(0);
  });

  it('refuses "Blytz default" with 400 where included model access is not offered; a key of its own still signs up', async () => {
    const a = await app({ includedModels: { offered: false, reason: 'the model gateway is off (BLYTZ_MODEL_GATEWAY_LISTEN is unset)' } });
    const address = email();
    const calls = telegram.calls.length;
    const refused = await postJson(`${a.url}/api/signup`, signupBody(address));
    expect(refused.status).toBe(400);
    expect(refused.body.error.code).toBe('invalid');
    expect(refused.body.error.fields).toEqual([
      { field: 'modelProvider', message: expect.stringContaining('this server does not include model access') },
      { field: 'modelApiKey', message: expect.stringContaining('needs a key of your own provider account') },
    ]);
    // Refused before anything was asked of Telegram or Stripe, and nothing reserved.
    expect(telegram.calls.length).toBe(calls);
    expect(stripe.requests.some((r) => r.params['customer_email'] === address)).toBe(false);
    expect(await rowsFor(address)).toHaveLength(0);

    // Reported with the other bad fields, in one answer.
    const both = await postJson(`${a.url}/api/signup`, signupBody(address, { name: '' }));
    expect(both.body.error.fields.map((f: { field: string }) => f.field)).toEqual(['name', 'modelProvider', 'modelApiKey']);

    const own = await postJson(`${a.url}/api/signup`, signupBody(address, { modelProvider: 'anthropic', modelApiKey: 'sk-ant-own-1' }));
    expect(own.status).toBe(201);
    expect(await customers.readSecrets(own.body.customerId as string)).toMatchObject({ modelApiKey: 'sk-ant-own-1' });
  });

  it.each(['error', 'down'] as const)('answers 503 when Stripe is %s and leaves nothing that blocks a retry', async (mode) => {
    const capacityDb = await createTestDatabase();
    try {
      const a = await startBillingApp({ handle: capacityDb.handle, box, stripe, telegram, maxCustomers: 1 });
      apps.push(a);
      const address = email();
      stripe.mode = mode;
      const failed = await postJson(`${a.url}/api/signup`, signupBody(address));
      expect(failed.status).toBe(503);
      expect(failed.body.error.message).toContain('Stripe');
      const left = await capacityDb.handle.db.selectFrom('customers').select('name').execute();
      expect(left).toHaveLength(0);
      stripe.mode = 'ok';
      // The only place (capacity 1) is free again, and the same email can retry.
      const retried = await postJson(`${a.url}/api/signup`, signupBody(address));
      expect(retried.status).toBe(201);
      expect(retried.body.customerId).toBe(nameFromEmail(address));
    } finally {
      await capacityDb.drop();
    }
  });

  it('answers 409 when the email already has a live assistant', async () => {
    const a = await app();
    const address = email();
    const first = await postJson(`${a.url}/api/signup`, signupBody(address));
    await customers.setState(first.body.customerId, 'active');
    const again = await postJson(`${a.url}/api/signup`, signupBody(address));
    expect(again.status).toBe(409);
    expect(again.body.error.code).toBe('email_taken');
  });

  it('gives a second email whose name collides the disambiguated name', async () => {
    const a = await app();
    const local = uniqueName('dup');
    const dotted = `${local.replace('-', '.')}@example.com`;
    const dashed = `${local}@example.com`;
    expect(nameFromEmail(dotted)).toBe(nameFromEmail(dashed));
    const first = await postJson(`${a.url}/api/signup`, signupBody(dotted));
    const second = await postJson(`${a.url}/api/signup`, signupBody(dashed));
    expect(first.body.customerId).toBe(nameFromEmail(dotted));
    expect(second.status).toBe(201);
    expect(second.body.customerId).toBe(disambiguatedName(dashed));
  });
});

describe('POST /api/signup: capacity', () => {
  it('lets exactly BLYTZ_MAX_CUSTOMERS of 20 parallel signups through', async () => {
    const capacityDb = await createTestDatabase();
    try {
      const a = await startBillingApp({ handle: capacityDb.handle, box, stripe, telegram, maxCustomers: 5 });
      apps.push(a);
      const results = await Promise.all(
        Array.from({ length: 20 }, (_, i) =>
          postJson(`${a.url}/api/signup`, signupBody(email(), { telegramBotToken: botToken(100 + i) })),
        ),
      );
      const statuses = results.map((r) => r.status);
      expect(statuses.filter((s) => s === 201)).toHaveLength(5);
      expect(statuses.filter((s) => s === 503)).toHaveLength(15);
      expect(results.find((r) => r.status === 503)?.body.error.code).toBe('at_capacity');
      const rows = await capacityDb.handle.db.selectFrom('customers').select('name').execute();
      expect(rows).toHaveLength(5);

      // Expired pending signups do not count: once they lapse, there is room again.
      await capacityDb.handle.db
        .updateTable('customers')
        .set({ pending_expires_at: new Date(Date.now() - 1000) })
        .execute();
      const later = await postJson(`${a.url}/api/signup`, signupBody(email()));
      expect(later.status).toBe(201);
    } finally {
      await capacityDb.drop();
    }
  });
});

describe('POST /api/signup: rate limit', () => {
  it('allows 5 per minute per client on the shared Postgres counters, and a spoofed X-Forwarded-For does not help', async () => {
    const clock = 600_000 + 30_000; // mid-window: the test's clock, not the database's, so no boundary falls inside
    const a = await app({ rateLimits: 'database', clock: () => clock, signupLimit: { limit: 5, windowMs: 60_000 } });
    await db.handle.db.deleteFrom('rate_limits' as never).execute();
    const statuses: number[] = [];
    let last: Awaited<ReturnType<typeof postJson>> | undefined;
    for (let i = 0; i < 6; i++) {
      // Invalid bodies are counted too: the limit comes before any work.
      last = await postJson(`${a.url}/api/signup`, { email: 'x' }, { 'x-forwarded-for': `198.51.100.${i}` });
      statuses.push(last.status);
    }
    expect(statuses).toEqual([400, 400, 400, 400, 400, 429]);
    expect(last?.body.error.code).toBe('rate_limited');
    expect(Number(last?.headers.get('retry-after'))).toBe(30);
    const counters = await sql<{ key: string; count: number }>`SELECT key, count FROM rate_limits`.execute(db.handle.db);
    expect(counters.rows).toEqual([{ key: 'signup:127.0.0.1', count: 6 }]);
  });

  it('believes X-Forwarded-For only from proxies named in BLYTZ_TRUST_PROXY', async () => {
    const a = await app({ trustProxy: 'loopback', clock: () => 30_000, signupLimit: { limit: 1, windowMs: 60_000 } });
    const first = await postJson(`${a.url}/api/signup`, { email: 'x' }, { 'x-forwarded-for': '203.0.113.1' });
    const other = await postJson(`${a.url}/api/signup`, { email: 'x' }, { 'x-forwarded-for': '203.0.113.2' });
    const again = await postJson(`${a.url}/api/signup`, { email: 'x' }, { 'x-forwarded-for': '203.0.113.1' });
    expect([first.status, other.status, again.status]).toEqual([400, 400, 429]);
  });

  it('counts an IPv6 client by its /64: rotating addresses inside it buys no fresh budget', async () => {
    const a = await app({ trustProxy: 'loopback', clock: () => 30_000, signupLimit: { limit: 2, windowMs: 60_000 } });
    const from = (address: string) => postJson(`${a.url}/api/signup`, { email: 'x' }, { 'x-forwarded-for': address });
    const statuses = [];
    for (const address of ['2001:db8:7:1::1', '2001:db8:7:1:ffff::2', '2001:db8:7:1:1:2:3:4']) statuses.push((await from(address)).status);
    expect(statuses).toEqual([400, 400, 429]);
    // The neighbouring /64 is another subscriber.
    expect((await from('2001:db8:7:2::1')).status).toBe(400);
  });
});

describe('the access token, the session and GET /api/customers/:name/status', () => {
  it('spends the access token once: the link opens a session (an HttpOnly cookie) and a second use opens nothing', async () => {
    const a = await app();
    const res = await postJson(`${a.url}/api/signup`, signupBody(email()));
    const name = res.body.customerId as string;
    const first = await openSession(a.url, res.body.statusUrl as string);
    expect(first.status).toBe(303);
    expect(first.location).toBe(`/status/${name}`);
    const cookie = await fetch(`${a.url}/status/${name}?token=${encodeURIComponent(tokenOf(res.body.statusUrl))}`, {
      redirect: 'manual',
    });
    // Spent: the same link (browser history, a forwarded email, Stripe's logs) opens no session.
    expect(cookie.headers.getSetCookie()).toEqual([]);
    expect(cookie.status).toBe(303);
    const session = first.session as string;
    expect((await getStatus(a.url, name, { cookie: session })).status).toBe(200);
    expect((await getStatus(a.url, name, { bearer: session })).status).toBe(200);
    // The access token itself is no credential for the API.
    expect((await getStatus(a.url, name, { bearer: tokenOf(res.body.statusUrl) })).status).toBe(404);
    expect((await getStatus(a.url, name, { token: tokenOf(res.body.statusUrl) })).status).toBe(404);
  });

  it('sets the session cookie HttpOnly, SameSite=Strict, and Secure on an https site', async () => {
    const a = await app();
    const res = await postJson(`${a.url}/api/signup`, signupBody(email()));
    const url = new URL(res.body.statusUrl as string);
    const response = await fetch(`${a.url}${url.pathname}${url.search}`, { redirect: 'manual' });
    const [cookie] = response.headers.getSetCookie();
    expect(cookie).toMatch(/^blytz_session=[A-Za-z0-9_-]{43}; Path=\/; Max-Age=2592000; HttpOnly; SameSite=Strict; Secure$/);
    expect(response.headers.get('cache-control')).toBe('no-store');
  });

  it('answers 404 alike for a missing session, a wrong one, another customer\'s and an unknown customer', async () => {
    const a = await app();
    const res = await postJson(`${a.url}/api/signup`, signupBody(email()));
    const other = await postJson(`${a.url}/api/signup`, signupBody(email(), { telegramBotToken: botToken(2) }));
    const name = res.body.customerId as string;
    const session = await sessionOf(a.url, res.body.statusUrl as string);
    const otherSession = await sessionOf(a.url, other.body.statusUrl as string);
    const bodies = await Promise.all([
      getStatus(a.url, name),
      getStatus(a.url, name, { bearer: 'wrong-session-token-000000000' }),
      getStatus(a.url, name, { bearer: session.slice(1) }),
      getStatus(a.url, name, { cookie: otherSession }),
      getStatus(a.url, 'no-such-customer', { bearer: session }),
      getStatus(a.url, 'Not_A_Name', { bearer: session }),
    ]);
    for (const b of bodies) {
      expect(b.status).toBe(404);
      expect(b.body).toEqual(bodies[0]?.body);
    }
  });

  it('looks a missing customer and a wrong session up the same way: one identical query (no timing difference to measure)', async () => {
    const queries: string[] = [];
    const counting = {
      ...db.handle,
      db: db.handle.db.withPlugin({
        transformQuery: (args) => {
          queries.push(args.node.kind);
          return args.node;
        },
        transformResult: async (args) => args.result,
      }),
    };
    const a = await app({ storeHandle: counting });
    const res = await postJson(`${a.url}/api/signup`, signupBody(email()));
    const name = res.body.customerId as string;
    const lookups: string[][] = [];
    for (const target of [name, 'no-such-customer-at-all']) {
      queries.length = 0;
      expect((await getStatus(a.url, target, { bearer: 'A'.repeat(43) })).status).toBe(404);
      lookups.push([...queries]);
    }
    expect(lookups[0]).toEqual(['SelectQueryNode']);
    expect(lookups[1]).toEqual(lookups[0]);
  });

  it('throttles guessing: past the budget of failed lookups a client gets 429 (clock injected)', async () => {
    let clock = 60_000 * 7 + 5_000;
    const a = await app({ clock: () => clock, statusFailureLimit: { limit: 3, windowMs: 60_000 } });
    const res = await postJson(`${a.url}/api/signup`, signupBody(email()));
    const name = res.body.customerId as string;
    const session = await sessionOf(a.url, res.body.statusUrl as string);
    const statuses = [];
    for (let i = 0; i < 4; i++) statuses.push((await getStatus(a.url, name, { bearer: `guess-${i}-000000000000000` })).status);
    expect(statuses).toEqual([404, 404, 404, 429]);
    // Refused even with the right session until the window ends, so a lucky guess is not confirmed.
    expect((await getStatus(a.url, name, { bearer: session })).status).toBe(429);
    clock += 60_000;
    expect((await getStatus(a.url, name, { bearer: session })).status).toBe(200);
  });

  it('shows phase, steps and links with the session, never a secret', async () => {
    const a = await app();
    const token = botToken(11);
    const res = await postJson(
      `${a.url}/api/signup`,
      signupBody(email(), { telegramBotToken: token, modelProvider: 'anthropic', modelApiKey: 'sk-ant-secret' }),
    );
    const name = res.body.customerId as string;
    const accessToken = tokenOf(res.body.statusUrl);
    const session = await sessionOf(a.url, res.body.statusUrl as string);

    const pending = await getStatus(a.url, name, { bearer: session });
    expect(pending.status).toBe(200);
    expect(pending.headers.get('cache-control')).toBe('no-store');
    expect(pending.body).toEqual({
      name,
      state: 'pending',
      phase: 'Pending',
      ready: false,
      url: null,
      telegramUrl: `https://t.me/${botUsername(token)}`,
      conditions: [],
      steps: [
        { name: 'payment', title: 'Payment confirmed', done: false, message: 'waiting for the payment to complete' },
        { name: 'workspace', title: 'Workspace prepared', done: false },
        { name: 'assistant', title: 'Assistant started', done: false },
        { name: 'reachable', title: 'Reachable', done: false },
      ],
    });

    await customers.setState(name, 'active');
    const now = new Date().toISOString();
    const condition = (type: string, status: 'True' | 'False', message = '') => ({
      type,
      status,
      reason: 'Test',
      message,
      lastTransitionTime: now,
      observedGeneration: 2,
    });
    await customers.updateStatus(name, {
      phase: 'Provisioning',
      observedGeneration: 2,
      url: `https://${name}.blytz.localhost`,
      conditions: [
        condition('WorkspaceReady', 'True'),
        condition('ContainerReady', 'True'),
        condition('RouteReady', 'False', 'route not added yet'),
        condition('Ready', 'False'),
      ],
    });
    const provisioning = await getStatus(a.url, name, { cookie: session });
    expect(provisioning.body).toMatchObject({
      state: 'active',
      phase: 'Provisioning',
      ready: false,
      url: `https://${name}.blytz.localhost`,
    });
    expect(provisioning.body.steps.map((s: { done: boolean }) => s.done)).toEqual([true, true, true, false]);
    expect(provisioning.body.steps[3].message).toBe('route not added yet');
    const text = JSON.stringify(provisioning.body);
    for (const secret of [token, accessToken, session, 'sk-ant-secret']) expect(text).not.toContain(secret);
    expect(text).not.toMatch(/_enc|hash|stripe/i);
  });
});

describe('on the embedded PGlite database', () => {
  it('signs up, enforces capacity and rate-limits in memory', async () => {
    const embedded = await createPgliteDatabase();
    try {
      const a = await startBillingApp({
        handle: embedded.handle,
        box,
        stripe,
        telegram,
        maxCustomers: 1,
        rateLimits: 'database',
        clock: () => 30_000,
        signupLimit: { limit: 2, windowMs: 60_000 },
      });
      apps.push(a);
      const first = await postJson(`${a.url}/api/signup`, signupBody(email()));
      expect(first.status).toBe(201);
      const full = await postJson(`${a.url}/api/signup`, signupBody(email()));
      expect(full.status).toBe(503);
      expect(full.body.error.code).toBe('at_capacity');
      const status = await getStatus(a.url, first.body.customerId, { bearer: await sessionOf(a.url, first.body.statusUrl) });
      expect(status.body.state).toBe('pending');
      expect((await postJson(`${a.url}/api/signup`, signupBody(email()))).status).toBe(429);
    } finally {
      await embedded.drop();
    }
  });
});
