import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { StripeCheckout } from '../../src/billing/checkout.js';
import { createStripeClient } from '../../src/billing/stripe-client.js';
import { createHttpApp } from '../../src/http/app.js';
import { createPublicApiRouter } from '../../src/http/public-api.js';
import { INCLUDED_ACCESS_OFFERED, type IncludedModelAccess } from '../../src/models/included-access.js';
import type { RateLimit } from '../../src/http/rate-limit.js';
import { createStripeWebhookRouter } from '../../src/http/stripe-webhook.js';
import { HealthChecks } from '../../src/observability/health.js';
import { createLogger } from '../../src/observability/logger.js';
import { Metrics } from '../../src/observability/metrics.js';
import type { Guard } from '../../src/resilience/guard.js';
import { BillingStore } from '../../src/store/billing-store.js';
import type { DatabaseHandle } from '../../src/store/database.js';
import { MemoryRateLimitBackend, createRateLimitBackend, type RateLimitBackend } from '../../src/store/rate-limit-counters.js';
import type { SecretBox } from '../../src/store/secret-box.js';
import { TelegramClient } from '../../src/telegram/telegram-client.js';
import { FAKE_PRICE_ID, FAKE_SECRET_KEY, type FakeStripe } from './fake-stripe.js';
import type { FakeTelegram } from './fake-telegram.js';

export const WEBHOOK_SECRET = 'whsec_test_blytz_0123456789abcdef';
export const PUBLIC_URL = 'https://blytz.localhost';

export interface BillingAppOptions {
  handle: DatabaseHandle;
  box: SecretBox;
  stripe: FakeStripe;
  telegram: FakeTelegram;
  maxCustomers?: number;
  /** Generous by default so tests that are not about rate limits are not limited. */
  signupLimit?: RateLimit;
  /** Budget of badly signed webhooks per client (generous by default). */
  webhookFailureLimit?: RateLimit;
  statusLimit?: RateLimit;
  statusFailureLimit?: RateLimit;
  sessionFailureLimit?: RateLimit;
  /** Bounds on unpaid signups (generous by default, like the rate limits). */
  maxPendingPerClient?: number;
  maxPendingPerBot?: number;
  trustProxy?: string;
  stripeConfigured?: boolean;
  /** The store the webhook and signup write to (default: one on `handle`). */
  storeHandle?: DatabaseHandle;
  rateLimits?: RateLimitBackend | 'database';
  /** The rate limits' clock (ms), so no window boundary falls inside a test by chance. */
  clock?: () => number;
  /** The clock checkouts compute Stripe's `expires_at` from (ms). */
  checkoutClock?: () => number;
  telegramGuard?: Guard;
  /** Whether "Blytz default" model access is offered (default: offered). */
  includedModels?: IncludedModelAccess;
}

export interface BillingApp {
  url: string;
  store: BillingStore;
  metrics: Metrics;
  /** Every log line the app wrote (to prove secrets stay out). */
  logs: string[];
  close(): Promise<void>;
}

/** The real express app (createHttpApp) with the signup and webhook routers, on port 0. */
export async function startBillingApp(options: BillingAppOptions): Promise<BillingApp> {
  const logs: string[] = [];
  const logger = createLogger({ level: 'debug', destination: { write: (line: string) => void logs.push(line) } });
  const metrics = new Metrics({ defaultMetrics: false });
  const store = new BillingStore(options.storeHandle ?? options.handle, options.box, {
    maxCustomers: options.maxCustomers ?? 1000,
    maxPendingPerClient: options.maxPendingPerClient ?? 1000,
    maxPendingPerBot: options.maxPendingPerBot ?? 1000,
  });
  const rateLimits =
    options.rateLimits === 'database'
      ? createRateLimitBackend(options.handle, options.clock)
      : (options.rateLimits ?? new MemoryRateLimitBackend(options.clock));
  const checkout =
    options.stripeConfigured === false
      ? undefined
      : new StripeCheckout({
          stripe: createStripeClient({ secretKey: FAKE_SECRET_KEY, apiBase: options.stripe.url, timeoutMs: 5000 }),
          priceId: FAKE_PRICE_ID,
          publicUrl: PUBLIC_URL,
          ...(options.checkoutClock ? { now: options.checkoutClock } : {}),
        });
  const app = createHttpApp({
    logger,
    metrics,
    health: new HealthChecks(),
    readiness: { breakers: () => ({}), leader: () => false },
    trustProxy: options.trustProxy,
    routers: [
      createPublicApiRouter({
        store,
        telegram: new TelegramClient({
          apiBase: options.telegram.url,
          timeoutMs: 2000,
          ...(options.telegramGuard ? { guard: options.telegramGuard } : {}),
        }),
        checkout,
        includedModels: options.includedModels ?? INCLUDED_ACCESS_OFFERED,
        rateLimits,
        publicUrl: PUBLIC_URL,
        logger,
        limits: {
          signup: options.signupLimit ?? { limit: 10_000, windowMs: 60_000 },
          status: options.statusLimit ?? { limit: 10_000, windowMs: 60_000 },
          statusFailures: options.statusFailureLimit ?? { limit: 10_000, windowMs: 60_000 },
          sessionFailures: options.sessionFailureLimit ?? { limit: 10_000, windowMs: 60_000 },
        },
      }),
      createStripeWebhookRouter({
        ledger: store,
        webhookSecret: WEBHOOK_SECRET,
        rateLimits,
        metrics,
        logger,
        failureLimit: options.webhookFailureLimit ?? { limit: 10_000, windowMs: 60_000 },
      }),
    ],
  });
  const server: Server = createServer(app);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    store,
    metrics,
    logs,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

/**
 * Follows a status link (`statusUrl`, Stripe's success URL) as a browser would: the server
 * exchanges its single-use token for a session cookie and redirects. Returns the session token
 * (undefined when no cookie was set) and the redirect's target.
 */
export async function openSession(base: string, link: string): Promise<{ session: string | undefined; location: string | null; status: number }> {
  const url = new URL(link);
  const response = await fetch(`${base}${url.pathname}${url.search}`, { redirect: 'manual' });
  const cookie = response.headers.getSetCookie().find((c) => c.startsWith('blytz_session='));
  const value = cookie?.slice('blytz_session='.length).split(';')[0];
  return { session: value ? value : undefined, location: response.headers.get('location'), status: response.status };
}

/** A well-formed bot token whose numeric id is `id` (the fake Telegram accepts it). */
export function botToken(id: number): string {
  return `${100000 + id}:${'A'.repeat(20)}${String(id).padStart(15, '0')}`;
}

export function signupBody(email: string, overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    email,
    name: 'Ada Lovelace',
    instructions: 'I am a freelance developer.\n- keep my calendar',
    telegramBotToken: botToken(1),
    ...overrides,
  };
}

/** Response bodies as tests read them (deep access without a cast per field). */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type Json = Record<string, any>;

export async function postJson(
  url: string,
  body: unknown,
  headers: Record<string, string> = {},
): Promise<{ status: number; body: Json; headers: Headers }> {
  const response = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
  const text = await response.text();
  let parsed: Json = { text };
  try {
    parsed = JSON.parse(text);
  } catch {
    // Not JSON: keep the text.
  }
  return { status: response.status, body: parsed, headers: response.headers };
}
