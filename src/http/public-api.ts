import express, { Router, type Request } from 'express';
import { z } from 'zod';
import { randomUUID } from 'node:crypto';
import type { CheckoutCreator, CheckoutRequest } from '../billing/checkout.js';
import {
  botTokenSchema,
  fieldErrors,
  MODEL_PROVIDERS,
  PLAN_NAMES,
  type Condition,
  type DesiredState,
  type FieldError,
} from '../domain/customer.js';
import type { IncludedModelAccess } from '../models/included-access.js';
import { isDns1123Label } from '../domain/naming.js';
import type { Logger } from '../observability/logger.js';
import { DependencyError } from '../resilience/guard.js';
import {
  CapacityError,
  EmailTakenError,
  PendingLimitError,
  type BillingStore,
  type CustomerStatusRecord,
  type PendingSignupRef,
} from '../store/billing-store.js';
import { ConflictError } from '../store/errors.js';
import { InvalidBotTokenError, type BotTokenVerifier } from '../telegram/telegram-client.js';
import { HttpError } from './errors.js';
import { failureBudget, RATE_LIMITS, rateLimit, requestClientKey, type RateLimit } from './rate-limit.js';
import type { RateLimitBackend } from '../store/rate-limit-counters.js';
import { clearSessionCookie, sessionToken, setSessionCookie } from './session.js';

/**
 * The customer-facing API (contract section 3.1): signup, the exchange of the single-use access
 * token for a session, the status a customer follows with that session, and resuming an unpaid
 * checkout. Writers only: a signup writes a pending customer and asks Stripe for a checkout; the
 * controller takes it from there once the webhook says "paid".
 *
 * Ownership: a signup never changes another one. A repeated signup for the same email starts a
 * signup of its own, unless it carries a session of the earlier (unpaid) one, which proves it
 * is the same person: then the earlier checkout is expired at Stripe and the signup replaced.
 */

export interface PublicApiDeps {
  store: BillingStore;
  telegram: BotTokenVerifier;
  /** Undefined when STRIPE_SECRET_KEY or STRIPE_PRICE_ID is unset: signup answers 503. */
  checkout: CheckoutCreator | undefined;
  /** Whether "Blytz default" (included model access) is offered; not offered: a signup must bring its own key. */
  includedModels: IncludedModelAccess;
  rateLimits: RateLimitBackend;
  /** Where the signup site and status pages are served, e.g. https://blytz.localhost */
  publicUrl: string;
  logger: Logger;
  limits?: { signup?: RateLimit; status?: RateLimit; statusFailures?: RateLimit; sessionFailures?: RateLimit };
}

// 5,000 characters of instructions are at most 20 KB of UTF-8; the rest is small.
const SIGNUP_BODY_LIMIT = '32kb';
const CONTROL_CHARS = /[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f]/;
const text = (max: number) =>
  z
    .string({ error: (issue) => (issue.input === undefined ? 'is required' : 'must be a string') })
    .max(max, `must be at most ${max} characters`)
    .refine((s) => !CONTROL_CHARS.test(s), 'must not contain control characters');

export const signupSchema = z
  .object({
    email: z.email('must be an email address').max(254, 'must be at most 254 characters'),
    name: text(50).pipe(z.string().trim().min(1, 'must not be empty')),
    instructions: text(5000),
    telegramBotToken: botTokenSchema,
    plan: z.enum(PLAN_NAMES, `must be one of ${PLAN_NAMES.join(', ')}`).optional(),
    modelProvider: z.enum(MODEL_PROVIDERS, `must be one of ${MODEL_PROVIDERS.join(', ')}`).optional(),
    modelApiKey: text(500).pipe(z.string().min(1, 'must not be empty')).optional(),
  })
  .strict()
  .superRefine((body, ctx) => {
    if (body.modelApiKey !== undefined && body.modelProvider === undefined) {
      ctx.addIssue({ code: 'custom', path: ['modelProvider'], message: 'is required with modelApiKey' });
    }
  });

export type SignupBody = z.output<typeof signupSchema>;

/**
 * A signup without a model key of its own relies on included model access. Where this server
 * does not offer it, such a signup would pay for an assistant that cannot answer: refused, field
 * by field, before anything is reserved or charged. Pure.
 */
