import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PAST_DUE_WARNING } from '../../src/billing/event-mapping.js';
import { MemoryRateLimitBackend } from '../../src/store/rate-limit-counters.js';
import { CustomerStore } from '../../src/store/customer-store.js';
import { openPostgres } from '../../src/store/database.js';
import type { CustomerRow } from '../../src/store/schema.js';
import type { SecretBox } from '../../src/store/secret-box.js';
import {
  postJson,
  signupBody,
  type Json,
  startBillingApp,
  WEBHOOK_SECRET,
  type BillingApp,
  type BillingAppOptions,
} from '../support/billing-app.js';
import {
  completedSessionObject,
  invoiceObject,
  signatureHeader,
  startFakeStripe,
  stripeEvent,
  subscriptionObject,
  type FakeSession,
  type FakeStripe,
} from '../support/fake-stripe.js';
import { startFakeTelegram, type FakeTelegram } from '../support/fake-telegram.js';
import { testSecretBox, uniqueName } from '../support/fixtures.js';
import { adminUrl, createTestDatabase, type TestDatabase } from '../support/postgres.js';
import { waitFor } from '../support/wait-for.js';

let db: TestDatabase;
let box: SecretBox;
let stripe: FakeStripe;
let telegram: FakeTelegram;
let customers: CustomerStore;
let app: BillingApp;
const extraApps: BillingApp[] = [];

beforeAll(async () => {
  [db, stripe, telegram] = await Promise.all([createTestDatabase(), startFakeStripe(), startFakeTelegram()]);
  box = testSecretBox();
  customers = new CustomerStore(db.handle, box);
  app = await startBillingApp({ handle: db.handle, box, stripe, telegram });
});

afterAll(async () => {
  await Promise.all([app, ...extraApps].map((a) => a.close()));
  await Promise.all([db.drop(), stripe.close(), telegram.close()]);
});

async function otherApp(options: Partial<BillingAppOptions>): Promise<BillingApp> {
  const started = await startBillingApp({ handle: db.handle, box, stripe, telegram, ...options });
  extraApps.push(started);
  return started;
}

interface Signed {
  name: string;
  session: FakeSession;
}

/** A customer made the way real ones are: through the signup API and the (fake) Stripe. */
async function signUp(): Promise<Signed> {
  const res = await postJson(`${app.url}/api/signup`, signupBody(`${uniqueName('hook')}@example.com`));
  expect(res.status).toBe(201);
  const name = res.body.customerId as string;
  const session = [...stripe.sessions.values()].find((s) => s.client_reference_id === name) as FakeSession;
  return { name, session };
}

interface Paid extends Signed {
  customer: string;
  subscription: string;
}

const now = () => Math.floor(Date.now() / 1000);

async function signUpAndPay(created = now() - 1000): Promise<Paid> {
  const signed = await signUp();
  const customer = `cus_${randomBytes(6).toString('hex')}`;
  const subscription = `sub_${randomBytes(6).toString('hex')}`;
  await expectDelivered(
    stripeEvent('checkout.session.completed', completedSessionObject(signed.session, { customer, subscription }), { created }),
  );
  expect((await row(signed.name)).state).toBe('active');
  return { ...signed, customer, subscription };
}

async function deliver(
  event: Record<string, unknown> | string,
  options: { secret?: string; timestamp?: number; signature?: string | null; target?: BillingApp } = {},
) {
  const payload = typeof event === 'string' ? event : JSON.stringify(event);
  const signature =
    options.signature === undefined
      ? signatureHeader(payload, options.secret ?? WEBHOOK_SECRET, options.timestamp)
      : options.signature;
  const response = await fetch(`${(options.target ?? app).url}/api/webhooks/stripe`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(signature === null ? {} : { 'stripe-signature': signature }) },
    body: payload,
  });
  return { status: response.status, body: (await response.json()) as Json, headers: response.headers };
}

async function expectDelivered(event: Record<string, unknown>): Promise<void> {
  const res = await deliver(event);
  expect(res.status).toBe(200);
  expect(res.body).toEqual({ received: true });
}

async function row(name: string): Promise<CustomerRow & { billing_suspended: boolean }> {
  const found = await db.handle.db.selectFrom('customers').selectAll().where('name', '=', name).executeTakeFirstOrThrow();
  return found as CustomerRow & { billing_suspended: boolean };
}

