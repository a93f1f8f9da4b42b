/* global process */
// The webhook benchmark's server, in its own process like `blytz serve`: the built app (dist/)
// with the real Stripe webhook router on real Postgres (ledger; the Postgres-backed limiter,
// which counts only bad signatures, so a signed event never reaches it), plus the baseline route
// on the same app: POST /bench/verify-only checks the signature with
// stripe.webhooks.constructEvent and answers 200, nothing else.
//
// Environment: DATABASE_URL (migrated), STRIPE_WEBHOOK_SECRET, PORT.
import { createServer } from 'node:http';
import express, { Router } from 'express';
import Stripe from 'stripe';
import { createHttpApp } from '../../dist/http/app.js';
import { createRateLimitBackend } from '../../dist/store/rate-limit-counters.js';
import { createStripeWebhookRouter } from '../../dist/http/stripe-webhook.js';
import { HealthChecks } from '../../dist/observability/health.js';
import { createLogger } from '../../dist/observability/logger.js';
import { Metrics } from '../../dist/observability/metrics.js';
import { BillingStore } from '../../dist/store/billing-store.js';
import { openPostgres } from '../../dist/store/database.js';
import { SecretBox } from '../../dist/store/secret-box.js';
import { randomBytes } from 'node:crypto';

const secret = process.env.STRIPE_WEBHOOK_SECRET;
const database = openPostgres(process.env.DATABASE_URL, 10);
const logger = createLogger({ level: 'info' });
const metrics = new Metrics();
const ledger = new BillingStore(database, new SecretBox(randomBytes(32)), { maxCustomers: 1_000_000 });

const verifyOnly = Router();
verifyOnly.post('/bench/verify-only', express.raw({ type: () => true, limit: '512kb' }), (req, res) => {
  try {
    Stripe.webhooks.constructEvent(req.body, req.get('stripe-signature') ?? '', secret);
  } catch {
    res.status(400).json({ error: { code: 'invalid_signature' } });
    return;
  }
  res.json({ received: true });
});

const app = createHttpApp({
  logger,
  metrics,
  health: new HealthChecks(),
  readiness: { breakers: () => ({}), leader: () => false },
  routers: [
    createStripeWebhookRouter({
      ledger,
      webhookSecret: secret,
      rateLimits: createRateLimitBackend(database),
      metrics,
      logger,
    }),
    verifyOnly,
  ],
});
const http = createServer(app);
http.keepAliveTimeout = 5_000;
http.listen(Number(process.env.PORT), '127.0.0.1');
process.on('SIGTERM', () => {
  http.close();
  http.closeAllConnections();
  void database.close().finally(() => process.exit(0));
});
