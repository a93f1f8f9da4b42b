import { randomBytes } from 'node:crypto';
import { createServer, request as httpRequest, type IncomingMessage } from 'node:http';
import { Writable } from 'node:stream';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MeterEventReporter } from '../../src/billing/meter-events.js';
import { createStripeClient } from '../../src/billing/stripe-client.js';
import { periodKey, type ModelBudget } from '../../src/domain/model-budget.js';
import { ModelGateway } from '../../src/models/gateway.js';
import type { SourceCheck } from '../../src/runtime/customer-addresses.js';
import { Upstream } from '../../src/model-providers/upstream.js';
import { createLogger } from '../../src/observability/logger.js';
import { Metrics } from '../../src/observability/metrics.js';
import { Policies } from '../../src/resilience/policies.js';
import { CustomerStore } from '../../src/store/customer-store.js';
import { ModelAccessStore } from '../../src/store/model-access-store.js';
import { startFakeModelProvider, type FakeApi, type FakeModelProvider } from '../support/fake-model-provider.js';
import { FAKE_SECRET_KEY, startFakeStripe, type FakeStripe } from '../support/fake-stripe.js';
import { desiredCustomer, testSecretBox, uniqueName } from '../support/fixtures.js';
import { createTestDatabase, type TestDatabase } from '../support/postgres.js';
import { waitFor } from '../support/wait-for.js';

/**
 * The model gateway on real Postgres against the local fake provider (OpenAI chat completions and
 * responses, Anthropic messages; streamed and not). What the issue asks: replies pass through as
 * they come, usage is recorded exactly (the fake's own usage fields), retries are not counted
 * twice, a customer past their budget gets the provider's quota answer while others go on, a
 * suspended customer's credential stops at once, a credential used from the wrong place is
 * refused, and the platform's key appears in no answer and no log line. (The source check
 * against real containers: model-gateway-docker.test.ts.)
 */

// Platform keys that no log mask would catch, so their absence proves they were never written.
const OPENAI_KEY = `platform-openai-${randomBytes(12).toString('hex')}`;
const ANTHROPIC_KEY = `platform-anthropic-${randomBytes(12).toString('hex')}`;
const MODELS = { openai: ['gpt-5-mini'], anthropic: ['claude-haiku-4-5'] };
const BUDGETS: Record<string, ModelBudget> = {
  personal: { includedTokens: 1_000_000 },
  // Small, to reach: overage billed from 100 tokens, refused from 400.
  pro: { includedTokens: 100, overageCeiling: 400 },
};

let db: TestDatabase;
let fake: FakeModelProvider;
let stripe: FakeStripe;
let customers: CustomerStore;
let store: ModelAccessStore;
let gateway: ModelGateway;
let base: string;
let reporter: MeterEventReporter;
const metrics = new Metrics({ defaultMetrics: false });
const logLines: string[] = [];
/** Every answer the gateway gave in this file: status line, headers and body. */
const answers: string[] = [];
/** The source check: who may not call from where (the real one is tested against Docker). */
const refusedSources = new Set<string>();
const sources: SourceCheck = { allows: async (customer) => !refusedSources.has(customer) };

beforeAll(async () => {
  db = await createTestDatabase();
  fake = await startFakeModelProvider({ openaiKey: OPENAI_KEY, anthropicKey: ANTHROPIC_KEY });
  stripe = await startFakeStripe();
  const box = testSecretBox();
  customers = new CustomerStore(db.handle, box);
  store = new ModelAccessStore(db.handle, box);
  const logger = createLogger({
    level: 'debug',
    destination: new Writable({
      write(chunk: Buffer, _encoding, callback) {
        logLines.push(chunk.toString());
        callback();
      },
    }),
  });
  const fast = { minDelayMs: 1, maxDelayMs: 5, failureThreshold: 3, halfOpenAfterMs: 60_000 };
  const policies = new Policies({
    metrics,
    overrides: { openai: fast, anthropic: fast, stripe: { minDelayMs: 1, maxDelayMs: 5 } },
  });
  reporter = new MeterEventReporter({
    store,
    stripe: createStripeClient({ secretKey: FAKE_SECRET_KEY, apiBase: stripe.url }),
    eventName: 'blytz_model_tokens',
    guard: policies.guard('stripe'),
    metrics,
    logger,
  });
  gateway = new ModelGateway({
    store,
    upstreams: {
      openai: new Upstream('openai', { baseUrl: fake.url, apiKey: OPENAI_KEY }),
      anthropic: new Upstream('anthropic', { baseUrl: fake.url, apiKey: ANTHROPIC_KEY }),
    },
    guards: { openai: policies.guard('openai'), anthropic: policies.guard('anthropic') },
    sources,
    budgets: BUDGETS,
    allowedModels: MODELS,
    metrics,
    logger,
  });
  const address = await gateway.listen('127.0.0.1', 0);
  base = `http://127.0.0.1:${address.port}`;
});

