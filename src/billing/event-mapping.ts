import type { DesiredState } from '../domain/customer.js';

/**
 * Stripe event -> desired change, as pure functions (no I/O, no clock): `mapStripeEvent` reads
 * what an event says, `decide` works out what it does to one customer's billing record. The
 * webhook store runs both inside the transaction that records the event id.
 *
 * Binding: a Stripe object carries the uid of the customer incarnation it was made for
 * (`metadata.blytz_uid`). An event is applied to a customer only when it is bound to that very
 * incarnation (its uid, its subscription or its checkout session): a name held again later (a
 * lapsed signup's, a purged customer's) never receives what was paid for by its previous holder.
 *
 * Ordering: Stripe delivers late, twice and out of order. Every event that speaks about a
 * subscription's standing carries Stripe's `created` time; an event older than the last one
 * applied to the customer is recorded as stale and changes nothing. The time survives a
 * re-signup after cancellation, so a late event of the old subscription cannot touch the new one.
 */

/** The parts of a Stripe event we read (a `Stripe.Event` fits). */
export interface StripeEventLike {
  id: string;
  type: string;
  created: number;
  data: { object: unknown };
}

/** How an event names its customer; the store tries these in order. */
export interface CustomerRef {
  /** Our customer name, from `client_reference_id` or `metadata.blytz_customer`. */
  name?: string;
  /** The customer incarnation the object was made for, from `metadata.blytz_uid`. */
  uid?: string;
  subscriptionId?: string;
  stripeCustomerId?: string;
  checkoutSessionId?: string;
}

/** What the subscription's status asks of the customer. */
export interface StatusTarget {
  /** undefined: the status says nothing about the desired state (`incomplete`). */
  state?: 'active' | 'suspended' | 'cancelled';
  /** A billing warning to show, or null to clear one. */
  warning: string | null;
}

export type BillingIntent =
  | { kind: 'checkout-completed'; ref: CustomerRef; paid: boolean }
  | { kind: 'checkout-expired'; ref: CustomerRef }
  | { kind: 'subscription'; ref: CustomerRef; status: string; target: StatusTarget }
  | { kind: 'invoice-paid'; ref: CustomerRef }
  | { kind: 'invoice-payment-failed'; ref: CustomerRef; attempt: number | undefined }
  | { kind: 'ignored' };

export const PAST_DUE_WARNING = 'PastDue: the last payment failed; Stripe is retrying the card';

/** Issue 6 item 4: subscription status -> desired state. */
export function statusTarget(status: string): StatusTarget {
  switch (status) {
    case 'active':
    case 'trialing':
      return { state: 'active', warning: null };
    case 'past_due':
      // Still served while Stripe retries; the customer sees a warning.
      return { state: 'active', warning: PAST_DUE_WARNING };
    case 'unpaid':
    case 'paused':
    case 'incomplete_expired':
      return { state: 'suspended', warning: null };
    case 'canceled':
      return { state: 'cancelled', warning: null };
    default:
      // `incomplete`: the first payment is still under way; checkout.session.completed decides.
      return { warning: null };
  }
}

const SUBSCRIPTION_EVENTS = new Set([
  'customer.subscription.created',
  'customer.subscription.updated',
  'customer.subscription.paused',
  'customer.subscription.resumed',
  'customer.subscription.deleted',
]);

export const HANDLED_EVENT_TYPES = [
  'checkout.session.completed',
  'checkout.session.async_payment_succeeded',
  'checkout.session.expired',
  ...SUBSCRIPTION_EVENTS,
  'invoice.paid',
  'invoice.payment_failed',
] as const;

export function mapStripeEvent(event: StripeEventLike): BillingIntent {
  const object = asRecord(event.data?.object);
  if (!object) return { kind: 'ignored' };
  switch (event.type) {
    case 'checkout.session.completed':
    case 'checkout.session.async_payment_succeeded': {
      const paymentStatus = str(object['payment_status']);
      return {
        kind: 'checkout-completed',
        ref: checkoutRef(object),
        paid: paymentStatus === 'paid' || paymentStatus === 'no_payment_required',
      };
    }
    case 'checkout.session.expired':
      return { kind: 'checkout-expired', ref: checkoutRef(object) };
    case 'invoice.paid':
      return { kind: 'invoice-paid', ref: invoiceRef(object) };
    case 'invoice.payment_failed': {
      const attempt = object['attempt_count'];
      return {
        kind: 'invoice-payment-failed',
        ref: invoiceRef(object),
        attempt: typeof attempt === 'number' ? attempt : undefined,
      };
    }
    default:
      if (SUBSCRIPTION_EVENTS.has(event.type)) {
        // A deleted subscription is over whatever its status field says.
        const status = event.type === 'customer.subscription.deleted' ? 'canceled' : (str(object['status']) ?? '');
        return { kind: 'subscription', ref: subscriptionRef(object), status, target: statusTarget(status) };
      }
      return { kind: 'ignored' };
  }
}

