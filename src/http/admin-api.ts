import { createHash, timingSafeEqual } from 'node:crypto';
import express, { Router, type ErrorRequestHandler, type RequestHandler, type Response } from 'express';
import type { Config } from '../config.js';
import { customerNameSchema, KIND, parseManifest, toManifest, ValidationError, type FieldError } from '../domain/customer.js';
import type { CustomerStore } from '../store/customer-store.js';
import { ConflictError } from '../store/errors.js';
import {
  modelGatewayCheck,
  registerModelAccessRoutes,
  type ModelAccessApi,
  type ModelGatewayConfig,
} from './model-access-api.js';
import { noModelWarning, type IncludedModelAccess } from '../models/included-access.js';
import { failureBudget, RATE_LIMITS, type FailureBudget, type RateLimit } from './rate-limit.js';
import type { RateLimitBackend } from '../store/rate-limit-counters.js';
import { StatusError } from './api-status.js';
import { registerBackupRoutes, type BackupApi } from './backup-api.js';
import { registerRolloutRoutes, type RolloutApi } from './rollout-api.js';
import { registerPoolRoutes, type PoolApi } from './pool-api.js';

/**
 * The admin API (contract section 3.2): Customer objects over Kubernetes-style REST, for the
 * `blytz` operator verbs. Every answer that is not an object is a `Status` like the Kubernetes
 * API server's, so clients have one error shape to read.
 */

export const ADMIN_API_GROUP_VERSION = 'blytz.cloud/v1alpha1';
export const ADMIN_API_PREFIX = `/apis/${ADMIN_API_GROUP_VERSION}`;
export const CUSTOMERS_PATH = `${ADMIN_API_PREFIX}/customers`;
/** Not a Kubernetes resource: what `blytz doctor` asks the server about its configuration. */
export const DIAGNOSTICS_PATH = `${ADMIN_API_PREFIX}/diagnostics`;

/** Manifests are a few kB; this bounds what one request can make the server parse. */
export const ADMIN_BODY_LIMIT = '256kb';
const DEFAULT_PAGE = 500;
const MAX_PAGE = 5000;

/** The configuration `blytz doctor` reports on: presence only, values never leave the server. */
export type IntegrationConfig = Pick<
  Config,
  'STRIPE_SECRET_KEY' | 'STRIPE_WEBHOOK_SECRET' | 'STRIPE_PRICE_ID' | 'TELEGRAM_API_BASE'
> &
  Partial<ModelGatewayConfig>;

export interface IntegrationCheck {
  name: string;
  /** unknown: could not be checked from where the server runs (says why). */
  status: 'ok' | 'warn' | 'fail' | 'unknown';
  message: string;
}

export interface AdminApiDeps {
  store: CustomerStore;
  adminToken: string;
  /**
   * Asks the controller to reconcile one customer now; resolves when it was handled. Absent
   * (or rejecting) when this replica cannot, e.g. it does not lead: the API answers 503.
   */
  reconcileNow?: ((name: string) => Promise<Date>) | undefined;
  /** When given, `GET .../diagnostics` reports which integrations are configured. */
  config?: IntegrationConfig | undefined;
  /** Checks of the world `GET .../diagnostics` adds (e.g. whether Caddy holds our server block as configured). */
  checks?: (() => Promise<IntegrationCheck[]>) | undefined;
  /** When given, `.../rollouts` shows and steers fleet rollouts. */
  rollouts?: RolloutApi | undefined;
  /** When given, `.../customers/:name/model-usage` and `.../model-key/rotate` (included model access). */
  modelAccess?: ModelAccessApi | undefined;
  /** When given and not offered, applying a customer without a model key of its own answers with a `Warning` header. */
  includedModels?: IncludedModelAccess | undefined;
  /**
   * When given, failed authentications are counted per client and, past the budget, the client
   * is refused (429) for the rest of the window, the right token included: the token cannot be
   * guessed at the speed of the server.
   */
  rateLimits?: RateLimitBackend | undefined;
  authFailureLimit?: RateLimit;
  /** When given, `.../backups` and `.../restores` (see backup-api.ts). */
  backups?: BackupApi | undefined;
  /** When given, `.../pools` (warm pools: pool-api.ts). */
  pools?: PoolApi | undefined;
}