afterAll(async () => {
  await gateway?.close();
  await fake?.close();
  await stripe?.close();
  await db?.drop();
});

/** A customer on included access (plan personal unless said), with its credential. */
async function customer(
  plan: 'personal' | 'pro' = 'personal',
  spec: Record<string, unknown> = {},
): Promise<{ name: string; key: string }> {
  const name = uniqueName('mg');
  await customers.apply(desiredCustomer(name, { plan, ...spec }));
  const key = await store.ensureCredential(name);
  if (!key) throw new Error('no credential');
  return { name, key };
}

const PATHS: Record<FakeApi, string> = {
  'openai-chat': '/openai/v1/chat/completions',
  'openai-responses': '/openai/v1/responses',
  'anthropic-messages': '/anthropic/v1/messages',
};

function bodyFor(api: FakeApi, stream: boolean, text = 'Say hello'): Record<string, unknown> {
  if (api === 'openai-chat') return { model: 'gpt-5-mini', stream, messages: [{ role: 'user', content: text }] };
  if (api === 'openai-responses') return { model: 'gpt-5-mini', stream, input: text };
  return { model: 'claude-haiku-4-5', stream, max_tokens: 256, messages: [{ role: 'user', content: text }] };
}

interface Answer {
  status: number;
  headers: Headers;
  text: string;
  json(): unknown;
}

/** One request as the assistant's SDK sends it (Bearer for OpenAI, x-api-key for Anthropic). */
async function call(api: FakeApi, key: string | undefined, body: unknown, path = PATHS[api]): Promise<Answer> {
  const headers: Record<string, string> = { 'content-type': 'application/json' };
  if (key && api === 'anthropic-messages') {
    headers['x-api-key'] = key;
    headers['anthropic-version'] = '2023-06-01';
  } else if (key) {
    headers['authorization'] = `Bearer ${key}`;
  }
  const res = await fetch(`${base}${path}`, { method: 'POST', headers, body: JSON.stringify(body) });
  const text = await res.text();
  answers.push(`${res.status} ${JSON.stringify([...res.headers])} ${text}`);
  return { status: res.status, headers: res.headers, text, json: () => JSON.parse(text) as unknown };
}

async function usageOf(name: string) {
  return store.usage(name, periodKey(new Date()));
}

async function ledger(name: string) {
  return sql<{ id: string; input_tokens: string; output_tokens: string; overage_tokens: string }>`
    SELECT id, input_tokens, output_tokens, overage_tokens FROM model_requests WHERE customer = ${name} ORDER BY recorded_at
  `.execute(db.handle.db);
}

/** Usage the fake reported for requests from index `from` on. */
function reportedSince(from: number) {
  const total = { inputTokens: 0, cachedInputTokens: 0, outputTokens: 0 };
  for (const r of fake.requests.slice(from)) {
    if (!r.usage) continue;
    total.inputTokens += r.usage.inputTokens;
    total.cachedInputTokens += r.usage.cachedInputTokens;
    total.outputTokens += r.usage.outputTokens;
  }
  return total;
}

