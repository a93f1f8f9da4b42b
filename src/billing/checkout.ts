import type Stripe from 'stripe';
import { DependencyError, unguarded, type Guard } from '../resilience/guard.js';

export interface CheckoutRequest {
  /** The customer's name: client_reference_id and metadata.blytz_customer, so events find it. */
  name: string;
  /** The customer incarnation paid for: metadata.blytz_uid, so only it is activated. */
  uid: string;
  email: string;
  /**
   * Goes into success_url (and cancel_url) so the buyer lands on their own status page, where it
   * is exchanged for a session once. Absent when the buyer already has a session (a resumed
   * checkout): the page then needs no token.
   */
  accessToken?: string | undefined;
  /** The same for retries of one signup attempt, different for the next attempt. */
  idempotencyKey: string;
}

/** What became of a session asked to expire. */
export type ExpireOutcome = 'expired' | 'complete';

export interface CheckoutSession {
  id: string;
  url: string;
  /** When Stripe lets the session lapse (seconds since the epoch), if it says. */
  expiresAt: number | undefined;
}

export interface CheckoutCreator {
  createSession(request: CheckoutRequest): Promise<CheckoutSession>;
  /**
   * Makes an open session unpayable (before its signup is replaced or re-offered). `complete`
   * when it was paid already: the caller must not replace what was paid for.
   */
  expireSession(id: string): Promise<ExpireOutcome>;
}

export interface StripeCheckoutOptions {
  stripe: Stripe;
  /** STRIPE_PRICE_ID: the subscription's price. */
  priceId: string;
  /** Where the signup site is served, e.g. https://blytz.localhost */
  publicUrl: string;
  guard?: Guard;
  /**
   * How long a checkout can be paid (Stripe's `expires_at`; Stripe takes 30 min to 24 h after it
   * creates the session). An unpaid signup holds a place against BLYTZ_MAX_CUSTOMERS this long.
   * Default 32 min: Stripe's minimum plus room for the request's way there and clock skew.
   */
  sessionTtlSeconds?: number;
  now?: () => number;
}

export const MIN_CHECKOUT_TTL_SECONDS = 30 * 60;
export const DEFAULT_CHECKOUT_TTL_SECONDS = 32 * 60;

/** Creates subscription-mode Checkout Sessions (contract section 4). */
export class StripeCheckout implements CheckoutCreator {
  readonly #options: StripeCheckoutOptions;
  readonly #guard: Guard;

  constructor(options: StripeCheckoutOptions) {
    this.#options = { ...options, publicUrl: options.publicUrl.replace(/\/+$/, '') };
    this.#guard = options.guard ?? unguarded;
  }

  async createSession(request: CheckoutRequest): Promise<CheckoutSession> {
    const { stripe, priceId, publicUrl } = this.#options;
    const statusPage = `${publicUrl}/status/${encodeURIComponent(request.name)}`;
    const token = request.accessToken === undefined ? '' : `token=${encodeURIComponent(request.accessToken)}&`;
    const metadata = { blytz_customer: request.name, blytz_uid: request.uid };
    const ttl = Math.max(MIN_CHECKOUT_TTL_SECONDS, this.#options.sessionTtlSeconds ?? DEFAULT_CHECKOUT_TTL_SECONDS);
    const now = Math.floor((this.#options.now ?? Date.now)() / 1000);
    const params: Stripe.Checkout.SessionCreateParams = {
      mode: 'subscription',
      line_items: [{ price: priceId, quantity: 1 }],
      customer_email: request.email,
      client_reference_id: request.name,
      metadata,
      subscription_data: { metadata },
      // Unpaid signups hold capacity; Stripe's default (24 h) would let a flood of them hold it all day.
      expires_at: now + ttl,
      success_url: `${statusPage}${token ? `?${token.slice(0, -1)}` : ''}`,
      // Back out of the payment: the buyer's status page, which offers to continue or change it.
      cancel_url: `${statusPage}?${token}checkout=cancelled`,
    };
    let session: Stripe.Checkout.Session;
    try {
      // The raw Stripe error is thrown inside the guard: its type tells transient from final.
      // Retrying is safe: the idempotency key makes Stripe answer a repeat with the same session.
      session = await this.#guard('createCheckoutSession', () =>
        stripe.checkout.sessions.create(params, { idempotencyKey: request.idempotencyKey }),
      );
    } catch (error) {
      // No `cause`: a Stripe error may echo request parameters, and the success URL holds a token.
      throw new DependencyError('stripe', 'createCheckoutSession', describeStripeError(error));
    }
    if (!session.url) throw new DependencyError('stripe', 'createCheckoutSession', 'the session has no URL');
    return {
      id: session.id,
      url: session.url,
      expiresAt: typeof session.expires_at === 'number' ? session.expires_at : undefined,
    };
  }

  async expireSession(id: string): Promise<ExpireOutcome> {
    const { stripe } = this.#options;
    try {
      const session = await this.#guard('retrieveCheckoutSession', () => stripe.checkout.sessions.retrieve(id));
      if (session.status === 'complete') return 'complete';
      if (session.status === 'expired') return 'expired';
      const expired = await this.#guard('expireCheckoutSession', () => stripe.checkout.sessions.expire(id));
      return expired.status === 'complete' ? 'complete' : 'expired';
    } catch (error) {
      throw new DependencyError('stripe', 'expireCheckoutSession', describeStripeError(error));
    }
  }
}

/** Stripe's error type and status, never a request echo (which could hold the success URL's token). */
function describeStripeError(error: unknown): string {
  if (error instanceof DependencyError && error.cause !== undefined)
    return `${describeStripeError(error.cause)}${error.name === 'CircuitOpenError' ? ' (circuit open)' : ''}`;
  if (error instanceof DependencyError) return error.message;
  const e = error as { type?: unknown; statusCode?: unknown; code?: unknown };
  const parts = [typeof e.type === 'string' ? e.type : 'error'];
  if (typeof e.statusCode === 'number') parts.push(`HTTP ${e.statusCode}`);
  if (typeof e.code === 'string') parts.push(e.code);
  return parts.join(', ');
}