export function adminApiRouter(deps: AdminApiDeps): Router {
  const router = Router();
  // Only this prefix is guarded: the app mounts every router at the root.
  const failures = deps.rateLimits
    ? failureBudget({ ...(deps.authFailureLimit ?? RATE_LIMITS.adminFailures), backend: deps.rateLimits, name: 'admin-auth' })
    : undefined;
  router.use(
    ADMIN_API_PREFIX,
    bearerAuth(deps.adminToken, failures),
    express.json({ limit: ADMIN_BODY_LIMIT, type: ['application/json', 'application/*+json'] }),
  );

  router.get(CUSTOMERS_PATH, async (req, res) => {
    const limit = parseLimit(req.query['limit']);
    const continueAfter = parseContinue(req.query['continue']);
    const labelSelector = parseLabelSelector(req.query['labelSelector']);
    const page = await deps.store.list({ limit, continueAfter, labelSelector });
    res.json({
      apiVersion: ADMIN_API_GROUP_VERSION,
      kind: 'CustomerList',
      metadata: page.continue ? { continue: encodeContinue(page.continue) } : {},
      items: page.items.map(toManifest),
    });
  });

  router.get(`${CUSTOMERS_PATH}/:name`, async (req, res) => {
    const customer = await deps.store.get(req.params.name);
    if (!customer) throw notFound(req.params.name);
    res.json(toManifest(customer));
  });

  router.put(`${CUSTOMERS_PATH}/:name`, async (req, res) => {
    const name = req.params.name;
    if (!req.is(['application/json', 'application/*+json'])) {
      throw new StatusError(415, 'UnsupportedMediaType', 'send the Customer as JSON (Content-Type: application/json)');
    }
    const manifest = validateManifest(name, req.body);
    try {
      const result = await deps.store.apply(
        { name, labels: manifest.metadata.labels ?? {}, spec: manifest.spec },
        { resourceVersion: manifest.metadata.resourceVersion },
      );
      const warning = deps.includedModels && noModelWarning(result.customer, deps.includedModels);
      // RFC 9111's form, which kubectl prints too: accepted (the operator may mean it), but said.
      if (warning) res.set('Warning', `299 - ${JSON.stringify(warning.replace(/[^\x20-\x7e]/g, '?'))}`);
      res.status(result.created ? 201 : 200).json(toManifest(result.customer));
    } catch (error) {
      if (error instanceof ConflictError) {
        // A unique key taken by another customer (the email) versus a stale resourceVersion.
        const reason = error.cause === undefined ? 'Conflict' : 'AlreadyExists';
        throw new StatusError(409, reason, `Operation cannot be fulfilled on customers "${name}": ${error.message}`, {
          name,
          kind: KIND,
        });
      }
      throw error;
    }
  });

  router.delete(`${CUSTOMERS_PATH}/:name`, async (req, res) => {
    const name = req.params.name;
    // Deleting means "desired state cancelled": the controller tears down and purges later.
    if (!(await deps.store.setState(name, 'cancelled'))) throw notFound(name);
    const customer = await deps.store.get(name);
    if (!customer) throw notFound(name);
    res.json(toManifest(customer));
  });

  router.get(`${CUSTOMERS_PATH}/:name/events`, async (req, res) => {
    const name = req.params.name;
    if (!(await deps.store.get(name))) throw notFound(name);
    const limit = req.query['limit'] === undefined ? 20 : Math.min(parseLimit(req.query['limit']), 100);
    const events = await deps.store.listEvents(name, limit);
    res.json({
      apiVersion: 'v1',
      kind: 'EventList',
      metadata: {},
      items: events.map((e) => ({
        involvedObject: { kind: KIND, name },
        type: e.type,
        reason: e.reason,
        message: e.message,
        count: e.count,
        firstTimestamp: e.firstSeen.toISOString(),
        lastTimestamp: e.lastSeen.toISOString(),
      })),
    });
  });

  router.post(`${CUSTOMERS_PATH}/:name/reconcile`, async (req, res) => {
    const name = req.params.name;
    if (!(await deps.store.get(name))) throw notFound(name);
    if (!deps.reconcileNow) {
      throw new StatusError(
        503,
        'ServiceUnavailable',
        'the controller does not run in this server replica; ask the leader, or retry once it is elected',
      );
    }
    let handledAt: Date;
    try {
      handledAt = await deps.reconcileNow(name);
    } catch (error) {
      throw new StatusError(
        503,
        'ServiceUnavailable',
        `the controller could not reconcile customer ${name} now: ${(error as Error).message}`,
      );
    }
    res.json({ name, handledAt: handledAt.toISOString() });
  });

  router.get(DIAGNOSTICS_PATH, async (_req, res) => {
    if (!deps.config) throw new StatusError(404, 'NotFound', 'this server does not report its configuration');
    const world = deps.checks ? await deps.checks() : [];
    res.json({
      apiVersion: ADMIN_API_GROUP_VERSION,
      kind: 'Diagnostics',
      integrations: [...world, ...integrationChecks(deps.config)],
    });
  });

  if (deps.rollouts) registerRolloutRoutes(router, ADMIN_API_PREFIX, deps.rollouts);
  if (deps.modelAccess) registerModelAccessRoutes(router, CUSTOMERS_PATH, deps.modelAccess, notFound);
  if (deps.backups) registerBackupRoutes(router, ADMIN_API_PREFIX, deps.backups);
  if (deps.pools) registerPoolRoutes(router, ADMIN_API_PREFIX, deps.pools);

  router.use(ADMIN_API_PREFIX, () => {
    throw new StatusError(404, 'NotFound', 'the server could not find the requested resource');
  });
  router.use(statusErrorHandler);
  return router;
}

