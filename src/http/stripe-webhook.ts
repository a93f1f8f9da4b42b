import express, { Router } from 'express';
import Stripe from 'stripe';
import { mapStripeEvent, type BillingIntent, type StripeEventLike } from '../billing/event-mapping.js';
import type { Logger } from '../observability/logger.js';
import type { Metrics } from '../observability/metrics.js';
import type { WebhookResult } from '../store/billing-store.js';
import { HttpError } from './errors.js';
import { RATE_LIMITS, rateLimit, type RateLimit, type RateLimitBackend } from './rate-limit.js';

/**
 * POST /api/webhooks/stripe. The signature is checked on the raw bytes (the stripe package,
 * default tolerance of 300 s); only then is anything stored. The answer is 200 for everything
 * stored (duplicates, stale, ignored and unknown customers included) and 5xx only when the
 * event could not be stored, because that is the one case where Stripe's retry helps.
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
  limit?: RateLimit;
}

// Stripe's event payloads are a few KB; a generous cap that still bounds memory per request.
const WEBHOOK_BODY_LIMIT = '512kb';

export function createStripeWebhookRouter(deps: StripeWebhookDeps): Router {
  const router = Router();
  const count = (type: string, outcome: string) => deps.metrics.stripeWebhookEvents.inc({ type, outcome });

  router.post(
    '/api/webhooks/stripe',
    rateLimit({ ...(deps.limit ?? RATE_LIMITS.webhook), backend: deps.rateLimits, name: 'webhook', logger: deps.logger }),
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
        throw new HttpError(400, 'missing_signature', 'the Stripe-Signature header is missing');
      }
      const payload = Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0);
      let event: StripeEventLike;
      try {
        event = Stripe.webhooks.constructEvent(payload, signature, deps.webhookSecret);
      } catch {
        count('unknown', 'invalid_signature');
        throw new HttpError(400, 'invalid_signature', 'the Stripe signature does not match this payload, or it is too old');
      }

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
      deps.logger.info(
        { eventId: event.id, type: event.type, outcome: result.outcome, customer: result.customer },
        'stripe webhook',
      );
      res.json({ received: true });
    },
  );
  return router;
}