export function signupModelErrors(
  body: { modelProvider?: unknown; modelApiKey?: unknown },
  included: IncludedModelAccess,
): FieldError[] {
  if (included.offered || body.modelApiKey !== undefined) return [];
  const errors: FieldError[] = [];
  if (body.modelProvider === undefined) {
    errors.push({ field: 'modelProvider', message: 'is required: this server does not include model access ("Blytz default")' });
  }
  errors.push({
    field: 'modelApiKey',
    message: 'is required: this server does not include model access, so your assistant needs a key of your own provider account',
  });
  return errors;
}

export function createPublicApiRouter(deps: PublicApiDeps): Router {
  const router = Router();
  const limits = { ...RATE_LIMITS, ...deps.limits };
  const statusFailures = failureBudget({ ...limits.statusFailures, backend: deps.rateLimits, name: 'status-failures', logger: deps.logger });
  const sessionFailures = failureBudget({
    ...limits.sessionFailures,
    backend: deps.rateLimits,
    name: 'session-failures',
    logger: deps.logger,
  });
  const secureCookie = deps.publicUrl.startsWith('https:');

  router.post(
    '/api/signup',
    rateLimit({ ...limits.signup, backend: deps.rateLimits, name: 'signup', logger: deps.logger }),
    express.json({ limit: SIGNUP_BODY_LIMIT }),
    async (req, res) => {
      const body = parseSignup(req.body, deps.includedModels);
      const checkout = requireCheckout(deps);
      const bot = await deps.telegram.getMe(body.telegramBotToken).catch(rethrowAsHttp);
      // A session of an unpaid signup with this email proves the same person: replace it.
      const proof = sessionToken(req);
      const replacing = proof ? await deps.store.ownPendingSignup(proof, { email: body.email }).catch(rethrowAsHttp) : undefined;
      if (replacing) await expireOrRefuse(checkout, replacing);
      const reservation = await deps.store
        .reserveSignup(
          {
            email: body.email,
            displayName: body.name,
            instructions: body.instructions,
            plan: body.plan ?? 'personal',
            telegramBotToken: body.telegramBotToken,
            telegramBotUsername: bot.username,
            modelProvider: body.modelProvider,
            modelApiKey: body.modelApiKey,
            client: requestClientKey(req),
          },
          replacing,
        )
        .catch(rethrowAsHttp);
      const session = await createCheckout(deps, checkout, {
        name: reservation.name,
        uid: reservation.uid,
        email: body.email,
        accessToken: reservation.accessToken,
        idempotencyKey: `blytz-signup-${reservation.name}-${reservation.attempt}`,
      });
      await deps.store.attachCheckout(reservation, session).catch(rethrowAsHttp);
      deps.logger.info({ customer: reservation.name, replaced: replacing !== undefined }, 'signup: checkout created');
      // The replaced signup's session belonged to its old incarnation and opens nothing now.
      if (replacing) clearSessionCookie(res, secureCookie);
      res.status(201).json({
        customerId: reservation.name,
        checkoutUrl: session.url,
        statusUrl: statusUrl(deps.publicUrl, reservation),
      });
    },
  );

  // The link a customer follows (Stripe's success and cancel URLs, the signup's statusUrl): the
  // single-use access token becomes a session cookie, then the page is shown without the token.
  router.get('/status/:name', sessionFailures.check, async (req, res, next) => {
    const token = req.query['token'];
    if (typeof token !== 'string') {
      next();
      return;
    }
    res.set('Cache-Control', 'no-store');
    const name = nameParam(req);
    const session =
      isDns1123Label(name) && token.length > 0 && token.length <= 200
        ? await deps.store.exchangeAccessToken(name, token).catch(rethrowAsHttp)
        : undefined;
    if (session) setSessionCookie(res, session, secureCookie);
    else await sessionFailures.fail(req);
    // A spent or wrong token still lands on the page: a session opened earlier (a reload of
    // Stripe's redirect) goes on working there, and without one the page says the link is not valid.
    const query = req.query['checkout'] === 'cancelled' ? '?checkout=cancelled' : '';
    res.redirect(303, `/status/${encodeURIComponent(name)}${query}`);
  });

  router.get(
    '/api/customers/:name/status',
    rateLimit({ ...limits.status, backend: deps.rateLimits, name: 'status', logger: deps.logger }),
    statusFailures.check,
    async (req, res) => {
      res.set('Cache-Control', 'no-store');
      const name = nameParam(req);
      const token = sessionToken(req);
      const record = isDns1123Label(name) && token ? await deps.store.statusFor(name, token).catch(rethrowAsHttp) : undefined;
      // Missing customer, missing session and wrong session look the same: existence is not revealed.
      if (!record) {
        await statusFailures.fail(req);
        throw new HttpError(404, 'not_found', 'no such customer, or the session is not valid');
      }
      res.json(statusView(record));
    },
  );

  // An unpaid signup's owner asks for a fresh checkout for the same signup (they backed out of
  // Stripe's page, or it expired): the old session is expired first, so at most one is payable.
  router.post(
    '/api/customers/:name/checkout',
    rateLimit({ ...limits.signup, backend: deps.rateLimits, name: 'signup', logger: deps.logger }),
    async (req, res) => {
      res.set('Cache-Control', 'no-store');
      const checkout = requireCheckout(deps);
      const name = nameParam(req);
      const token = sessionToken(req);
      const pending = isDns1123Label(name) && token ? await deps.store.ownPendingSignup(token, { name, unexpired: true }).catch(rethrowAsHttp) : undefined;
      if (!pending) throw new HttpError(404, 'not_found', 'no unpaid, unexpired signup of yours by this name; sign up again');
      await expireOrRefuse(checkout, pending);
      const session = await createCheckout(
        deps,
        checkout,
        { name: pending.name, uid: pending.uid, email: pending.email, idempotencyKey: `blytz-resume-${pending.name}-${randomUUID()}` },
        false,
      );
      await deps.store.attachCheckout(pending, session).catch(rethrowAsHttp);
      res.status(201).json({ checkoutUrl: session.url });
    },
  );

  return router;
}