/** Presence of the optional integrations' configuration; never their values. */
export function integrationChecks(config: IntegrationConfig): IntegrationCheck[] {
  const stripe = {
    STRIPE_SECRET_KEY: config.STRIPE_SECRET_KEY,
    STRIPE_WEBHOOK_SECRET: config.STRIPE_WEBHOOK_SECRET,
    STRIPE_PRICE_ID: config.STRIPE_PRICE_ID,
  };
  const missing = Object.entries(stripe)
    .filter(([, v]) => !v)
    .map(([k]) => k);
  let stripeCheck: IntegrationCheck;
  if (missing.length === 0)
    stripeCheck = {
      name: 'stripe',
      status: 'ok',
      message: 'STRIPE_SECRET_KEY, STRIPE_WEBHOOK_SECRET and STRIPE_PRICE_ID are set',
    };
  else if (missing.length === 3)
    stripeCheck = {
      name: 'stripe',
      status: 'warn',
      message: 'not configured: signup answers 503 until STRIPE_SECRET_KEY, STRIPE_WEBHOOK_SECRET and STRIPE_PRICE_ID are set',
    };
  else stripeCheck = { name: 'stripe', status: 'fail', message: `partly configured: set ${missing.join(', ')} as well` };
  const telegramCheck: IntegrationCheck = config.TELEGRAM_API_BASE
    ? { name: 'telegram', status: 'ok', message: `Bot API at ${new URL(config.TELEGRAM_API_BASE).origin}` }
    : { name: 'telegram', status: 'fail', message: 'TELEGRAM_API_BASE is empty' };
  return config.BLYTZ_MODEL_DEFAULT === undefined
    ? [stripeCheck, telegramCheck]
    : [stripeCheck, telegramCheck, modelGatewayCheck(config as ModelGatewayConfig)];
}

/** The manifest, checked against the URL it was sent to; a 422 Status lists every bad field. */
function validateManifest(name: string, body: unknown) {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    throw new StatusError(400, 'BadRequest', 'the request body must be one Customer object (JSON)');
  }
  const causes: FieldError[] = [];
  let manifest: ReturnType<typeof parseManifest> | undefined;
  try {
    manifest = parseManifest(body);
  } catch (error) {
    if (!(error instanceof ValidationError)) throw error;
    causes.push(...error.causes);
  }
  const bodyName = (body as { metadata?: { name?: unknown } }).metadata?.name;
  // The URL names the object; a different name in the body would be a rename, and names are immutable.
  if (typeof bodyName === 'string' && bodyName !== name) {
    causes.push({ field: 'metadata.name', message: `must equal the name in the URL (${name}): names are immutable` });
  }
  if (causes.length > 0 || !manifest) {
    const summary = causes.map((c) => `${c.field}: ${c.message}`).join(', ');
    throw new StatusError(422, 'Invalid', `Customer "${name}" is invalid: ${summary}`, { name, kind: KIND, causes });
  }
  return manifest;
}