/** One customer's billing columns, as the decision sees them. */
export interface BillingRecord {
  /** The incarnation's uid (see "Binding" above). */
  uid: string;
  state: DesiredState;
  /** True when billing (not an operator) suspended the customer. */
  billingSuspended: boolean;
  billingWarning: string | null;
  stripeCustomerId: string | null;
  stripeSubscriptionId: string | null;
  stripeCheckoutSessionId: string | null;
  /** Stripe `created` (seconds) of the last subscription event applied. */
  subscriptionEventAt: number | null;
  /** Seconds since the epoch; only meaningful while pending. */
  pendingExpiresAt: number | null;
}

export type DecisionOutcome = 'applied' | 'unchanged' | 'stale' | 'foreign_subscription' | 'foreign_signup' | 'ignored';

export interface CustomerEventNote {
  type: 'Normal' | 'Warning';
  reason: string;
  message: string;
}

export interface Decision {
  outcome: DecisionOutcome;
  next: BillingRecord;
  /** Something worth telling the customer's event log. */
  note?: CustomerEventNote;
}

/**
 * What `intent` (from an event created at `created`) does to `record`. Pure; `next` equals
 * `record` unless the outcome is `applied`. Rules beyond the mapping table, and why:
 * - cancelled is final for billing: only a new signup revives a customer (Stripe never revives
 *   a canceled subscription, and an operator's delete must not be undone by a renewal);
 * - an operator's suspension is never lifted by billing, only billing's own;
 * - an event naming a different subscription than the customer's is not applied.
 */
export function decide(record: BillingRecord, intent: BillingIntent, created: number): Decision {
  if (intent.kind === 'ignored') return { outcome: 'ignored', next: record };
  if (!isBound(record, intent.ref)) {
    return {
      outcome: 'foreign_signup',
      next: record,
      note: {
        type: 'Warning',
        reason: 'ForeignSignup',
        message: `Stripe event ignored: it belongs to an earlier signup under this name${intent.ref.uid ? ` (uid ${intent.ref.uid})` : ''}, not to this customer`,
      },
    };
  }
  const subscriptionId = intent.ref.subscriptionId;
  if (subscriptionId && record.stripeSubscriptionId && subscriptionId !== record.stripeSubscriptionId) {
    return {
      outcome: 'foreign_subscription',
      next: record,
      note: {
        type: 'Warning',
        reason: 'ForeignSubscription',
        message: `Stripe event for subscription ${subscriptionId} ignored: the customer's subscription is ${record.stripeSubscriptionId}`,
      },
    };
  }

  switch (intent.kind) {
    case 'checkout-expired': {
      // Only the customer's current checkout: an older link expiring must not end a fresh signup.
      if (
        record.state !== 'pending' ||
        !intent.ref.checkoutSessionId ||
        intent.ref.checkoutSessionId !== record.stripeCheckoutSessionId
      ) {
        return { outcome: 'unchanged', next: record };
      }
      return result(
        record,
        { ...record, pendingExpiresAt: created },
        {
          type: 'Normal',
          reason: 'CheckoutExpired',
          message: 'the checkout session expired without payment; the signup lapsed',
        },
      );
    }
    case 'invoice-payment-failed':
      return {
        outcome: 'unchanged',
        next: record,
        note: {
          type: 'Warning',
          reason: 'PaymentFailed',
          message: `a payment failed${intent.attempt ? ` (attempt ${intent.attempt})` : ''}; Stripe retries and the subscription status decides`,
        },
      };
    default:
      break;
  }

  // A paid invoice only matters to a customer billing suspended or warned; otherwise it must not
  // become an ordering barrier (it may be created a second after the checkout that activates).
  if (
    intent.kind === 'invoice-paid' &&
    !(record.state === 'suspended' && record.billingSuspended) &&
    record.billingWarning === null
  ) {
    return { outcome: 'unchanged', next: record };
  }
  // Ordered events: checkout completion, subscription changes, paid invoices.
  if (record.subscriptionEventAt !== null && created < record.subscriptionEventAt) {
    return { outcome: 'stale', next: record };
  }
  let next: BillingRecord = {
    ...record,
    stripeCustomerId: intent.ref.stripeCustomerId ?? record.stripeCustomerId,
    stripeSubscriptionId: subscriptionId ?? record.stripeSubscriptionId,
    subscriptionEventAt: created,
  };
  let note: CustomerEventNote | undefined;
  switch (intent.kind) {
    case 'checkout-completed':
      next.stripeCheckoutSessionId = intent.ref.checkoutSessionId ?? record.stripeCheckoutSessionId;
      if (intent.paid) {
        next = activate(next);
        note = { type: 'Normal', reason: 'PaymentConfirmed', message: 'checkout completed and paid' };
      }
      break;
    case 'subscription':
      next.billingWarning = intent.target.warning;
      if (intent.target.state === 'active') next = activate(next);
      if (intent.target.state === 'suspended') next = suspend(next);
      if (intent.target.state === 'cancelled') next = cancel(next);
      note = subscriptionNote(record, next, intent.status);
      break;
    case 'invoice-paid':
      next.billingWarning = null;
      if (next.state === 'suspended' && next.billingSuspended) {
        next = activate(next);
        note = { type: 'Normal', reason: 'PaymentConfirmed', message: 'an invoice was paid; the billing suspension is lifted' };
      }
      break;
  }
  return result(record, next, note);
}