describe('a customer on the default model', () => {
  it('gets replies on every API, streamed and not, and exactly the usage the provider reported is recorded', async () => {
    const { name, key } = await customer();
    const from = fake.requests.length;
    fake.cachedInputTokens = 3;
    try {
      for (const api of ['openai-chat', 'openai-responses', 'anthropic-messages'] as const) {
        for (const stream of [false, true]) {
          const answer = await call(api, key, bodyFor(api, stream));
          expect(answer.status, `${api} stream=${stream}: ${answer.text}`).toBe(200);
          if (stream) {
            expect(answer.headers.get('content-type')).toContain('text/event-stream');
            // The words arrive as the provider streamed them (one per event).
            expect(answer.text).toContain('"fake "');
          } else {
            expect(answer.text).toContain('Hello from the fake model provider.');
          }
          expect(answer.headers.get('x-blytz-request-id')).toMatch(/^[0-9a-f-]{36}$/);
        }
      }
    } finally {
      fake.cachedInputTokens = 0;
    }
    const reported = reportedSince(from);
    expect(reported.inputTokens).toBeGreaterThan(0);
    // Recorded once each answer has gone out.
    const usage = await waitFor(async () => {
      const current = await usageOf(name);
      return current.requests === 6 && current;
    });
    expect(usage).toEqual({ period: periodKey(new Date()), requests: 6, ...reported });
    expect((await ledger(name)).rows).toHaveLength(6);
  });

  it('an OpenAI chat stream is asked for its usage even when the assistant did not ask', async () => {
    const { name, key } = await customer();
    const from = fake.requests.length;
    await call('openai-chat', key, bodyFor('openai-chat', true));
    expect(fake.requests[from]?.body).toMatchObject({ stream_options: { include_usage: true } });
    await waitFor(async () => (await usageOf(name)).requests === 1);
    expect(await usageOf(name)).toMatchObject(reportedSince(from));
  });

  it('passes a stream on as it arrives, not once it is complete', async () => {
    const { name, key } = await customer();
    fake.faults.push('stall');
    const firstChunk = await new Promise<{ res: IncomingMessage; chunk: string }>((resolve, reject) => {
      const req = httpRequest(`${base}${PATHS['anthropic-messages']}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'x-api-key': key, 'anthropic-version': '2023-06-01' },
      });
      req.on('response', (res) => res.once('data', (chunk: Buffer) => resolve({ res, chunk: chunk.toString() })));
      req.on('error', reject);
      req.end(JSON.stringify(bodyFor('anthropic-messages', true)));
    });
    // The provider is still holding the rest of its answer, and the customer already has the start.
    expect(firstChunk.chunk).toContain('message_start');
    const rest: string[] = [];
    const ended = new Promise<void>((resolve) => {
      firstChunk.res.on('data', (c: Buffer) => rest.push(c.toString()));
      firstChunk.res.on('end', resolve);
    });
    fake.releaseStalls();
    await ended;
    expect(rest.join('')).toContain('message_stop');
    await waitFor(async () => (await usageOf(name)).requests === 1);
  });

  it('a customer who leaves mid-stream is still metered for the whole answer', async () => {
    const { name, key } = await customer();
    const from = fake.requests.length;
    fake.eventDelayMs = 15;
    try {
      await new Promise<void>((resolve, reject) => {
        const req = httpRequest(`${base}${PATHS['openai-chat']}`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', authorization: `Bearer ${key}` },
        });
        req.on('response', (res) =>
          res.once('data', () => {
            req.destroy();
            resolve();
          }),
        );
        req.on('error', () => {});
        req.on('close', resolve);
        setTimeout(() => reject(new Error('no first chunk')), 10_000).unref();
        req.end(JSON.stringify(bodyFor('openai-chat', true)));
      });
      await waitFor(async () => (await usageOf(name)).requests === 1);
    } finally {
      fake.eventDelayMs = 0;
    }
    const reported = reportedSince(from);
    expect(reported.outputTokens).toBeGreaterThan(0);
    expect(await usageOf(name)).toMatchObject(reported);
  });
});

describe('a customer who leaves before the provider answers', () => {
  it('is still metered for the whole answer, and its place in flight is given back', async () => {
    const { name, key } = await customer();
    // The gateway's own handler on a server of the test's, to know when the customer's leaving was seen.
    let seen!: () => void;
    const left = new Promise<void>((resolve) => (seen = resolve));
    const server = createServer((req, res) => {
      res.on('close', seen);
      gateway.handle(req, res);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const { port } = server.address() as { port: number };
    const inFlight = async () =>
      (await metrics.modelInFlight.get()).values.find((v) => v.labels.api === 'anthropic-messages')?.value ?? 0;
    const before = await inFlight();
    const from = fake.requests.length;
    fake.faults.push('hold');
    try {
      const req = httpRequest(`http://127.0.0.1:${port}${PATHS['anthropic-messages']}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'x-api-key': key, 'anthropic-version': '2023-06-01' },
      });
      req.on('error', () => {});
      req.end(JSON.stringify(bodyFor('anthropic-messages', true)));
      await waitFor(() => fake.requests.length > from);
      req.destroy();
      await left;
      // Only now does the provider answer: the stream is read to its end all the same.
      fake.releaseStalls();
      await waitFor(async () => (await usageOf(name)).requests === 1);
      await waitFor(async () => (await inFlight()) === before);
    } finally {
      fake.releaseStalls();
      server.close();
    }
    expect(await usageOf(name)).toMatchObject(reportedSince(from));
  });
});

