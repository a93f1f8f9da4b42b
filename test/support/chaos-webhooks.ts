import { randomBytes } from 'node:crypto';
import { PAST_DUE_WARNING } from '../../src/billing/event-mapping.js';
import { invoiceObject, signatureHeader, stripeEvent, subscriptionObject } from './fake-stripe.js';

/**
 * Continuous signed Stripe webhook traffic for the chaos suite, delivered like Stripe does it:
 * every event twice, each copy after its own random delay (so out of order, also against its own
 * duplicate), re-signed and retried with backoff until the server answers 200 (connection
 * refused, 5xx and 429 are retried, as Stripe retries), from several source addresses.
 *
 * It also keeps the model of what the events mean: per customer, the newest subscription status
 * (by Stripe's `created`) decides the desired state. Event times per customer strictly increase,
 * so "newest" is never ambiguous; events that share a time (a paid invoice and its `active`
 * subscription update) mean the same thing.
 *
 * Modes: `churn` sends state-changing events (suspend, resume, past due); `quiet` sends only
 * events that change nothing (renewals with the current status, failed payments, ignored types,
 * unknown customers), so the desired state holds still while convergence is measured.
 */

/** Stripe's published webhook source addresses; the server trusts X-Forwarded-For from loopback. */
const STRIPE_IPS = [
  '3.18.12.63', '3.130.192.231', '13.235.14.237', '13.235.122.149', '18.211.135.69', '35.154.171.200',
  '52.15.183.38', '54.88.130.119', '54.88.130.237', '54.187.174.169', '54.187.205.235', '54.187.216.72',
];

export type SubStatus = 'active' | 'past_due' | 'unpaid' | 'canceled';

export interface BillingCustomer {
  name: string;
  stripeCustomer: string;
  subscription: string;
  session: string;
}

export interface Expected {
  state: 'active' | 'suspended' | 'cancelled';
  warning: string | null;
}

interface SentEvent {
  id: string;
  type: string;
  payload: string;
  /** Changes desired state (awaited before convergence is judged). */
  changing: boolean;
  generatedAt: number;
  acked: boolean;
  /** Deliveries still under way (0, 1 or 2). */
  inFlight: number;
}

export interface TrafficStats {
  events: number;
  deliveries: number;
  retries: number;
  byStatus: Record<string, number>;
  /** Answers that retrying cannot fix (400: the signature or payload is wrong). */
  rejected: string[];
}

export class WebhookTraffic {
  mode: 'churn' | 'quiet' = 'quiet';
  readonly events = new Map<string, SentEvent>();
  readonly stats: TrafficStats = { events: 0, deliveries: 0, retries: 0, byStatus: {}, rejected: [] };
  readonly #customers: BillingCustomer[];
  readonly #status = new Map<string, SubStatus>();
  readonly #lastCreated = new Map<string, number>();
  readonly #secret: string;
  readonly #targets: () => string[];
  readonly #random: () => number;
  readonly #intervalMs: number;
  #timer: NodeJS.Timeout | undefined;
  #stopped = false;

  constructor(options: {
    customers: BillingCustomer[];
    secret: string;
    /** Base URLs of the live replicas (tried at random; a failure is retried on any). */
    targets: () => string[];
    random: () => number;
    intervalMs?: number;
  }) {
    this.#customers = options.customers;
    this.#secret = options.secret;
    this.#targets = options.targets;
    this.#random = options.random;
    this.#intervalMs = options.intervalMs ?? 200;
  }

  // ---- the model ----

  expected(name: string): Expected {
    const status = this.#status.get(name);
    switch (status) {
      case 'active':
        return { state: 'active', warning: null };
      case 'past_due':
        return { state: 'active', warning: PAST_DUE_WARNING };
      case 'unpaid':
        return { state: 'suspended', warning: null };
      case 'canceled':
        return { state: 'cancelled', warning: null };
      default:
        throw new Error(`no billing history for ${name}`);
    }
  }

  /** Events still being delivered that change desired state. */
  changingInFlight(): number {
    let n = 0;
    for (const e of this.events.values()) if (e.changing && !e.acked) n++;
    return n;
  }

