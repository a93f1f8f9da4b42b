import { randomBytes } from 'node:crypto';
import { sql, type KyselyPlugin } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mapStripeEvent, type StripeEventLike } from '../../src/billing/event-mapping.js';
import { BillingStore } from '../../src/store/billing-store.js';
import { CustomerStore } from '../../src/store/customer-store.js';
import { invoiceObject, stripeEvent, subscriptionObject } from '../support/fake-stripe.js';
import { testSecretBox, uniqueName } from '../support/fixtures.js';
import { createPgliteDatabase, createTestDatabase, type TestDatabase } from '../support/postgres.js';

/**
 * The Stripe webhook ledger in the store (BillingStore.recordStripeEvent) on both databases: one
 * read, then the ledger row, the customer's change and its note in one statement; a duplicate
 * costs the read alone; races and Stripe ids another customer holds take the locked way; events
 * arriving together share their reads and writes (one statement for many).
 * test/integration/stripe-webhook.test.ts covers the same through the HTTP route.
 */

const backends = [
  { kind: 'postgres', create: createTestDatabase },
  { kind: 'pglite', create: createPgliteDatabase },
];

describe.each(backends)('webhook ledger on $kind', ({ create }) => {
  let db: TestDatabase;
  let billing: BillingStore;
  let customers: CustomerStore;
  /** Statements the billing store ran (every one goes through this plugin). */
  let statements = 0;
  const counting: KyselyPlugin = {
    transformQuery: (args) => args.node,
    transformResult: async (args) => {
      statements++;
      return args.result;
    },
  };

  beforeAll(async () => {
    db = await create();
    const box = testSecretBox();
    billing = new BillingStore({ ...db.handle, db: db.handle.db.withPlugin(counting) }, box, { maxCustomers: 1000 });
    customers = new CustomerStore(db.handle, box);
  });
  afterAll(async () => {
    await db.drop();
  });

  /** An active customer holding a Stripe customer and subscription, as after its checkout. */
  async function paidCustomer(eventAt: number) {
    const name = uniqueName('ledger');
    const customer = `cus_${randomBytes(6).toString('hex')}`;
    const subscription = `sub_${randomBytes(6).toString('hex')}`;
    await sql`
      INSERT INTO customers (name, email, display_name, state, stripe_customer_id, stripe_subscription_id, stripe_subscription_event_at)
      VALUES (${name}, ${`${name}@example.com`}, 'Ledger', 'active', ${customer}, ${subscription}, ${eventAt})
    `.execute(db.handle.db);
    return { name, customer, subscription };
  }

  const record = (event: Record<string, unknown>) => {
    const e = event as unknown as StripeEventLike;
    return billing.recordStripeEvent(e, mapStripeEvent(e));
  };

  async function stored(name: string) {
    const { rows } = await sql<{ state: string; event_at: number; version: number; suspended: boolean }>`
      SELECT state, stripe_subscription_event_at AS event_at, resource_version AS version, billing_suspended AS suspended
      FROM customers WHERE name = ${name}
    `.execute(db.handle.db);
    return rows[0];
  }

  const now = () => Math.floor(Date.now() / 1000);
  const subscriptionEvent = (p: { name: string; customer: string; subscription: string }, status: string, created: number) =>
    stripeEvent(
      'customer.subscription.updated',
      subscriptionObject({ id: p.subscription, customer: p.customer, status, name: p.name }),
      {
        created,
      },
    );

  it('records an event with the change it makes; the same id again is a duplicate that changes nothing', async () => {
    const paid = await paidCustomer(now() - 100);
    const event = subscriptionEvent(paid, 'unpaid', now() - 10);
    expect(await record(event)).toEqual({ outcome: 'applied', customer: paid.name });
    const after = await stored(paid.name);
    expect(after).toMatchObject({ state: 'suspended', suspended: true, event_at: event['created'] });
    expect((await customers.listEvents(paid.name)).map((e) => e.reason)).toContain('SubscriptionSuspended');

    expect(await record(event)).toEqual({ outcome: 'duplicate' });
    expect((await stored(paid.name))?.version).toBe(after?.version);
    const { rows } = await sql<{ outcome: string; customer: string }>`
      SELECT outcome, customer FROM webhook_events WHERE event_id = ${event['id'] as string}
    `.execute(db.handle.db);
    expect(rows).toEqual([{ outcome: 'applied', customer: paid.name }]);
  });

  it("applies different events for one customer recorded at once as if one at a time, in Stripe's order", async () => {
    const paid = await paidCustomer(now() - 1000);
    // Older first in Stripe's order; recorded all at once, newest first.
    const statuses = ['past_due', 'active', 'unpaid', 'active', 'past_due', 'paused', 'active', 'unpaid'];
    const events = statuses.map((status, i) => subscriptionEvent(paid, status, now() - 100 + i * 10));
    const results = await Promise.all([...events].reverse().map((event) => record(event)));
    for (const result of results) expect(['applied', 'stale', 'unchanged']).toContain(result.outcome);
    // The newest (unpaid) decides, whatever order they were stored in.
    expect(await stored(paid.name)).toMatchObject({ state: 'suspended', suspended: true, event_at: events.at(-1)?.['created'] });
    const { rows } = await sql<{ n: number }>`
      SELECT count(*)::int AS n FROM webhook_events WHERE event_id = ANY(${events.map((e) => e['id'] as string)}::text[])
    `.execute(db.handle.db);
    expect(rows[0]?.n).toBe(events.length);
  });

  it('records the same event recorded many times at once exactly once', async () => {
    const paid = await paidCustomer(now() - 100);
    const before = await stored(paid.name);
    const event = subscriptionEvent(paid, 'past_due', now() - 10);
    const results = await Promise.all(Array.from({ length: 8 }, () => record(event)));
    expect(results.filter((r) => r.outcome === 'applied')).toHaveLength(1);
    expect(results.filter((r) => r.outcome === 'duplicate')).toHaveLength(7);
    expect((await stored(paid.name))?.version).toBe((before?.version ?? 0) + 1);
    expect((await customers.listEvents(paid.name)).find((e) => e.reason === 'PaymentPastDue')?.count).toBe(1);
  });

  it('records an event whose Stripe ids belong to another customer as id_conflict, changing neither', async () => {
    const holder = await paidCustomer(now() - 100);
    const other = await paidCustomer(now() - 100);
    // The other customer's subscription event naming the holder's Stripe customer.
    const event = stripeEvent(
      'customer.subscription.updated',
      subscriptionObject({ id: other.subscription, customer: holder.customer, status: 'active', name: other.name }),
      { created: now() - 10 },
    );
    expect(await record(event)).toEqual({ outcome: 'id_conflict', customer: other.name });
    expect((await customers.listEvents(other.name)).find((e) => e.reason === 'StripeIdConflict')?.message).toContain(holder.name);
  });

  it("a customer's next event is one statement: its write is decided on the row the last one read or wrote", async () => {
    const t = now();
    const paid = await paidCustomer(t - 1000);
    expect(await record(subscriptionEvent(paid, 'past_due', t - 100))).toEqual({ outcome: 'applied', customer: paid.name });
    const before = statements;
    expect(await record(subscriptionEvent(paid, 'active', t - 90))).toEqual({ outcome: 'applied', customer: paid.name });
    expect(statements - before).toBe(1);
    const third = subscriptionEvent(paid, 'active', t - 80);
    expect(await record(third)).toEqual({ outcome: 'applied', customer: paid.name });
    expect(statements - before).toBe(2);
    expect(await stored(paid.name)).toMatchObject({ state: 'active', suspended: false, event_at: t - 80 });
    // Delivered again: this process knows the ledger has it (the ledger never forgets an event).
    expect(await record(third)).toEqual({ outcome: 'duplicate' });
    expect(statements - before).toBe(2);
    // Another replica, which remembers nothing, asks the ledger.
    const replica = new BillingStore(db.handle, testSecretBox(), { maxCustomers: 1000 });
    expect(await replica.recordStripeEvent(third as unknown as StripeEventLike, mapStripeEvent(third as unknown as StripeEventLike))).toEqual({
      outcome: 'duplicate',
    });
    // A newer event the replica recorded: this process's remembered row is behind. Its write finds
    // the event in the ledger (a duplicate, one statement), whatever the row.
    const fourth = subscriptionEvent(paid, 'past_due', t - 70);
    expect(await replica.recordStripeEvent(fourth as unknown as StripeEventLike, mapStripeEvent(fourth as unknown as StripeEventLike))).toEqual({
      outcome: 'applied',
      customer: paid.name,
    });
    expect(await record(fourth)).toEqual({ outcome: 'duplicate' });
    expect(statements - before).toBe(3);
    // Its next event: the row is read again, as the replica left it.
    expect(await record(subscriptionEvent(paid, 'active', t - 60))).toEqual({ outcome: 'applied', customer: paid.name });
    expect(await stored(paid.name)).toMatchObject({ state: 'active', event_at: t - 60 });
  });

  it('never decides on a remembered row another writer changed since: the write does nothing and the row is read again', async () => {
    const t = now();
    const paid = await paidCustomer(t - 1000);
    expect(await record(subscriptionEvent(paid, 'active', t - 100))).toEqual({ outcome: 'applied', customer: paid.name });
    // Another replica (or an operator) records a newer event: this process still remembers the older row.
    await sql`UPDATE customers SET state = 'suspended', billing_suspended = true, stripe_subscription_event_at = ${t - 10}
      WHERE name = ${paid.name}`.execute(db.handle.db);
    // Older than what is stored now: stale, not applied on the remembered row (active, event at t - 100).
    expect(await record(subscriptionEvent(paid, 'past_due', t - 50))).toEqual({ outcome: 'stale', customer: paid.name });
    expect(await stored(paid.name)).toMatchObject({ state: 'suspended', suspended: true, event_at: t - 10 });
    // The other way round: on the remembered row (event at t - 10) this event would be stale and
    // change nothing; the row as stored (rewound by an operator) takes it.
    await sql`UPDATE customers SET stripe_subscription_event_at = ${t - 1000} WHERE name = ${paid.name}`.execute(db.handle.db);
    expect(await record(subscriptionEvent(paid, 'active', t - 20))).toEqual({ outcome: 'applied', customer: paid.name });
    expect(await stored(paid.name)).toMatchObject({ state: 'active', suspended: false, event_at: t - 20 });
  });

  it('never decides on a remembered row of an earlier holder of the name (a new uid)', async () => {
    const t = now();
    const paid = await paidCustomer(t - 1000);
    expect(await record(subscriptionEvent(paid, 'active', t - 100))).toEqual({ outcome: 'applied', customer: paid.name });
    // The name held again by a new customer at the same resource version: not the row remembered.
    const version = (await stored(paid.name))?.version;
    await sql`DELETE FROM webhook_events WHERE customer = ${paid.name}`.execute(db.handle.db);
    await sql`DELETE FROM customers WHERE name = ${paid.name}`.execute(db.handle.db);
    await sql`
      INSERT INTO customers (name, email, display_name, state, stripe_customer_id, stripe_subscription_id, stripe_subscription_event_at)
      VALUES (${paid.name}, ${`${paid.name}@example.com`}, 'Ledger', 'active', ${paid.customer}, ${paid.subscription}, ${t - 1000})
    `.execute(db.handle.db);
    await sql`UPDATE customers SET resource_version = ${version} WHERE name = ${paid.name}`.execute(db.handle.db);
    expect((await stored(paid.name))?.version).toBe(version);
    // On the remembered row (event at t - 100) this would be stale; the new holder's row takes it.
    expect(await record(subscriptionEvent(paid, 'unpaid', t - 150))).toEqual({ outcome: 'applied', customer: paid.name });
    expect(await stored(paid.name)).toMatchObject({ state: 'suspended', event_at: t - 150 });
  });

  it('records events arriving together in shared statements, each with its own outcome', async () => {
    const paid = await Promise.all(Array.from({ length: 24 }, () => paidCustomer(now() - 100)));
    const events = paid.map((p) => subscriptionEvent(p, 'past_due', now() - 10));
    const before = statements;
    const results = await Promise.all(events.map((e) => record(e)));
    expect(results).toEqual(paid.map((p) => ({ outcome: 'applied', customer: p.name })));
    // One read and one write each would be 48 statements.
    expect(statements - before).toBeLessThanOrEqual(events.length / 2);
    for (const p of paid) expect(await stored(p.name)).toMatchObject({ state: 'active', event_at: events[0]?.['created'] });
    for (const p of paid) expect((await customers.listEvents(p.name)).find((e) => e.reason === 'PaymentPastDue')?.count).toBe(1);
    // And again, all at once: each a duplicate, nothing changed.
    expect(await Promise.all(events.map((e) => record(e)))).toEqual(paid.map(() => ({ outcome: 'duplicate' })));
  });

  it("records the rest of a shared statement when one event's Stripe ids belong to another customer", async () => {
    const holder = await paidCustomer(now() - 100);
    const others = await Promise.all(Array.from({ length: 6 }, () => paidCustomer(now() - 100)));
    const conflicting = stripeEvent(
      'customer.subscription.updated',
      subscriptionObject({ id: others[0]!.subscription, customer: holder.customer, status: 'active', name: others[0]!.name }),
      { created: now() - 10 },
    );
    const fine = others.slice(1).map((p) => subscriptionEvent(p, 'unpaid', now() - 10));
    const results = await Promise.all([...fine, conflicting].map((e) => record(e)));
    expect(results).toEqual([
      ...others.slice(1).map((p) => ({ outcome: 'applied', customer: p.name })),
      { outcome: 'id_conflict', customer: others[0]!.name },
    ]);
    for (const p of others.slice(1)) expect(await stored(p.name)).toMatchObject({ state: 'suspended', suspended: true });
  });

  it("counts one customer's identical notes arriving at once, each event recorded", async () => {
    const paid = await paidCustomer(now() - 100);
    const failed = () =>
      stripeEvent('invoice.payment_failed', invoiceObject({ subscription: paid.subscription, customer: paid.customer, name: paid.name }));
    const results = await Promise.all(Array.from({ length: 5 }, () => record(failed())));
    expect(results).toEqual(Array(5).fill({ outcome: 'unchanged', customer: paid.name }));
    expect((await customers.listEvents(paid.name)).find((e) => e.reason === 'PaymentFailed')?.count).toBe(5);
  });

  it('records unknown customers and unhandled types, without a customer', async () => {
    const unknown = stripeEvent(
      'customer.subscription.updated',
      subscriptionObject({ id: 'sub_nobody', customer: 'cus_nobody', status: 'active' }),
    );
    expect(await record(unknown)).toEqual({ outcome: 'unknown_customer' });
    expect(await record(stripeEvent('charge.succeeded', { id: 'ch_1', object: 'charge' }))).toEqual({ outcome: 'ignored' });
  });
});
