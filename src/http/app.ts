import { randomUUID } from 'node:crypto';
import express, { type Express, type Response, type Router } from 'express';
import type { Logger } from '../observability/logger.js';
import type { Metrics } from '../observability/metrics.js';
import type { HealthChecks } from '../observability/health.js';
import { errorBody, errorHandler } from './errors.js';

/** Routes polled by machines (health probes, Prometheus): their request lines are debug. */
export const QUIET_ROUTES = new Set(['/healthz', '/readyz', '/metrics']);

/**
 * Fields a route adds to its request's line: every request is one line (method, route, status,
 * time), so a route says what it did there rather than in a line of its own (the Stripe webhook:
 * the event, its type and outcome), which halves what a busy route logs.
 */
export function addToRequestLine(res: Response, fields: Record<string, unknown>): void {
  res.locals['requestLine'] = { ...(res.locals['requestLine'] as Record<string, unknown> | undefined), ...fields };
}

export interface ReadinessExtras {
  /** Circuit breaker states by dependency (closed, halfOpen, open). */
  breakers(): Record<string, string>;
  /** Whether this replica currently leads the controller. */
  leader(): boolean;
}

export interface HttpAppDeps {
  logger: Logger;
  metrics: Metrics;
  health: HealthChecks;
  readiness: ReadinessExtras;
  /** Proxies whose X-Forwarded-For is believed (express "trust proxy" value); none by default. */
  trustProxy?: string | undefined;
  /** Routers mounted after the built-in routes, in order (public API, webhooks, admin API). */
  routers?: Router[];
}

/**
 * The express app every replica serves: health, readiness, metrics, and the routers the
 * composition root hands in. Request ids, access logs with latency, the latency histogram,
 * security headers and one JSON error shape apply to every route.
 */
export function createHttpApp(deps: HttpAppDeps): Express {
  const app = express();
  app.disable('x-powered-by');
  app.set('trust proxy', parseTrustProxy(deps.trustProxy));
  app.set('etag', false);

  app.use((req, res, next) => {
    const incoming = req.get('x-request-id');
    const requestId = incoming && /^[A-Za-z0-9._-]{1,64}$/.test(incoming) ? incoming : randomUUID();
    res.locals['requestId'] = requestId;
    res.set({
      'X-Request-Id': requestId,
      'X-Content-Type-Options': 'nosniff',
      'X-Frame-Options': 'DENY',
      'Referrer-Policy': 'no-referrer',
      'Cross-Origin-Opener-Policy': 'same-origin',
      'Content-Security-Policy': "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'",
    });
    const started = process.hrtime.bigint();
    // The matched route pattern, never the raw path: customer names would explode cardinality.
    const routeOf = () => ((req.route?.path as string | undefined) ? `${req.baseUrl}${req.route.path as string}` : 'unmatched');
    const line = (route: string, seconds: number) => ({
      requestId,
      method: req.method,
      route,
      status: res.statusCode,
      ms: Math.round(seconds * 1000),
      ip: req.ip,
      ...(res.locals['requestLine'] as Record<string, unknown> | undefined),
    });
    res.on('finish', () => {
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      const route = routeOf();
      deps.metrics.httpRequestDuration.observe({ method: req.method, route, status_code: String(res.statusCode) }, seconds);
      // Probes and scrapes arrive every few seconds and say nothing new: debug. (A dependency
      // that fails readiness is reported by the controller's own lines.)
      const level = QUIET_ROUTES.has(route) ? 'debug' : 'info';
      deps.logger[level](line(route, seconds), `${req.method} ${route} ${res.statusCode}`);
    });
    // The client went before the answer was sent: still one line, with what the route did.
    res.on('close', () => {
      if (res.writableFinished) return;
      const route = routeOf();
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      deps.logger.info({ ...line(route, seconds), aborted: true }, `${req.method} ${route}: the client went before the answer`);
    });
    next();
  });

  app.get('/healthz', (_req, res) => {
    res.json({ status: 'ok' });
  });

  app.get('/readyz', async (_req, res) => {
    const report = await deps.health.run();
    const body = {
      status: report.status,
      checks: report.checks,
      breakers: deps.readiness.breakers(),
      leader: deps.readiness.leader(),
      timestamp: new Date().toISOString(),
    };
    res.status(report.status === 'ok' ? 200 : 503).json(body);
  });

  app.get('/metrics', async (_req, res) => {
    res.set('Content-Type', deps.metrics.registry.contentType).send(await deps.metrics.registry.metrics());
  });

  for (const router of deps.routers ?? []) app.use(router);

  app.use((_req, res) => {
    res.status(404).json(errorBody('not_found', 'no such route'));
  });
  app.use(errorHandler(deps.logger));
  return app;
}

function parseTrustProxy(value: string | undefined): boolean | string | string[] {
  if (!value) return false;
  const list = value.split(',').map((s) => s.trim()).filter(Boolean);
  return list.length === 1 ? (list[0] as string) : list;
}