function nameParam(req: Request): string {
  const value = req.params['name'];
  return typeof value === 'string' ? value : '';
}

function requireCheckout(deps: PublicApiDeps): CheckoutCreator {
  if (!deps.checkout) {
    throw new HttpError(
      503,
      'stripe_not_configured',
      'signups are closed: payments are not configured on this server (STRIPE_SECRET_KEY, STRIPE_PRICE_ID)',
    );
  }
  return deps.checkout;
}

/** The earlier checkout of a signup about to be replaced or re-offered can no longer be paid. */
async function expireOrRefuse(checkout: CheckoutCreator, pending: PendingSignupRef): Promise<void> {
  if (!pending.checkoutSessionId) return;
  const outcome = await checkout.expireSession(pending.checkoutSessionId).catch(rethrowAsHttp);
  if (outcome === 'complete') {
    throw new HttpError(409, 'already_paid', 'this signup was paid already; its status page shows your assistant being set up');
  }
}

function parseSignup(input: unknown, included: IncludedModelAccess): SignupBody {
  if (input === null || typeof input !== 'object' || Array.isArray(input)) {
    throw new HttpError(400, 'invalid', 'the body must be a JSON object', [
      { field: '(root)', message: 'must be a JSON object' },
    ]);
  }
  const parsed = signupSchema.safeParse(input);
  // Every bad field in one answer: which model fields are present is read from the raw body.
  const schemaErrors = parsed.success ? [] : fieldErrors(parsed.error);
  const modelErrors = signupModelErrors(input, included).filter((e) => !schemaErrors.some((s) => s.field === e.field));
  if (!parsed.success || modelErrors.length > 0) {
    throw new HttpError(400, 'invalid', 'the signup has invalid fields', [...schemaErrors, ...modelErrors]);
  }
  return parsed.data;
}

async function createCheckout(deps: PublicApiDeps, checkout: CheckoutCreator, request: CheckoutRequest, release = true) {
  try {
    return await checkout.createSession(request);
  } catch (error) {
    // No orphan: the row this attempt wrote is removed, so a retry (or someone else) gets the place.
    if (release) {
      await deps.store.releaseSignup(request).catch((releaseError: unknown) => {
        deps.logger.warn(
          { err: releaseError, customer: request.name },
          'signup: could not release the reservation; it expires by itself',
        );
      });
    }
    return rethrowAsHttp(error);
  }
}

