import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  decide,
  mapStripeEvent,
  PAST_DUE_WARNING,
  statusTarget,
  type BillingIntent,
  type BillingRecord,
  type StripeEventLike,
} from '../../src/billing/event-mapping.js';

const SUB = 'sub_1';
const CUS = 'cus_1';
const UID = '00000000-0000-4000-8000-000000000001';

function record(overrides: Partial<BillingRecord> = {}): BillingRecord {
  return {
    uid: UID,
    state: 'pending',
    billingSuspended: false,
    billingWarning: null,
    stripeCustomerId: null,
    stripeSubscriptionId: null,
    stripeCheckoutSessionId: 'cs_1',
    subscriptionEventAt: null,
    pendingExpiresAt: 2_000_000_000,
    ...overrides,
  };
}

const active = (overrides: Partial<BillingRecord> = {}) =>
  record({ state: 'active', stripeCustomerId: CUS, stripeSubscriptionId: SUB, subscriptionEventAt: 100, ...overrides });

function event(type: string, object: Record<string, unknown>, created = 1000): StripeEventLike {
  return { id: `evt_${type}_${created}`, type, created, data: { object } };
}

const subscriptionEvent = (status: string, created: number, type = 'customer.subscription.updated', id = SUB) =>
  event(type, { id, object: 'subscription', customer: CUS, status, metadata: { blytz_customer: 'ada', blytz_uid: UID } }, created);

function apply(start: BillingRecord, events: StripeEventLike[]): BillingRecord {
  return events.reduce((r, e) => decide(r, mapStripeEvent(e), e.created).next, start);
}

describe('mapStripeEvent', () => {
  it('reads checkout.session.completed: name from client_reference_id, ids, paid', () => {
    const intent = mapStripeEvent(
      event('checkout.session.completed', {
        id: 'cs_1',
        client_reference_id: 'ada',
        metadata: { blytz_customer: 'other' },
        customer: CUS,
        subscription: { id: SUB, object: 'subscription' },
        payment_status: 'paid',
      }),
    );
    expect(intent).toEqual({
      kind: 'checkout-completed',
      ref: { name: 'ada', checkoutSessionId: 'cs_1', stripeCustomerId: CUS, subscriptionId: SUB },
      paid: true,
    });
  });

  it('falls back to metadata.blytz_customer and treats unpaid sessions as not paid', () => {
    const intent = mapStripeEvent(
      event('checkout.session.completed', { id: 'cs_1', metadata: { blytz_customer: 'ada' }, payment_status: 'unpaid' }),
    );
    expect(intent).toEqual({ kind: 'checkout-completed', ref: { name: 'ada', checkoutSessionId: 'cs_1' }, paid: false });
  });

  it('treats an async payment success like a paid completion', () => {
    const intent = mapStripeEvent(
      event('checkout.session.async_payment_succeeded', { id: 'cs_1', client_reference_id: 'ada', payment_status: 'paid' }),
    );
    expect(intent).toMatchObject({ kind: 'checkout-completed', paid: true });
  });

  it('reads checkout.session.expired', () => {
    expect(mapStripeEvent(event('checkout.session.expired', { id: 'cs_1', client_reference_id: 'ada' }))).toEqual({
      kind: 'checkout-expired',
      ref: { name: 'ada', checkoutSessionId: 'cs_1' },
    });
  });

  it.each([
    ['active', { state: 'active', warning: null }],
    ['trialing', { state: 'active', warning: null }],
    ['past_due', { state: 'active', warning: PAST_DUE_WARNING }],
    ['unpaid', { state: 'suspended', warning: null }],
    ['paused', { state: 'suspended', warning: null }],
    ['incomplete_expired', { state: 'suspended', warning: null }],
    ['canceled', { state: 'cancelled', warning: null }],
    ['incomplete', { warning: null }],
  ])('maps subscription status %s', (status, target) => {
    expect(statusTarget(status)).toEqual(target);
    for (const type of ['created', 'updated', 'paused', 'resumed']) {
      expect(mapStripeEvent(subscriptionEvent(status, 1, `customer.subscription.${type}`))).toEqual({
        kind: 'subscription',
        ref: { name: 'ada', uid: UID, subscriptionId: SUB, stripeCustomerId: CUS },
        status,
        target,
      });
    }
  });

  it('maps customer.subscription.deleted to cancelled whatever its status says', () => {
    expect(mapStripeEvent(subscriptionEvent('active', 1, 'customer.subscription.deleted'))).toMatchObject({
      kind: 'subscription',
      status: 'canceled',
      target: { state: 'cancelled' },
    });
  });

  it('reads invoices in the new (parent.subscription_details) and the old shape', () => {
    const modern = mapStripeEvent(
      event('invoice.paid', {
        customer: CUS,
        parent: { subscription_details: { subscription: SUB, metadata: { blytz_customer: 'ada' } } },
      }),
    );
    expect(modern).toEqual({ kind: 'invoice-paid', ref: { name: 'ada', subscriptionId: SUB, stripeCustomerId: CUS } });
    const legacy = mapStripeEvent(event('invoice.payment_failed', { customer: CUS, subscription: SUB, attempt_count: 2 }));
    expect(legacy).toEqual({ kind: 'invoice-payment-failed', ref: { subscriptionId: SUB, stripeCustomerId: CUS }, attempt: 2 });
  });

  it('ignores other types and malformed objects', () => {
    expect(mapStripeEvent(event('charge.succeeded', { id: 'ch_1' }))).toEqual({ kind: 'ignored' });
    expect(mapStripeEvent({ id: 'evt', type: 'invoice.paid', created: 1, data: { object: null } })).toEqual({ kind: 'ignored' });
  });
});