async function ledger(eventId: string) {
  return db.handle.db.selectFrom('webhook_events').selectAll().where('event_id', '=', eventId).executeTakeFirst();
}

const subscriptionEvent = (p: Paid, type: string, status: string, created: number) =>
  stripeEvent(
    `customer.subscription.${type}`,
    subscriptionObject({ id: p.subscription, customer: p.customer, status, name: p.name }),
    { created },
  );

describe('POST /api/webhooks/stripe: signatures', () => {
  it.each<[string, { secret?: string; timestamp?: number; signature?: string | null }]>([
    ['missing', { signature: null }],
    ['garbage', { signature: 'not-a-signature' }],
    ['made with another secret', { secret: 'whsec_someone_else_entirely' }],
    ['expired (older than the 300 s tolerance)', { timestamp: now() - 600 }],
    ['for another payload', { signature: signatureHeader('{"id":"evt_other"}', WEBHOOK_SECRET) }],
  ])('rejects a signature that is %s with 400 and stores nothing', async (_case, options) => {
    const { name, session } = await signUp();
    const event = stripeEvent('checkout.session.completed', completedSessionObject(session));
    const res = await deliver(event, options);
    expect(res.status).toBe(400);
    expect(res.body.error.code).toMatch(/signature/);
    expect(await ledger(event['id'] as string)).toBeUndefined();
    expect((await row(name)).state).toBe('pending');
  });

  it('counts rejected signatures in the metric', async () => {
    await deliver(stripeEvent('invoice.paid', {}), { signature: 'bad' });
    const metric = await app.metrics.registry.getSingleMetricAsString('blytz_stripe_webhook_events_total');
    expect(metric).toMatch(/blytz_stripe_webhook_events_total\{type="unknown",outcome="invalid_signature"\} [1-9]/);
  });
});

