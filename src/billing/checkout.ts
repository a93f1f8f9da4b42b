import type Stripe from 'stripe';
import { DependencyError, unguarded, type Guard } from '../resilience/guard.js';

export interface CheckoutRequest {
  /** The customer's name: client_reference_id and metadata.blytz_customer, so events find it. */
  name: string;
  email: string;
  /** Goes into success_url so the buyer lands on their own status page. */
  accessToken: string;
  /** The same for retries of one signup attempt, different for the next attempt. */
  idempotencyKey: string;
}

export interface CheckoutSession {
  id: string;
  url: string;
  /** When Stripe lets the session lapse (seconds since the epoch), if it says. */
  expiresAt: number | undefined;
}

export interface CheckoutCreator {
  createSession(request: CheckoutRequest): Promise<CheckoutSession>;
}

export interface StripeCheckoutOptions {
  stripe: Stripe;
  /** STRIPE_PRICE_ID: the subscription's price. */
  priceId: string;
  /** Where the signup site is served, e.g. https://blytz.localhost */
  publicUrl: string;
  guard?: Guard;
}

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
    const name = encodeURIComponent(request.name);
    const params: Stripe.Checkout.SessionCreateParams = {
      mode: 'subscription',
      line_items: [{ price: priceId, quantity: 1 }],
      customer_email: request.email,
      client_reference_id: request.name,
      metadata: { blytz_customer: request.name },
      subscription_data: { metadata: { blytz_customer: request.name } },
      success_url: `${publicUrl}/status/${name}?token=${encodeURIComponent(request.accessToken)}`,
      cancel_url: `${publicUrl}/?checkout=cancelled`,
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
