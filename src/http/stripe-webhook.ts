import express, { Router } from 'express';
import Stripe from 'stripe';
import { z } from 'zod';
import { mapStripeEvent, type BillingIntent, type StripeEventLike } from '../billing/event-mapping.js';
import type { Logger } from '../observability/logger.js';
import type { Metrics } from '../observability/metrics.js';
import type { WebhookResult } from '../store/billing-store.js';
import { addToRequestLine } from './app.js';
import { HttpError } from './errors.js';
import { failureBudget, RATE_LIMITS, type RateLimit } from './rate-limit.js';
import type { RateLimitBackend } from '../store/rate-limit-counters.js';

/**
 * POST /api/webhooks/stripe. The signature is checked on the raw bytes (the stripe package,
 * default tolerance of 300 s); only then is anything stored. The answer is 200 for everything
 * stored (duplicates, stale, ignored and unknown customers included) and 5xx only when the
 * event could not be stored, because that is the one case where Stripe's retry helps. A signed
 * event that does not have an event's shape is answered 400: retrying it cannot help.
 *
 * The rate limit counts failures only (a missing or bad signature, per client) and is applied
 * after the signature check: a correctly signed event is never refused, however many Stripe
 * sends at once (a backlog after an outage arrives in bursts) and whoever else sends bad ones
 * from the same address (behind a proxy that is not trusted, every client is the proxy), so
 * nobody can spend Stripe's budget and hold back paying customers.
 */

export interface StripeEventLedger {
  recordStripeEvent(event: StripeEventLike, intent: BillingIntent): Promise<WebhookResult>;
}

export interface StripeWebhookDeps {
  ledger: StripeEventLedger;
  /** STRIPE_WEBHOOK_SECRET; unset: 503 (Stripe keeps retrying until it is configured). */
  webhookSecret: string | undefined;
  rateLimits: RateLimitBackend;
  metrics: Metrics;
  logger: Logger;
  /** Budget of requests with a missing or bad signature, per client. */
  failureLimit?: RateLimit;
}

/** What every Stripe event has; a signed body without it is malformed (400, never retried). */
const eventShape = z.object({
  id: z.string().min(1).max(255),
  type: z.string().min(1).max(255),
  created: z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER),
  data: z.object({ object: z.record(z.string(), z.unknown()) }),
});

// Stripe's event payloads are a few KB; a generous cap that still bounds memory per request.
const WEBHOOK_BODY_LIMIT = '512kb';

export function createStripeWebhookRouter(deps: StripeWebhookDeps): Router {
  const router = Router();
  const count = (type: string, outcome: string) => deps.metrics.stripeWebhookEvents.inc({ type, outcome });

  const failures = failureBudget({
    ...(deps.failureLimit ?? RATE_LIMITS.webhookFailures),
    backend: deps.rateLimits,
    name: 'webhook-failures',
    logger: deps.logger,
  });

  router.post(
    '/api/webhooks/stripe',
    // Any content type: the signature covers the exact bytes, so nothing may parse them first.
    express.raw({ type: () => true, limit: WEBHOOK_BODY_LIMIT }),
    async (req, res) => {
      if (!deps.webhookSecret) {
        throw new HttpError(
          503,
          'stripe_not_configured',
          'Stripe webhooks are not configured on this server (STRIPE_WEBHOOK_SECRET)',
        );
      }
      const signature = req.get('stripe-signature');
      if (!signature) {
        count('unknown', 'invalid_signature');
        throw (await failures.failAndCheck(req)) ?? new HttpError(400, 'missing_signature', 'the Stripe-Signature header is missing');
      }
      const payload = Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0);
      let signed: unknown;
      try {
        signed = Stripe.webhooks.constructEvent(payload, signature, deps.webhookSecret);
      } catch {
        count('unknown', 'invalid_signature');
        throw (
          (await failures.failAndCheck(req)) ??
          new HttpError(400, 'invalid_signature', 'the Stripe signature does not match this payload, or it is too old')
        );
      }
      const shaped = eventShape.safeParse(signed);
      if (!shaped.success) {
        count('unknown', 'malformed');
        deps.logger.warn({ issues: shaped.error.issues.map((i) => i.path.join('.')) }, 'stripe webhook: signed but malformed event');
        throw new HttpError(400, 'malformed_event', 'the event is signed but is not a Stripe event (id, type, created, data.object)');
      }
      const event: StripeEventLike = shaped.data;

      let result: WebhookResult;
      try {
        result = await deps.ledger.recordStripeEvent(event, mapStripeEvent(event));
      } catch (error) {
        count(event.type, 'error');
        deps.logger.error(
          { err: error, eventId: event.id, type: event.type },
          'stripe webhook: event not stored; Stripe will retry',
        );
        throw new HttpError(503, 'store_unavailable', 'the event could not be stored; retry later', undefined, {
          'Retry-After': '30',
        });
      }
      count(event.type, result.outcome);
      const said = { eventId: event.id, type: event.type, outcome: result.outcome, customer: result.customer };
      if (res.destroyed) {
        // Stripe gave up waiting (it sends the event again: a duplicate then). The request's line
        // was written when it went, without this.
        deps.logger.info(said, 'stripe webhook: recorded after the sender went');
        return;
      }
      // On the request's own line: one line per webhook, not two.
      addToRequestLine(res, said);
      res.json({ received: true });
    },
  );
  return router;
}