describe('POST /api/webhooks/stripe: events', () => {
  it('activates on checkout.session.completed, storing the Stripe ids, and counts it', async () => {
    const { name, session } = await signUp();
    const event = stripeEvent(
      'checkout.session.completed',
      completedSessionObject(session, { customer: 'cus_a1', subscription: 'sub_a1' }),
    );
    await expectDelivered(event);
    expect(await row(name)).toMatchObject({
      state: 'active',
      stripe_customer_id: 'cus_a1',
      stripe_subscription_id: 'sub_a1',
      stripe_checkout_session_id: session.id,
    });
    expect(await ledger(event['id'] as string)).toMatchObject({
      type: 'checkout.session.completed',
      customer: name,
      outcome: 'applied',
    });
    const metric = await app.metrics.registry.getSingleMetricAsString('blytz_stripe_webhook_events_total');
    expect(metric).toContain('blytz_stripe_webhook_events_total{type="checkout.session.completed",outcome="applied"}');
    // One line for the webhook: the request's own, saying what the event did.
    const mentions = () => app.logs.filter((l) => l.includes(event['id'] as string));
    const lines = await waitFor(() => (mentions().length > 0 ? mentions() : undefined));
    expect(lines.map((l) => JSON.parse(l) as unknown)).toEqual([
      expect.objectContaining({
        msg: 'POST /api/webhooks/stripe 200',
        eventId: event['id'],
        type: 'checkout.session.completed',
        outcome: 'applied',
        customer: name,
      }),
    ]);
  });

  it('leaves an unpaid checkout pending', async () => {
    const { name, session } = await signUp();
    await expectDelivered(
      stripeEvent('checkout.session.completed', completedSessionObject(session, { paymentStatus: 'unpaid' })),
    );
    expect((await row(name)).state).toBe('pending');
  });

  it('applies the same event delivered 10 times concurrently exactly once', async () => {
    const { name, session } = await signUp();
    const before = await row(name);
    const event = stripeEvent('checkout.session.completed', completedSessionObject(session));
    const results = await Promise.all(Array.from({ length: 10 }, () => deliver(event)));
    expect(results.map((r) => r.status)).toEqual(Array(10).fill(200));
    const after = await row(name);
    expect(after.state).toBe('active');
    expect(Number(after.resource_version)).toBe(Number(before.resource_version) + 1);
    const events = await customers.listEvents(name);
    expect(events.find((e) => e.reason === 'PaymentConfirmed')?.count).toBe(1);
    const rows = await db.handle.db
      .selectFrom('webhook_events')
      .selectAll()
      .where('event_id', '=', event['id'] as string)
      .execute();
    expect(rows).toHaveLength(1);
    const metric = await app.metrics.registry.getSingleMetricAsString('blytz_stripe_webhook_events_total');
    expect(metric).toMatch(/type="checkout.session.completed",outcome="duplicate"\} (9|[1-9]\d+)/);
  });

  it('expires the pending signup on checkout.session.expired', async () => {
    const { name, session } = await signUp();
    await expectDelivered(
      stripeEvent('checkout.session.expired', {
        ...completedSessionObject(session),
        status: 'expired',
        customer: null,
        subscription: null,
      }),
    );
    const expired = await row(name);
    expect(expired.state).toBe('pending');
    expect(new Date(expired.pending_expires_at as Date).getTime()).toBeLessThanOrEqual(Date.now());
  });

  const CASES: Array<[string, string, string, string | null]> = [
    ['updated', 'active', 'active', null],
    ['updated', 'trialing', 'active', null],
    ['updated', 'past_due', 'active', PAST_DUE_WARNING],
    ['updated', 'unpaid', 'suspended', null],
    ['updated', 'paused', 'suspended', null],
    ['updated', 'incomplete_expired', 'suspended', null],
    ['updated', 'canceled', 'cancelled', null],
    ['updated', 'incomplete', 'active', null],
    ['created', 'trialing', 'active', null],
    ['created', 'unpaid', 'suspended', null],
    ['paused', 'paused', 'suspended', null],
    ['resumed', 'active', 'active', null],
    ['deleted', 'canceled', 'cancelled', null],
  ];
  it.each(CASES)('customer.subscription.%s with status %s -> %s', async (type, status, state, warning) => {
    const paid = await signUpAndPay();
    await expectDelivered(subscriptionEvent(paid, type, status, now()));
    const after = await row(paid.name);
    expect(after.state).toBe(state);
    expect(after.billing_warning).toBe(warning);
    expect(after.billing_suspended).toBe(state === 'suspended');
  });

  it('lifts a billing suspension on invoice.paid, but not an operator suspension', async () => {
    const paid = await signUpAndPay();
    await expectDelivered(subscriptionEvent(paid, 'updated', 'unpaid', now() - 10));
    expect((await row(paid.name)).state).toBe('suspended');
    await expectDelivered(
      stripeEvent('invoice.paid', invoiceObject({ subscription: paid.subscription, customer: paid.customer, name: paid.name }), {
        created: now(),
      }),
    );
    expect((await row(paid.name)).state).toBe('active');

    const operator = await signUpAndPay();
    await customers.setState(operator.name, 'suspended');
    await expectDelivered(
      stripeEvent('invoice.paid', invoiceObject({ subscription: operator.subscription, customer: operator.customer }), {
        created: now(),
      }),
    );
    expect((await row(operator.name)).state).toBe('suspended');
  });

  it('records invoice.payment_failed as a warning event without suspending', async () => {
    const paid = await signUpAndPay();
    await expectDelivered(
      stripeEvent(
        'invoice.payment_failed',
        invoiceObject({ subscription: paid.subscription, customer: paid.customer, attemptCount: 2 }),
      ),
    );
    expect((await row(paid.name)).state).toBe('active');
    const events = await customers.listEvents(paid.name);
    expect(events.find((e) => e.reason === 'PaymentFailed')).toMatchObject({ type: 'Warning', count: 1 });
  });

  it('handles deleted delivered before an older updated: cancelled, the late one recorded as stale', async () => {
    const paid = await signUpAndPay(now() - 100);
    const deleted = subscriptionEvent(paid, 'deleted', 'canceled', now() - 10);
    const updated = subscriptionEvent(paid, 'updated', 'active', now() - 50);
    await expectDelivered(deleted);
    await expectDelivered(updated);
    expect((await row(paid.name)).state).toBe('cancelled');
    expect(await ledger(updated['id'] as string)).toMatchObject({ outcome: 'stale', customer: paid.name });
  });

  it('answers 200 and records unknown customers and unhandled types', async () => {
    const unknown = stripeEvent(
      'customer.subscription.updated',
      subscriptionObject({ id: 'sub_nobody', customer: 'cus_nobody', status: 'active', name: 'nobody-here' }),
    );
    await expectDelivered(unknown);
    expect(await ledger(unknown['id'] as string)).toMatchObject({ outcome: 'unknown_customer', customer: null });
    const other = stripeEvent('charge.succeeded', { id: 'ch_1', object: 'charge' });
    await expectDelivered(other);
    expect(await ledger(other['id'] as string)).toMatchObject({ outcome: 'ignored', type: 'charge.succeeded' });
  });

  it('records (200) rather than fails on an event whose Stripe ids belong to another customer', async () => {
    const first = await signUpAndPay();
    const { name, session } = await signUp();
    const event = stripeEvent('checkout.session.completed', completedSessionObject(session, { customer: first.customer }));
    await expectDelivered(event);
    expect((await row(name)).state).toBe('pending');
    expect(await ledger(event['id'] as string)).toMatchObject({ outcome: 'id_conflict', customer: name });
    expect((await customers.listEvents(name)).find((e) => e.reason === 'StripeIdConflict')?.message).toContain(first.name);
  });

  it('answers 503 when the event cannot be stored, so Stripe retries', async () => {
    const broken = openPostgres(adminUrl(`blytz_missing_${randomBytes(4).toString('hex')}`), 1);
    try {
      const down = await otherApp({ storeHandle: broken });
      const event = stripeEvent('invoice.paid', invoiceObject({ subscription: 'sub_x', customer: 'cus_x' }));
      const res = await deliver(event, { target: down });
      expect(res.status).toBe(503);
      expect(res.body.error.code).toBe('store_unavailable');
      expect(await ledger(event['id'] as string)).toBeUndefined();
      // Once the store is back, Stripe's retry of the same event is applied.
      await expectDelivered(event);
      expect(await ledger(event['id'] as string)).toBeDefined();
    } finally {
      await broken.close();
    }
  });

  it('never refuses a correctly signed event, however many; limits bad signatures per client (clock injected)', async () => {
    // Time only moves when the test says so: no window boundary can fall inside the test.
    let clock = 10 * 60_000 + 1;
    const limited = await otherApp({
      rateLimits: new MemoryRateLimitBackend(() => clock),
      webhookFailureLimit: { limit: 5, windowMs: 60_000 },
    });
    const signed = await Promise.all(
      Array.from({ length: 150 }, (_, i) => deliver(stripeEvent('charge.succeeded', { id: `ch_${i}` }), { target: limited })),
    );
    expect(signed.map((r) => r.status)).toEqual(signed.map(() => 200));

    const bad = () => deliver(stripeEvent('charge.succeeded', { id: 'ch_x' }), { target: limited, secret: 'whsec_wrong' });
    const statuses: number[] = [];
    for (let i = 0; i < 5; i++) statuses.push((await bad()).status);
    const refused = await bad();
    expect([...statuses, refused.status]).toEqual([400, 400, 400, 400, 400, 429]);
    expect(refused.body.error.code).toBe('rate_limited');
    expect(Number(refused.headers.get('retry-after'))).toBe(60);
    // The same client's correctly signed events still go through while its failures are refused.
    expect((await deliver(stripeEvent('charge.succeeded', { id: 'ch_ok' }), { target: limited })).status).toBe(200);
    expect((await deliver(stripeEvent('charge.succeeded', { id: 'ch_ok2' }), { target: limited, signature: null })).status).toBe(429);

    clock += 60_000; // the next window
    expect((await bad()).status).toBe(400);
  });

  it.each<[string, Record<string, unknown> | string]>([
    ['without an id', { type: 'invoice.paid', created: 1, data: { object: {} } }],
    ['with a created time that is not a number', { id: 'evt_x1', type: 'invoice.paid', created: 'yesterday', data: { object: {} } }],
    ['without data.object', { id: 'evt_x2', type: 'invoice.paid', created: 1, data: {} }],
    ['with data.object not an object', { id: 'evt_x3', type: 'invoice.paid', created: 1, data: { object: 'x' } }],
    ['that is a JSON array', [1, 2, 3] as unknown as Record<string, unknown>],
  ])('answers 400 (not an endless 5xx) to a correctly signed event %s, storing nothing', async (_case, body) => {
    const res = await deliver(body);
    expect(res.status).toBe(400);
    expect(res.body.error.code).toBe('malformed_event');
    const id = (body as { id?: unknown }).id;
    if (typeof id === 'string') expect(await ledger(id)).toBeUndefined();
  });
});