describe('decide', () => {
  const completed = (paid = true, created = 200): BillingIntent =>
    mapStripeEvent(
      event(
        'checkout.session.completed',
        { id: 'cs_1', client_reference_id: 'ada', customer: CUS, subscription: SUB, payment_status: paid ? 'paid' : 'unpaid' },
        created,
      ),
    );

  it('activates a pending customer on a paid checkout and stores the Stripe ids', () => {
    const d = decide(record(), completed(), 200);
    expect(d.outcome).toBe('applied');
    expect(d.next).toMatchObject({ state: 'active', stripeCustomerId: CUS, stripeSubscriptionId: SUB, subscriptionEventAt: 200 });
    expect(d.note?.reason).toBe('PaymentConfirmed');
  });

  it('records the ids of an unpaid checkout without activating', () => {
    const d = decide(record(), completed(false), 200);
    expect(d.next).toMatchObject({ state: 'pending', stripeSubscriptionId: SUB });
  });

  it('expires the pending signup only for its current checkout session', () => {
    const expired = (id: string) =>
      mapStripeEvent(event('checkout.session.expired', { id, client_reference_id: 'ada', metadata: { blytz_uid: UID } }, 300));
    expect(decide(record(), expired('cs_1'), 300)).toMatchObject({ outcome: 'applied', next: { pendingExpiresAt: 300 } });
    expect(decide(record(), expired('cs_old'), 300).outcome).toBe('unchanged');
    expect(decide(active(), expired('cs_1'), 300).outcome).toBe('unchanged');
  });

  it.each([
    ['active', 'active', null],
    ['trialing', 'active', null],
    ['past_due', 'active', PAST_DUE_WARNING],
    ['unpaid', 'suspended', null],
    ['paused', 'suspended', null],
    ['incomplete_expired', 'suspended', null],
    ['canceled', 'cancelled', null],
    ['incomplete', 'active', null],
  ])('applies subscription status %s to an active customer', (status, state, warning) => {
    const d = decide(active(), mapStripeEvent(subscriptionEvent(status, 200)), 200);
    expect(d.next.state).toBe(state);
    expect(d.next.billingWarning).toBe(warning);
    expect(d.next.billingSuspended).toBe(state === 'suspended');
  });

  it('lifts a billing suspension on invoice.paid, but never an operator suspension', () => {
    const paid = mapStripeEvent(event('invoice.paid', { customer: CUS, subscription: SUB }, 300));
    const billing = decide(active({ state: 'suspended', billingSuspended: true }), paid, 300);
    expect(billing).toMatchObject({ outcome: 'applied', next: { state: 'active', billingSuspended: false } });
    const operator = decide(active({ state: 'suspended', billingSuspended: false }), paid, 300);
    expect(operator.next.state).toBe('suspended');
    expect(decide(active({ state: 'suspended' }), mapStripeEvent(subscriptionEvent('active', 300)), 300).next.state).toBe(
      'suspended',
    );
  });

  it('lets invoice.paid clear a past-due warning, and ignores it otherwise (no ordering barrier)', () => {
    const paid = mapStripeEvent(event('invoice.paid', { customer: CUS, subscription: SUB }, 300));
    expect(decide(active({ billingWarning: PAST_DUE_WARNING }), paid, 300).next).toMatchObject({
      billingWarning: null,
      subscriptionEventAt: 300,
    });
    expect(decide(active(), paid, 300)).toMatchObject({ outcome: 'unchanged', next: { subscriptionEventAt: 100 } });
  });

  it('turns invoice.payment_failed into a warning event, not a suspension', () => {
    const d = decide(
      active(),
      mapStripeEvent(event('invoice.payment_failed', { customer: CUS, subscription: SUB, attempt_count: 2 }, 300)),
      300,
    );
    expect(d.outcome).toBe('unchanged');
    expect(d.next.state).toBe('active');
    expect(d.note).toMatchObject({ type: 'Warning', reason: 'PaymentFailed' });
  });

  it('records an event older than the last applied one as stale', () => {
    const d = decide(active({ subscriptionEventAt: 500 }), mapStripeEvent(subscriptionEvent('unpaid', 400)), 400);
    expect(d).toMatchObject({ outcome: 'stale', next: { state: 'active' } });
  });

  it('handles deleted delivered before an older updated', () => {
    const deleted = subscriptionEvent('canceled', 300, 'customer.subscription.deleted');
    const updated = subscriptionEvent('active', 200);
    expect(apply(active(), [deleted, updated]).state).toBe('cancelled');
    expect(decide(apply(active(), [deleted]), mapStripeEvent(updated), 200).outcome).toBe('stale');
  });

  it('does not apply events of another subscription', () => {
    const d = decide(
      active(),
      mapStripeEvent(subscriptionEvent('canceled', 900, 'customer.subscription.deleted', 'sub_other')),
      900,
    );
    expect(d.outcome).toBe('foreign_subscription');
    expect(d.next.state).toBe('active');
  });

  it('never revives a cancelled customer', () => {
    const cancelled = active({ state: 'cancelled' });
    expect(decide(cancelled, mapStripeEvent(subscriptionEvent('active', 900)), 900).next.state).toBe('cancelled');
    expect(decide(cancelled, completed(true, 900), 900).next.state).toBe('cancelled');
  });

  it('ignores unhandled types', () => {
    expect(decide(active(), { kind: 'ignored' }, 1)).toEqual({ outcome: 'ignored', next: active() });
  });

  it('applies only events bound to this incarnation: its uid, its subscription or its checkout session', () => {
    const session = (fields: Record<string, unknown>) =>
      mapStripeEvent(
        event('checkout.session.completed', { client_reference_id: 'ada', customer: CUS, subscription: SUB, payment_status: 'paid', ...fields }, 200),
      );
    const fresh = record({ stripeCheckoutSessionId: 'cs_new' });
    // Paid by the previous holder of the name (another uid), or a session made before uids (none):
    for (const intent of [session({ id: 'cs_old', metadata: { blytz_uid: 'another-uid' } }), session({ id: 'cs_old' })]) {
      const d = decide(fresh, intent, 200);
      expect(d).toMatchObject({ outcome: 'foreign_signup', next: fresh });
      expect(d.note?.reason).toBe('ForeignSignup');
    }
    expect(decide(fresh, session({ id: 'cs_other', metadata: { blytz_uid: UID } }), 200).next.state).toBe('active');
    expect(decide(fresh, session({ id: 'cs_new' }), 200).next.state).toBe('active');
    const oldSubscription = mapStripeEvent(
      event('customer.subscription.updated', { id: 'sub_old', customer: 'cus_old', status: 'active', metadata: { blytz_customer: 'ada' } }, 300),
    );
    expect(decide(fresh, oldSubscription, 300).outcome).toBe('foreign_signup');
  });
});