function notFound(name: string): StatusError {
  return new StatusError(404, 'NotFound', `customers "${name}" not found`, { name, kind: KIND });
}

/** Constant-time comparison of equal-length digests, so neither timing nor length leaks the token. */
function bearerAuth(adminToken: string, failures: FailureBudget | undefined): RequestHandler {
  const expected = createHash('sha256').update(adminToken).digest();
  return async (req, res, next) => {
    const refused = await failures?.refusal(req);
    if (refused) {
      res.set(refused.headers);
      sendStatus(res, new StatusError(429, 'TooManyRequests', `${refused.message} (failed authentications)`));
      return;
    }
    const header = req.get('authorization') ?? '';
    const match = /^Bearer\s+(\S+)\s*$/i.exec(header);
    const given = createHash('sha256')
      .update(match?.[1] ?? '')
      .digest();
    if (!match || !timingSafeEqual(given, expected)) {
      await failures?.fail(req);
      res.set('WWW-Authenticate', 'Bearer realm="blytz"');
      sendStatus(
        res,
        new StatusError(
          401,
          'Unauthorized',
          'a valid admin token is required (Authorization: Bearer <token>; see $BLYTZ_DATA_DIR/admin-token)',
        ),
      );
      return;
    }
    next();
  };
}

function parseLimit(value: unknown): number {
  if (value === undefined) return DEFAULT_PAGE;
  if (typeof value !== 'string' || !/^\d+$/.test(value) || Number(value) < 1) {
    throw new StatusError(400, 'BadRequest', 'limit must be a positive integer');
  }
  return Math.min(Number(value), MAX_PAGE);
}

// The continue token is opaque to clients (Kubernetes' contract), so its shape may change.
function encodeContinue(lastName: string): string {
  return Buffer.from(JSON.stringify({ after: lastName })).toString('base64url');
}

function parseContinue(value: unknown): string | undefined {
  if (value === undefined || value === '') return undefined;
  try {
    if (typeof value !== 'string') throw new Error('not a string');
    const decoded = JSON.parse(Buffer.from(value, 'base64url').toString('utf8')) as { after?: unknown };
    if (typeof decoded.after === 'string' && customerNameSchema.safeParse(decoded.after).success) return decoded.after;
  } catch {
    // Falls through to the 400 below.
  }
  throw new StatusError(400, 'BadRequest', 'continue is not a token from a previous list response');
}

/** Equality selectors only (`a=b,c==d`), which is all a jsonb containment query can answer. */
export function parseLabelSelector(value: unknown): Record<string, string> | undefined {
  if (value === undefined || value === '') return undefined;
  if (typeof value !== 'string') throw new StatusError(400, 'BadRequest', 'labelSelector must be given once');
  const selector: Record<string, string> = {};
  for (const term of value.split(',')) {
    const match = /^\s*([A-Za-z0-9][A-Za-z0-9_./-]*)\s*==?\s*([A-Za-z0-9_.-]*)\s*$/.exec(term);
    if (!match) {
      throw new StatusError(
        400,
        'BadRequest',
        `labelSelector term "${term}" is not supported: use key=value terms separated by commas`,
      );
    }
    selector[match[1] as string] = match[2] as string;
  }
  return selector;
}

function sendStatus(res: Response, error: StatusError): void {
  res.status(error.code).json(error.toStatus());
}

const statusErrorHandler: ErrorRequestHandler = (error: unknown, _req, res, next) => {
  if (error instanceof StatusError) {
    sendStatus(res, error);
    return;
  }
  // body-parser's errors carry a 4xx status: too large, malformed JSON, bad charset.
  const e = error as { status?: number; type?: string };
  if (typeof e.status === 'number' && e.status >= 400 && e.status < 500) {
    if (e.type === 'entity.too.large') {
      sendStatus(res, new StatusError(413, 'RequestEntityTooLarge', `the request body is larger than ${ADMIN_BODY_LIMIT}`));
    } else {
      const message =
        e.type === 'entity.parse.failed' ? 'the request body is not valid JSON' : 'the request body could not be read';
      sendStatus(res, new StatusError(400, 'BadRequest', message));
    }
    return;
  }
  // Anything else is a server fault: the app's handler logs it with the request id.
  next(error);
};
