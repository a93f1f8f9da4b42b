import Stripe from 'stripe';

export interface StripeClientOptions {
  secretKey: string;
  /** STRIPE_API_BASE; unset: Stripe's own API. */
  apiBase?: string | undefined;
  /** Per-request timeout; the guard around each call may add its own. */
  timeoutMs?: number;
  /**
   * The stripe package's own retries (it adds idempotency keys to them). Zero by default: calls
   * go through the stripe guard, which owns retries and the breaker.
   */
  maxNetworkRetries?: number;
}

/** The real `stripe` client, pointed at STRIPE_API_BASE when given (tests run a local stand-in). */
export function createStripeClient(options: StripeClientOptions): Stripe {
  return new Stripe(options.secretKey, {
    ...stripeAddress(options.apiBase),
    timeout: options.timeoutMs ?? 10_000,
    maxNetworkRetries: options.maxNetworkRetries ?? 0,
    telemetry: false,
  });
}

/** host/port/protocol for the Stripe constructor, from a base URL such as http://127.0.0.1:12111. */
export function stripeAddress(apiBase: string | undefined): { host?: string; port?: number; protocol?: 'http' | 'https' } {
  if (!apiBase) return {};
  const url = new URL(apiBase);
  if (url.protocol !== 'http:' && url.protocol !== 'https:')
    throw new Error(`STRIPE_API_BASE must be http(s), not ${url.protocol}`);
  if (url.pathname !== '/' && url.pathname !== '')
    throw new Error('STRIPE_API_BASE must not have a path: the client adds /v1/...');
  const protocol = url.protocol === 'http:' ? 'http' : 'https';
  return { host: url.hostname, port: url.port ? Number(url.port) : protocol === 'http' ? 80 : 443, protocol };
}