  /** Events generated before `time` that no delivery has got a 200 for yet. */
  unackedBefore(time: number): number {
    let n = 0;
    for (const e of this.events.values()) if (!e.acked && e.generatedAt < time) n++;
    return n;
  }

  ackedIds(): string[] {
    return [...this.events.values()].filter((e) => e.acked).map((e) => e.id);
  }

  // ---- traffic ----

  /** Pays every customer's checkout (checkout.session.completed), the way they became active. */
  activate(customer: BillingCustomer): void {
    const created = this.#nextCreated(customer.name);
    this.#status.set(customer.name, 'active');
    this.#send(
      stripeEvent(
        'checkout.session.completed',
        {
          id: customer.session,
          object: 'checkout.session',
          mode: 'subscription',
          status: 'complete',
          payment_status: 'paid',
          client_reference_id: customer.name,
          metadata: { blytz_customer: customer.name },
          customer: customer.stripeCustomer,
          subscription: customer.subscription,
        },
        { created },
      ),
      true,
    );
  }

  /** The subscription ends; an older `active` update is delivered after the deletion. */
  cancel(customer: BillingCustomer): void {
    const older = this.#nextCreated(customer.name);
    const newer = this.#nextCreated(customer.name);
    this.#status.set(customer.name, 'canceled');
    this.#send(stripeEvent('customer.subscription.deleted', this.#subscription(customer, 'canceled', true), { created: newer }), true, [0, 300]);
    this.#send(stripeEvent('customer.subscription.updated', this.#subscription(customer, 'active', true), { created: older }), true, [1500, 3000]);
  }

  start(): void {
    this.#stopped = false;
    const tick = () => {
      if (this.#stopped) return;
      this.#tick();
      this.#timer = setTimeout(tick, this.#intervalMs);
    };
    this.#timer = setTimeout(tick, this.#intervalMs);
  }

  /** Stops generating; deliveries under way go on. */
  stopGenerating(): void {
    this.#stopped = true;
    clearTimeout(this.#timer);
  }

  #live(): BillingCustomer[] {
    return this.#customers.filter((c) => this.#status.has(c.name) && this.#status.get(c.name) !== 'canceled');
  }

  #tick(): void {
    const live = this.#live();
    const r = this.#random();
    if (live.length === 0 || r < 0.1) {
      this.#noise();
      return;
    }
    const customer = live[Math.floor(this.#random() * live.length)] as BillingCustomer;
    const current = this.#status.get(customer.name) as SubStatus;
    if (this.mode === 'churn' && r < 0.7) {
      if (current === 'unpaid' || (current === 'past_due' && this.#random() < 0.5)) {
        // Recovery: the invoice is paid and the subscription is active again, at the same moment.
        const created = this.#nextCreated(customer.name);
        this.#status.set(customer.name, 'active');
        this.#send(
          stripeEvent('invoice.paid', invoiceObject({ subscription: customer.subscription, customer: customer.stripeCustomer, ...this.#maybeName(customer) }), { created }),
          true,
        );
        this.#send(stripeEvent('customer.subscription.updated', this.#subscription(customer, 'active', this.#random() < 0.7), { created }), true);
        return;
      }
      const next: SubStatus = this.#random() < 0.6 ? 'unpaid' : 'past_due';
      this.#status.set(customer.name, next);
      this.#send(
        stripeEvent('customer.subscription.updated', this.#subscription(customer, next, this.#random() < 0.7), { created: this.#nextCreated(customer.name) }),
        true,
      );
      return;
    }
    // Nothing changes: a renewal with the current status, a failed payment (Stripe retries), a
    // paid invoice for a customer in good standing.
    const pick = this.#random();
    if (pick < 0.5) {
      this.#send(
        stripeEvent('customer.subscription.updated', this.#subscription(customer, current, this.#random() < 0.7), { created: this.#nextCreated(customer.name) }),
        false,
      );
    } else if (pick < 0.75 || current !== 'active') {
      this.#send(
        stripeEvent(
          'invoice.payment_failed',
          invoiceObject({ subscription: customer.subscription, customer: customer.stripeCustomer, attemptCount: 1 + Math.floor(this.#random() * 3), ...this.#maybeName(customer) }),
          { created: this.#nextCreated(customer.name) },
        ),
        false,
      );
    } else {
      this.#send(
        stripeEvent('invoice.paid', invoiceObject({ subscription: customer.subscription, customer: customer.stripeCustomer, ...this.#maybeName(customer) }), {
          created: this.#nextCreated(customer.name),
        }),
        false,
      );
    }
  }

  /** Types the server ignores, and subscriptions of customers it does not know. */
  #noise(): void {
    if (this.#random() < 0.5) {
      const type = ['customer.updated', 'charge.succeeded', 'payment_intent.created'][Math.floor(this.#random() * 3)] as string;
      this.#send(stripeEvent(type, { id: `obj_${randomBytes(6).toString('hex')}`, object: type.split('.')[0] }), false);
    } else {
      const stranger = `stranger-${randomBytes(4).toString('hex')}`;
      this.#send(
        stripeEvent('customer.subscription.updated', subscriptionObject({ id: `sub_${randomBytes(6).toString('hex')}`, customer: `cus_${randomBytes(6).toString('hex')}`, status: 'unpaid', name: stranger })),
        false,
      );
    }
  }

  #subscription(customer: BillingCustomer, status: SubStatus, withName: boolean): Record<string, unknown> {
    // Without metadata the server must find the customer by the subscription id.
    return subscriptionObject({ id: customer.subscription, customer: customer.stripeCustomer, status, ...(withName ? { name: customer.name } : {}) });
  }

  #maybeName(customer: BillingCustomer): { name?: string } {
    return this.#random() < 0.5 ? { name: customer.name } : {};
  }

  #nextCreated(name: string): number {
    const created = Math.max(Math.floor(Date.now() / 1000), (this.#lastCreated.get(name) ?? 0) + 1);
    this.#lastCreated.set(name, created);
    return created;
  }

  /** Two deliveries of the same bytes, each after its own random delay. */
  #send(event: Record<string, unknown>, changing: boolean, firstDelay: [number, number] = [0, 1500]): void {
    const sent: SentEvent = {
      id: event['id'] as string,
      type: event['type'] as string,
      payload: JSON.stringify(event),
      changing,
      generatedAt: Date.now(),
      acked: false,
      inFlight: 2,
    };
    this.events.set(sent.id, sent);
    this.stats.events++;
    const delay = (range: [number, number]) => range[0] + this.#random() * (range[1] - range[0]);
    void this.#deliver(sent, delay(firstDelay));
    void this.#deliver(sent, delay([0, 5000]));
  }

  async #deliver(event: SentEvent, delayMs: number): Promise<void> {
    await sleep(delayMs);
    const ip = STRIPE_IPS[Math.floor(this.#random() * STRIPE_IPS.length)] as string;
    for (let attempt = 0; ; attempt++) {
      if (attempt > 0) this.stats.retries++;
      const targets = this.#targets();
      const target = targets[Math.floor(this.#random() * targets.length)];
      let status = 0;
      let retryAfterMs = 0;
      if (target) {
        this.stats.deliveries++;
        try {
          const res = await fetch(`${target}/api/webhooks/stripe`, {
            method: 'POST',
            headers: {
              'content-type': 'application/json',
              'stripe-signature': signatureHeader(event.payload, this.#secret),
              'x-forwarded-for': ip,
            },
            body: event.payload,
            signal: AbortSignal.timeout(10_000),
          });
          status = res.status;
          retryAfterMs = Number(res.headers.get('retry-after') ?? 0) * 1000;
          await res.arrayBuffer();
        } catch {
          status = 0; // refused, reset, timed out: the server is down or restarting
        }
      }
      this.stats.byStatus[String(status)] = (this.stats.byStatus[String(status)] ?? 0) + 1;
      if (status === 200) {
        event.acked = true;
        break;
      }
      if (status === 400) {
        this.stats.rejected.push(`${event.id} (${event.type}): 400`);
        break;
      }
      // Stripe backs off for hours; here: 250 ms doubling to 4 s, or the server's Retry-After (capped).
      await sleep(Math.min(status === 429 ? Math.max(retryAfterMs, 1000) : 250 * 2 ** attempt, 4000) * (0.75 + this.#random() * 0.5));
    }
    event.inFlight--;
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** A small seeded PRNG (mulberry32), so a failing run can be replayed with CHAOS_SEED. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