describe("the provider's errors", () => {
  it('are relayed as the provider sent them, status, body and retry hints, and nothing is metered', async () => {
    const { name, key } = await customer();
    const rateLimited = {
      error: { message: 'Rate limit reached for gpt-5-mini', type: 'requests', param: null, code: 'rate_limit_exceeded' },
    };
    fake.faults.push({ status: 429, body: rateLimited, headers: { 'retry-after': '7', 'x-ratelimit-remaining-requests': '0' } });
    const limited = await call('openai-chat', key, bodyFor('openai-chat', true));
    expect(limited.status).toBe(429);
    expect(limited.json()).toEqual(rateLimited);
    expect(limited.headers.get('retry-after')).toBe('7');
    // The platform account's own rate-limit state stays behind.
    expect(limited.headers.get('x-ratelimit-remaining-requests')).toBeNull();

    fake.faults.push({ status: 529 });
    const overloaded = await call('anthropic-messages', key, bodyFor('anthropic-messages', false));
    expect(overloaded.status).toBe(529);
    expect(overloaded.json()).toMatchObject({ type: 'error', error: { type: 'overloaded_error' } });

    const invalid = { type: 'error', error: { type: 'invalid_request_error', message: 'max_tokens: must be at least 1' } };
    fake.faults.push({ status: 400, body: invalid });
    const refused = await call('anthropic-messages', key, bodyFor('anthropic-messages', true));
    expect(refused.status).toBe(400);
    expect(refused.json()).toEqual(invalid);

    expect((await usageOf(name)).requests).toBe(0);
  });

  it("a refusal of the platform's own key is the gateway's outage, not the customer's bad key", async () => {
    const { key } = await customer();
    fake.faults.push({ status: 401 });
    const answer = await call('openai-chat', key, bodyFor('openai-chat', false));
    expect(answer.status).toBe(503);
    expect(answer.json()).toMatchObject({ error: { type: 'server_error' } });
  });

  it('retries are not counted twice: a failed attempt has no usage, the retry is metered once, a repeated write changes nothing', async () => {
    const { name, key } = await customer();
    const from = fake.requests.length;
    // The provider drops the connection after taking the request: the gateway does not send it
    // again itself (it may have been processed), the assistant's SDK retries.
    fake.faults.push('reset');
    const first = await call('openai-chat', key, bodyFor('openai-chat', false));
    expect(first.status).toBe(503);
    const retry = await call('openai-chat', key, bodyFor('openai-chat', false));
    expect(retry.status).toBe(200);
    expect(fake.requests.length - from).toBe(2);
    const reported = reportedSince(from);
    await waitFor(async () => (await usageOf(name)).requests === 1);
    expect(await usageOf(name)).toMatchObject({ requests: 1, ...reported });

    // The same answer recorded again (a write retried after its commit was lost) counts once.
    const [row] = (await ledger(name)).rows;
    const again = await store.record(
      {
        id: row!.id,
        customer: name,
        period: periodKey(new Date()),
        api: 'openai-chat',
        model: 'gpt-5-mini',
        usage: { ...reported },
      },
      BUDGETS['personal']!,
    );
    expect(again).toEqual({ recorded: false, overageTokens: 0 });
    expect(await usageOf(name)).toMatchObject({ requests: 1, ...reported });
  });
});