/** Maps what signup's collaborators throw to the contract's answers. */
function rethrowAsHttp(error: unknown): never {
  if (error instanceof HttpError) throw error;
  if (error instanceof InvalidBotTokenError) {
    throw new HttpError(400, 'invalid', 'the signup has invalid fields', [{ field: error.field, message: error.message }]);
  }
  if (error instanceof EmailTakenError) throw new HttpError(409, 'email_taken', error.message);
  if (error instanceof PendingLimitError) {
    throw new HttpError(429, 'too_many_pending_signups', error.message, undefined, {
      'Retry-After': String(error.retryAfterSeconds),
    });
  }
  if (error instanceof ConflictError) throw new HttpError(409, 'conflict', error.message);
  if (error instanceof CapacityError) throw new HttpError(503, 'at_capacity', error.message, undefined, { 'Retry-After': '600' });
  const dependency = dependencyOf(error);
  if (dependency) {
    throw new HttpError(
      503,
      'dependency_unavailable',
      `${dependency} is not reachable right now; please try again in a minute`,
      undefined,
      {
        'Retry-After': '60',
      },
    );
  }
  if (isDatabaseUnavailable(error)) {
    throw new HttpError(
      503,
      'store_unavailable',
      'the database is not reachable right now; please try again in a minute',
      undefined,
      {
        'Retry-After': '30',
      },
    );
  }
  throw error;
}

function dependencyOf(error: unknown): string | undefined {
  if (error instanceof DependencyError)
    return error.dependency === 'stripe' ? 'Stripe' : error.dependency === 'telegram' ? 'Telegram' : error.dependency;
  // A guard from another module instance (or a breaker's own error) that still names its dependency.
  const dependency = (error as { dependency?: unknown } | undefined)?.dependency;
  return typeof dependency === 'string' ? dependency : undefined;
}

/** Connection-level failures of Postgres (node socket errors, SQLSTATE classes 08, 53, 57). */
export function isDatabaseUnavailable(error: unknown): boolean {
  const code = (error as { code?: unknown } | undefined)?.code;
  if (typeof code === 'string' && (/^(08|53|57)/.test(code) || /^E[A-Z]+$/.test(code))) return true;
  const message = (error as { message?: unknown } | undefined)?.message;
  return (
    typeof message === 'string' &&
    /Connection terminated|connect ECONNREFUSED|timeout exceeded when trying to connect/i.test(message)
  );
}

function statusUrl(publicUrl: string, reservation: { name: string; accessToken: string }): string {
  return `${publicUrl.replace(/\/+$/, '')}/status/${encodeURIComponent(reservation.name)}?token=${encodeURIComponent(reservation.accessToken)}`;
}

export interface StatusStep {
  name: 'payment' | 'workspace' | 'assistant' | 'reachable';
  title: string;
  done: boolean;
  message?: string;
}

export interface StatusView {
  name: string;
  state: DesiredState;
  phase: string;
  ready: boolean;
  url: string | null;
  telegramUrl: string | null;
  conditions: Condition[];
  steps: StatusStep[];
}

/** The status body: what the customer may see, never a secret. Pure. */
export function statusView(record: CustomerStatusRecord): StatusView {
  const conditions = [...(record.status.conditions ?? [])];
  if (record.billingWarning) {
    conditions.push({
      type: 'BillingWarning',
      status: 'True',
      reason: record.billingWarning.split(':')[0] ?? 'BillingWarning',
      message: record.billingWarning,
      lastTransitionTime: '',
      observedGeneration: record.status.observedGeneration ?? 0,
    });
  }
  const isTrue = (type: string) => conditions.find((c) => c.type === type)?.status === 'True';
  const paid = record.paid || record.state === 'active' || record.state === 'suspended';
  const why = (type: string) => {
    const condition = conditions.find((c) => c.type === type && c.status !== 'True');
    // Written before the payment arrived; the controller's next status replaces it in a moment.
    if (paid && condition?.reason === 'AwaitingPayment') return 'starting now that the payment is confirmed';
    return condition?.message || undefined;
  };
  const step = (name: StatusStep['name'], title: string, done: boolean, message: string | undefined): StatusStep =>
    message && !done ? { name, title, done, message } : { name, title, done };
  return {
    name: record.name,
    state: record.state,
    phase: record.status.phase ?? 'Pending',
    ready: isTrue('Ready'),
    url: record.status.url ?? null,
    telegramUrl: record.telegramBotUsername ? `https://t.me/${record.telegramBotUsername}` : null,
    conditions,
    steps: [
      step(
        'payment',
        'Payment confirmed',
        paid,
        record.pendingExpired
          ? 'the checkout expired; sign up again for a fresh link'
          : paid
            ? undefined
            : 'waiting for the payment to complete',
      ),
      step('workspace', 'Workspace prepared', isTrue('WorkspaceReady'), why('WorkspaceReady')),
      step('assistant', 'Assistant started', isTrue('ContainerReady'), why('ContainerReady')),
      step('reachable', 'Reachable', isTrue('RouteReady') && isTrue('Ready'), why('RouteReady') ?? why('Ready')),
    ],
  };
}
