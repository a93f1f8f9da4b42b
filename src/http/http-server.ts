import { createServer, type RequestListener, type Server } from 'node:http';

/**
 * The HTTP server every replica listens with. Slow or stuck clients cannot hold a socket for
 * long: the request's headers must arrive within `headersMs` and the whole request (body
 * included) within `requestMs`, or the client gets 408 and the socket is closed.
 *
 * Node enforces those two timeouts only when it sweeps its open connections, every
 * `connectionsCheckingInterval` (30 s by default): left at that, a client trickling its headers
 * one byte at a time (slowloris) keeps a socket up to 30 s past the configured 10 s. The sweep
 * here runs ten times per shortest timeout, so each is enforced within 10 % of its value.
 */

export interface HttpTimeouts {
  headersMs: number;
  requestMs: number;
  keepAliveMs: number;
}

export const DEFAULT_HTTP_TIMEOUTS: HttpTimeouts = { headersMs: 10_000, requestMs: 30_000, keepAliveMs: 5_000 };

export function createHttpServer(app: RequestListener, timeouts: HttpTimeouts = DEFAULT_HTTP_TIMEOUTS): Server {
  return createServer(
    {
      headersTimeout: timeouts.headersMs,
      requestTimeout: timeouts.requestMs,
      keepAliveTimeout: timeouts.keepAliveMs,
      connectionsCheckingInterval: sweepIntervalMs(timeouts),
    },
    app,
  );
}

export function sweepIntervalMs(timeouts: HttpTimeouts): number {
  return Math.max(50, Math.floor(Math.min(timeouts.headersMs, timeouts.requestMs) / 10));
}