describe('budgets', () => {
  it("past the monthly limit a customer gets the provider's quota answer, others are unaffected, overage goes to Stripe once", async () => {
    const spender = await customer('pro');
    const other = await customer('pro');
    await sql`UPDATE customers SET stripe_customer_id = ${'cus_' + spender.name} WHERE name = ${spender.name}`.execute(
      db.handle.db,
    );
    let answered = 0;
    let refusal: Answer;
    for (;;) {
      const api = answered % 2 === 0 ? 'openai-chat' : 'anthropic-messages';
      const answer = await call(api, spender.key, bodyFor(api, true));
      if (answer.status !== 200) {
        refusal = answer;
        break;
      }
      answered++;
      expect(answered).toBeLessThan(100);
      // Each answer's usage is in before the next request is judged.
      await waitFor(async () => (await usageOf(spender.name)).requests === answered);
    }
    // The provider's exhausted-quota answer, in the format of the API asked.
    if (answered % 2 === 0) {
      expect(refusal.status, refusal.text).toBe(429);
      expect(refusal.json()).toMatchObject({ error: { type: 'insufficient_quota', code: 'insufficient_quota' } });
    } else {
      expect(refusal.status, refusal.text).toBe(400);
    }
    const used = await usageOf(spender.name);
    expect(used.inputTokens + used.outputTokens).toBeGreaterThanOrEqual(400);
    // Refused before the last request's tokens could have been under the limit.
    const lastRow = (await ledger(spender.name)).rows.at(-1)!;
    expect(used.inputTokens + used.outputTokens - Number(lastRow.input_tokens) - Number(lastRow.output_tokens)).toBeLessThan(400);

    // Anthropic's usage-limit answer, with the day access returns.
    const anthropic = await call('anthropic-messages', spender.key, bodyFor('anthropic-messages', false));
    expect(anthropic.status).toBe(400);
    expect(anthropic.json()).toMatchObject({
      type: 'error',
      error: {
        type: 'invalid_request_error',
        message: expect.stringMatching(
          /^You have reached your specified API usage limits: this assistant's monthly usage limit is used up\. You will regain access on \d{4}-\d{2}-01 at 00:00 UTC\.$/,
        ),
      },
    });
    // Nothing of the refused requests reached the provider or was metered.
    expect((await usageOf(spender.name)).requests).toBe(answered);

    const openai = await call('openai-chat', spender.key, bodyFor('openai-chat', false));
    expect(openai.status).toBe(429);
    expect(openai.json()).toMatchObject({ error: { type: 'insufficient_quota', code: 'insufficient_quota' } });
    // Another customer on the same plan goes on.
    expect((await call('openai-chat', other.key, bodyFor('openai-chat', false))).status).toBe(200);

    // Overage (tokens past the included 100) is reported to Stripe, once per request, summing exactly.
    const overage = (await ledger(spender.name)).rows.reduce((sum, r) => sum + Number(r.overage_tokens), 0);
    expect(overage).toBe(used.inputTokens + used.outputTokens - 100);
    await reporter.runOnce();
    await reporter.runOnce(); // a second pass sends nothing again
    const events = [...stripe.meterEvents.values()].filter((e) => e.payload['stripe_customer_id'] === `cus_${spender.name}`);
    expect(events.reduce((sum, e) => sum + Number(e.payload['value']), 0)).toBe(overage);
    expect(stripe.requests.filter((r) => r.path === '/v1/billing/meter_events')).toHaveLength(events.length);
    expect(events.every((e) => e.event_name === 'blytz_model_tokens')).toBe(true);
  });

  it('overage of a customer without a Stripe customer is kept as skipped, not sent forever', async () => {
    const spender = await customer('pro');
    let answered = 0;
    while ((await call('openai-chat', spender.key, bodyFor('openai-chat', false))).status === 200) {
      answered++;
      await waitFor(async () => (await usageOf(spender.name)).requests === answered);
    }
    const { skipped } = await reporter.runOnce();
    expect(skipped).toBeGreaterThan(0);
    const rows = await sql<{ stripe_report: string | null }>`
      SELECT stripe_report FROM model_requests WHERE customer = ${spender.name} AND overage_tokens > 0
    `.execute(db.handle.db);
    expect(rows.rows.every((r) => r.stripe_report === 'skipped: no Stripe customer')).toBe(true);
  });
});