/** Whether the event's object was made for this incarnation of the customer (see "Binding"). */
export function isBound(record: BillingRecord, ref: CustomerRef): boolean {
  return (
    ref.uid === record.uid ||
    (ref.subscriptionId !== undefined && ref.subscriptionId === record.stripeSubscriptionId) ||
    (ref.checkoutSessionId !== undefined && ref.checkoutSessionId === record.stripeCheckoutSessionId)
  );
}

function activate(r: BillingRecord): BillingRecord {
  if (r.state === 'cancelled') return r;
  if (r.state === 'suspended' && !r.billingSuspended) return r;
  return { ...r, state: 'active', billingSuspended: false };
}

function suspend(r: BillingRecord): BillingRecord {
  if (r.state === 'cancelled' || r.state === 'suspended') return r;
  return { ...r, state: 'suspended', billingSuspended: true };
}

function cancel(r: BillingRecord): BillingRecord {
  return { ...r, state: 'cancelled', billingSuspended: false, billingWarning: null };
}

function subscriptionNote(before: BillingRecord, after: BillingRecord, status: string): CustomerEventNote | undefined {
  if (after.billingWarning && after.billingWarning !== before.billingWarning) {
    return { type: 'Warning', reason: 'PaymentPastDue', message: after.billingWarning };
  }
  if (after.state === before.state) return undefined;
  const reasons: Record<DesiredState, string> = {
    active: 'SubscriptionActive',
    suspended: 'SubscriptionSuspended',
    cancelled: 'SubscriptionCancelled',
    pending: 'SubscriptionPending',
  };
  return {
    type: after.state === 'active' ? 'Normal' : 'Warning',
    reason: reasons[after.state],
    message: `Stripe subscription status ${status}: desired state ${before.state} -> ${after.state}`,
  };
}

function result(before: BillingRecord, next: BillingRecord, note?: CustomerEventNote): Decision {
  const changed = (Object.keys(before) as Array<keyof BillingRecord>).some((k) => before[k] !== next[k]);
  if (!changed) return { outcome: 'unchanged', next: before };
  return note ? { outcome: 'applied', next, note } : { outcome: 'applied', next };
}

function checkoutRef(session: Record<string, unknown>): CustomerRef {
  const metadata = asRecord(session['metadata']);
  return compact({
    name: str(session['client_reference_id']) ?? str(metadata?.['blytz_customer']),
    uid: str(metadata?.['blytz_uid']),
    checkoutSessionId: str(session['id']),
    stripeCustomerId: idOf(session['customer']),
    subscriptionId: idOf(session['subscription']),
  });
}

function subscriptionRef(subscription: Record<string, unknown>): CustomerRef {
  return compact({
    name: str(asRecord(subscription['metadata'])?.['blytz_customer']),
    uid: str(asRecord(subscription['metadata'])?.['blytz_uid']),
    subscriptionId: str(subscription['id']),
    stripeCustomerId: idOf(subscription['customer']),
  });
}

function invoiceRef(invoice: Record<string, unknown>): CustomerRef {
  // API 2025-03 and later: parent.subscription_details; older versions: invoice.subscription.
  const details = asRecord(asRecord(invoice['parent'])?.['subscription_details']);
  const metadata = asRecord(details?.['metadata']) ?? asRecord(asRecord(invoice['subscription_details'])?.['metadata']);
  return compact({
    name: str(metadata?.['blytz_customer']),
    uid: str(metadata?.['blytz_uid']),
    subscriptionId: idOf(details?.['subscription']) ?? idOf(invoice['subscription']),
    stripeCustomerId: idOf(invoice['customer']),
  });
}

function compact(ref: Partial<Record<keyof CustomerRef, string | undefined>>): CustomerRef {
  const out: CustomerRef = {};
  for (const [key, value] of Object.entries(ref) as Array<[keyof CustomerRef, string | undefined]>) {
    if (value) out[key] = value;
  }
  return out;
}

function asRecord(value: unknown): Record<string, unknown> | undefined {
  return value !== null && typeof value === 'object' && !Array.isArray(value) ? (value as Record<string, unknown>) : undefined;
}

function str(value: unknown): string | undefined {
  return typeof value === 'string' && value !== '' ? value : undefined;
}

/** Stripe fields that are an id, or the object itself when expanded. */
function idOf(value: unknown): string | undefined {
  return str(value) ?? str(asRecord(value)?.['id']);
}