describe('decide (properties)', () => {
  it('no event made for another incarnation of the name ever changes the customer', () => {
    const foreign = fc
      .tuple(
        fc.constantFrom(
          'checkout.session.completed',
          'checkout.session.async_payment_succeeded',
          'checkout.session.expired',
          'customer.subscription.created',
          'customer.subscription.updated',
          'customer.subscription.deleted',
          'invoice.paid',
        ),
        fc.constantFrom('active', 'past_due', 'unpaid', 'canceled'),
        fc.option(fc.uuid(), { nil: undefined }),
        fc.integer({ min: 1, max: 10_000 }),
      )
      .map(([type, status, uid, t]) => {
        const metadata = { blytz_customer: 'ada', ...(uid ? { blytz_uid: uid } : {}) };
        const object = type.startsWith('checkout')
          ? { id: 'cs_other', client_reference_id: 'ada', metadata, customer: 'cus_other', subscription: 'sub_other', payment_status: 'paid' }
          : type.startsWith('invoice')
            ? { customer: 'cus_other', parent: { subscription_details: { subscription: 'sub_other', metadata } } }
            : { id: 'sub_other', customer: 'cus_other', status, metadata };
        return event(type, object, t);
      });
    fc.assert(
      fc.property(
        fc.constantFrom(record(), active(), active({ state: 'suspended', billingSuspended: true }), active({ state: 'cancelled' })),
        fc.array(foreign, { maxLength: 10 }),
        (start, events) => {
          fc.pre(events.every((e) => (mapStripeEvent(e) as { ref?: { uid?: string } }).ref?.uid !== UID));
          expect(apply(start, events)).toEqual(start);
        },
      ),
    );
  });

  // Stripe never revives a canceled subscription, so a cancellation is always a subscription's
  // last event; `incomplete` names no state, so it is covered by its own property.
  const LIVE_STATUSES = ['active', 'trialing', 'past_due', 'unpaid', 'paused', 'incomplete_expired'] as const;
  const FINAL = ['canceled', 'deleted', undefined] as const;

  const history = fc
    .record({
      statuses: fc.array(fc.constantFrom(...LIVE_STATUSES), { minLength: 1, maxLength: 8 }),
      final: fc.constantFrom(...FINAL),
      times: fc.uniqueArray(fc.integer({ min: 1000, max: 1_000_000 }), { minLength: 9, maxLength: 9 }),
      start: fc.constantFrom(record(), active(), active({ subscriptionEventAt: null })),
    })
    .map(({ statuses, final, times, start }) => {
      const sorted = [...times].sort((a, b) => a - b);
      const events = statuses.map((s, i) => subscriptionEvent(s, sorted[i] as number));
      if (final === 'canceled') events.push(subscriptionEvent('canceled', sorted[8] as number));
      if (final === 'deleted') events.push(subscriptionEvent('active', sorted[8] as number, 'customer.subscription.deleted'));
      return { events, start };
    });

  const permuted = history.chain(({ events, start }) =>
    fc.record({
      start: fc.constant(start),
      events: fc.constant(events),
      delivered: fc.shuffledSubarray(events, { minLength: events.length, maxLength: events.length }),
    }),
  );

  it('any delivery order ends in the state and warning of the newest event', () => {
    fc.assert(
      fc.property(permuted, ({ start, events, delivered }) => {
        const newest = events.at(-1) as StripeEventLike;
        const intent = mapStripeEvent(newest);
        if (intent.kind !== 'subscription') throw new Error('generator makes subscription events only');
        const end = apply(start, delivered);
        expect(end.state).toBe(intent.target.state);
        expect(end.billingWarning).toBe(intent.target.warning);
        expect(end.subscriptionEventAt).toBe(newest.created);
        expect(end).toEqual(apply(start, events));
      }),
    );
  });

  it('duplicated deliveries change nothing', () => {
    fc.assert(
      fc.property(
        permuted.chain(({ start, delivered }) =>
          fc.record({
            start: fc.constant(start),
            delivered: fc.constant(delivered),
            repeats: fc.array(fc.nat({ max: delivered.length - 1 }), { maxLength: 10 }),
          }),
        ),
        ({ start, delivered, repeats }) => {
          const withDuplicates = [...delivered];
          for (const i of repeats) withDuplicates.splice(i, 0, delivered[i] as StripeEventLike);
          expect(apply(start, withDuplicates)).toEqual(apply(start, delivered));
          // And a second decision on the same event is a no-op.
          const once = apply(start, delivered);
          for (const e of delivered) expect(decide(once, mapStripeEvent(e), e.created).outcome).not.toBe('applied');
        },
      ),
    );
  });

  it('incomplete never changes the desired state', () => {
    fc.assert(
      fc.property(
        fc.constantFrom(record(), active(), active({ state: 'suspended', billingSuspended: true })),
        fc.integer({ min: 100, max: 10_000 }),
        (start, t) => {
          expect(decide(start, mapStripeEvent(subscriptionEvent('incomplete', t)), t).next.state).toBe(start.state);
        },
      ),
    );
  });

  it('an operator suspension or a cancellation is never undone by billing', () => {
    const anyEvent = fc.oneof(
      fc
        .tuple(fc.constantFrom(...LIVE_STATUSES, 'canceled', 'incomplete'), fc.integer({ min: 1, max: 10_000 }))
        .map(([s, t]) => subscriptionEvent(s, t)),
      fc.integer({ min: 1, max: 10_000 }).map((t) => event('invoice.paid', { customer: CUS, subscription: SUB }, t)),
      fc
        .integer({ min: 1, max: 10_000 })
        .map((t) =>
          event(
            'checkout.session.completed',
            { id: 'cs_1', client_reference_id: 'ada', customer: CUS, subscription: SUB, payment_status: 'paid' },
            t,
          ),
        ),
    );
    fc.assert(
      fc.property(
        fc.constantFrom(active({ state: 'suspended' }), active({ state: 'cancelled' })),
        fc.array(anyEvent, { maxLength: 10 }),
        (start, events) => {
          const end = apply(start, events);
          if (start.state === 'cancelled') expect(end.state).toBe('cancelled');
          else expect(['suspended', 'cancelled']).toContain(end.state);
        },
      ),
    );
  });
});