describe('credentials', () => {
  it("a suspended customer's credential stops at once, and works again on resume; a cancelled one is deleted", async () => {
    const { name, key } = await customer();
    expect((await call('openai-chat', key, bodyFor('openai-chat', false))).status).toBe(200);
    await customers.setState(name, 'suspended');
    const suspended = await call('openai-chat', key, bodyFor('openai-chat', false));
    expect(suspended.status).toBe(401);
    expect(suspended.json()).toMatchObject({ error: { code: 'invalid_api_key' } });
    await customers.setState(name, 'active');
    expect((await call('anthropic-messages', key, bodyFor('anthropic-messages', false))).status).toBe(200);
    await customers.setState(name, 'cancelled');
    expect((await call('anthropic-messages', key, bodyFor('anthropic-messages', false))).status).toBe(401);
    expect(await store.credentialIssuedAt(name)).toBeUndefined();
    expect(await store.ensureCredential(name)).toBeUndefined();
  });

  it('rotation: the old credential is refused at once, the new one works', async () => {
    const { name, key } = await customer();
    const rotated = await store.rotateCredential(name);
    expect(rotated).toBeDefined();
    expect(rotated).not.toBe(key);
    expect((await call('openai-chat', key, bodyFor('openai-chat', false))).status).toBe(401);
    expect((await call('openai-chat', rotated, bodyFor('openai-chat', false))).status).toBe(200);
    expect(await store.ensureCredential(name)).toBe(rotated);
    expect(await store.rotateCredential(uniqueName('nobody'))).toBeUndefined();
  });

  it('a customer on their own key cannot spend the platform budget through the gateway', async () => {
    const { name, key } = await customer('personal', {
      model: { provider: 'openai', apiKey: 'sk-customer-own-key-0123456789abcdef' },
    });
    const answer = await call('openai-chat', key, bodyFor('openai-chat', false));
    expect(answer.status).toBe(401);
    expect((await usageOf(name)).requests).toBe(0);
  });

  it('is refused from outside its own container, before anything reaches the provider', async () => {
    const { name, key } = await customer();
    refusedSources.add(name);
    const from = fake.requests.length;
    try {
      const answer = await call('anthropic-messages', key, bodyFor('anthropic-messages', false));
      expect(answer.status).toBe(403);
      expect(answer.json()).toMatchObject({ type: 'error', error: { type: 'permission_error' } });
    } finally {
      refusedSources.delete(name);
    }
    expect(fake.requests.length).toBe(from);
  });

  it('no key, a wrong key, or a key of the wrong shape: 401 in the API’s format', async () => {
    for (const key of [undefined, 'blytz-mk-' + 'A'.repeat(43), OPENAI_KEY]) {
      expect((await call('openai-chat', key, bodyFor('openai-chat', false))).status).toBe(401);
      expect((await call('anthropic-messages', key, bodyFor('anthropic-messages', false))).json()).toMatchObject({
        error: { type: 'authentication_error' },
      });
    }
  });
});

describe('what is forwarded', () => {
  it('only the metered endpoints and allowed models; the model list is answered locally', async () => {
    const { key } = await customer();
    const from = fake.requests.length;
    expect((await call('openai-chat', key, { model: 'gpt-5-pro', messages: [] })).json()).toMatchObject({
      error: { code: 'model_not_found' },
    });
    expect((await call('openai-chat', key, { model: 'gpt-5-mini' }, '/openai/v1/files')).status).toBe(404);
    expect((await call('anthropic-messages', key, { requests: [] }, '/anthropic/v1/messages/batches')).status).toBe(404);
    expect((await call('openai-responses', key, { ...bodyFor('openai-responses', false), background: true })).status).toBe(400);
    expect((await fetch(`${base}/anthropic/v1/models`)).status).toBe(401);
    const list = await fetch(`${base}/anthropic/v1/models`, { headers: { 'x-api-key': key } });
    expect(await list.json()).toMatchObject({ data: [{ id: 'claude-haiku-4-5' }] });
    expect(fake.requests.length).toBe(from);
  });

  it('after repeated provider failures the breaker answers 503 without calling the provider', async () => {
    const { key } = await customer();
    for (let i = 0; i < 3; i++) fake.faults.push({ status: 500 });
    for (let i = 0; i < 3; i++)
      expect((await call('openai-responses', key, bodyFor('openai-responses', false))).status).toBe(500);
    const from = fake.requests.length;
    const open = await call('openai-chat', key, bodyFor('openai-chat', false));
    expect(open.status).toBe(503);
    expect(open.json()).toMatchObject({
      error: { type: 'server_error', message: expect.stringContaining('too many recent failures') },
    });
    expect(fake.requests.length).toBe(from);
    // Anthropic has its own breaker.
    expect((await call('anthropic-messages', key, bodyFor('anthropic-messages', false))).status).toBe(200);
  });
});

describe('a customer sending many bodies at once', () => {
  it('is held to its in-flight limit while the bodies are still coming, so no one customer can fill the memory with them', async () => {
    // Anthropic: the test before this one left OpenAI's breaker open.
    const { key } = await customer();
    const inFlight = async () =>
      (await metrics.modelInFlight.get()).values.find((v) => v.labels.api === 'anthropic-messages')?.value ?? 0;
    const before = await inFlight();
    // Eight uploads (the default limit) that declare 20 MiB and send one byte: each could make the
    // gateway hold 20 MiB, and with no limit before the body is read, a thousand of them 20 GiB.
    const uploads = Array.from({ length: 8 }, () => {
      const req = httpRequest(`${base}${PATHS['anthropic-messages']}`, {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          'x-api-key': key,
          'anthropic-version': '2023-06-01',
          'content-length': String(20 * 1024 * 1024),
        },
      });
      req.on('error', () => {});
      req.write('{');
      return req;
    });
    try {
      await waitFor(async () => (await inFlight()) === before + 8);
      const refused = await call('anthropic-messages', key, bodyFor('anthropic-messages', false));
      expect(refused.status).toBe(429);
    } finally {
      for (const req of uploads) req.destroy();
    }
    // A caller who leaves before the end of its body gives its place back.
    await waitFor(async () => (await inFlight()) === before);
    expect((await call('anthropic-messages', key, bodyFor('anthropic-messages', false))).status).toBe(200);
  });
});

describe('a body nested a million levels deep', () => {
  it('is refused before it is parsed, and nothing reaches the provider', async () => {
    const { key } = await customer();
    const from = fake.requests.length;
    const depth = 1_000_000;
    const body = `{"model":"claude-haiku-4-5","max_tokens":5,"messages":${'['.repeat(depth)}${']'.repeat(depth)}}`;
    const res = await fetch(`${base}${PATHS['anthropic-messages']}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-api-key': key, 'anthropic-version': '2023-06-01' },
      body,
    });
    expect(res.status).toBe(400);
    expect(await res.json()).toMatchObject({ error: { message: 'The request body is nested too deeply.' } });
    expect(fake.requests.length).toBe(from);
  });
});

describe('secrets', () => {
  it("the platform's keys went to the provider and appear in no answer and no log line", async () => {
    expect(fake.requests.some((r) => r.headers['authorization'] === `Bearer ${OPENAI_KEY}`)).toBe(true);
    expect(fake.requests.some((r) => r.headers['x-api-key'] === ANTHROPIC_KEY)).toBe(true);
    expect(answers.length).toBeGreaterThan(20);
    expect(logLines.length).toBeGreaterThan(20);
    for (const text of [...answers, ...logLines]) {
      expect(text).not.toContain(OPENAI_KEY);
      expect(text).not.toContain(ANTHROPIC_KEY);
      expect(text).not.toMatch(/blytz-mk-[A-Za-z0-9_-]{20,}/);
    }
  });

  it("the customer's credential is never sent to the provider", () => {
    for (const r of fake.requests) expect(JSON.stringify(r.headers)).not.toMatch(/blytz-mk-/);
  });
});
