import { isIPv4, isIPv6 } from 'node:net';
import type { Request, RequestHandler, Response } from 'express';
import type { Logger } from '../observability/logger.js';
import type { HitResult, RateLimitBackend } from '../store/rate-limit-counters.js';
import { HttpError } from './errors.js';

/**
 * Fixed-window rate limits. The counters are the store's (store/rate-limit-counters.ts): on
 * Postgres one table every replica shares, on the embedded PGlite database a Map. The client is `req.ip`: the socket address unless BLYTZ_TRUST_PROXY names the
 * proxies whose X-Forwarded-For is believed, so a spoofed header does not buy a fresh budget.
 * An IPv6 client is keyed by its /64 (`clientKey`): one subscriber usually holds a whole /64,
 * so a per-address key would hand it 2^64 fresh budgets.
 *
 * Two kinds of budget: `rateLimit` counts every request (signup), `failureBudget` counts only
 * failures (bad signatures, wrong tokens), so a caller that gets things right is never refused
 * (Stripe's correctly signed webhooks, a customer polling their status) while guessing is.
 */

export interface RateLimit {
  limit: number;
  windowMs: number;
}

export const RATE_LIMITS = {
  signup: { limit: 5, windowMs: 60_000 },
  /** Requests with a missing or bad Stripe signature; correctly signed ones are never limited. */
  webhookFailures: { limit: 100, windowMs: 60_000 },
  pairing: { limit: 10, windowMs: 60_000 },
  /** Status requests (a page polls every 2 s) and, separately, the ones with a wrong session. */
  status: { limit: 120, windowMs: 60_000 },
  statusFailures: { limit: 20, windowMs: 60_000 },
  /** Access-token exchanges that fail (the token is wrong or was used already). */
  sessionFailures: { limit: 10, windowMs: 60_000 },
  /** Admin API requests with a missing or wrong bearer token. */
  adminFailures: { limit: 10, windowMs: 60_000 },
} as const satisfies Record<string, RateLimit>;

/**
 * The key a client is counted under: an IPv4 address as it is (also when written IPv4-mapped,
 * `::ffff:192.0.2.1`), an IPv6 address by its /64 (`2001:db8:1:2::/64`). Anything else (a
 * missing address) is one shared key, which is the cautious choice.
 */
export function clientKey(address: string | undefined): string {
  if (!address) return 'unknown';
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address)?.[1];
  if (mapped && isIPv4(mapped)) return mapped;
  if (isIPv4(address)) return address;
  const bare = address.replace(/%.*$/, ''); // a zone id (fe80::1%eth0) is not part of the address
  if (!isIPv6(bare)) return 'unknown';
  return `${expandIPv6(bare).slice(0, 4).join(':')}::/64`;
}

/** The eight 16-bit groups of an IPv6 address, lowercase, without leading zeros. */
function expandIPv6(address: string): string[] {
  let text = address.toLowerCase();
  // A trailing dotted quad (::ffff:1.2.3.4, 64:ff9b::1.2.3.4) is two groups.
  const quad = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(text);
  if (quad) {
    const [a, b, c, d] = quad.slice(1).map(Number) as [number, number, number, number];
    text = `${text.slice(0, quad.index)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const [head = '', tail] = text.split('::');
  const left = head === '' ? [] : head.split(':');
  const right = tail === undefined || tail === '' ? [] : tail.split(':');
  const zeros = tail === undefined ? [] : Array.from({ length: 8 - left.length - right.length }, () => '0');
  return [...left, ...zeros, ...right].map((group) => Number.parseInt(group, 16).toString(16));
}

export interface RateLimitOptions extends RateLimit {
  backend: RateLimitBackend;
  /** Names the budget (`signup`, `webhook`): each has its own counters. */
  name: string;
  logger?: Logger;
  key?: (req: Request) => string;
}

/** The client a request is counted under (see `clientKey`). */
export function requestClientKey(req: Request): string {
  return clientKey(req.ip ?? req.socket.remoteAddress);
}

/**
 * Express middleware: 429 with Retry-After past the limit. When the counter store is down the
 * request goes through (fail open): the handler behind it needs the same database and answers
 * for itself, and a broken limiter must not turn every request into an error.
 */
export function rateLimit(options: RateLimitOptions): RequestHandler {
  const keyOf = options.key ?? requestClientKey;
  return async (req, res, next) => {
    let hit: HitResult;
    try {
      hit = await options.backend.hit(`${options.name}:${keyOf(req)}`, options.windowMs);
    } catch (error) {
      options.logger?.warn({ err: error, limit: options.name }, 'rate limiter unavailable; request allowed');
      next();
      return;
    }
    setLimitHeaders(res, options, hit);
    if (hit.count > options.limit) {
      next(tooMany(`at most ${options.limit} requests per ${options.windowMs / 1000} s`, hit));
      return;
    }
    next();
  };
}

export interface FailureBudget {
  /** Middleware: 429 while the client's failures in this window have reached the limit. */
  check: RequestHandler;
  /** The 429 to answer when the client's budget is spent, else undefined (a broken counter allows). */
  refusal(req: Request): Promise<HttpError | undefined>;
  /** Counts one failure for the request's client (never throws: a broken counter allows). */
  fail(req: Request): Promise<void>;
  /**
   * Counts one failure and says how to answer it: the 429 to throw once the client is over the
   * budget, else undefined (answer the failure as usual). For routes that must look at every
   * request first (a correctly signed webhook is never refused, whoever else sent bad ones).
   */
  failAndCheck(req: Request): Promise<HttpError | undefined>;
}

/**
 * A budget of failures per client: requests pass until `limit` of them failed within the
 * window, then every request of that client is refused (429) until the window ends, the right
 * credential included, so guessing cannot go on behind a lucky hit. Successes cost nothing.
 */
export function failureBudget(options: RateLimitOptions): FailureBudget {
  const keyOf = options.key ?? requestClientKey;
  const key = (req: Request) => `${options.name}:${keyOf(req)}`;
  const refusal = async (req: Request): Promise<HttpError | undefined> => {
    let seen: HitResult;
    try {
      seen = await options.backend.peek(key(req), options.windowMs);
    } catch (error) {
      options.logger?.warn({ err: error, limit: options.name }, 'rate limiter unavailable; request allowed');
      return undefined;
    }
    return seen.count >= options.limit ? tooMany(`at most ${options.limit} failed attempts per ${options.windowMs / 1000} s`, seen) : undefined;
  };
  return {
    check: async (req, _res, next) => {
      next(await refusal(req));
    },
    refusal,
    fail: async (req) => {
      await count(req);
    },
    failAndCheck: async (req) => {
      const hit = await count(req);
      return hit && hit.count > options.limit
        ? tooMany(`at most ${options.limit} failed attempts per ${options.windowMs / 1000} s`, hit)
        : undefined;
    },
  };

  async function count(req: Request): Promise<HitResult | undefined> {
    return options.backend.hit(key(req), options.windowMs).catch((error: unknown) => {
      options.logger?.warn({ err: error, limit: options.name }, 'rate limiter unavailable; failure not counted');
      return undefined;
    });
  }
}

function setLimitHeaders(res: Response, limit: RateLimit, hit: HitResult): void {
  res.set({
    'RateLimit-Limit': String(limit.limit),
    'RateLimit-Remaining': String(Math.max(0, limit.limit - hit.count)),
    'RateLimit-Reset': String(retryAfterSeconds(hit)),
  });
}

function retryAfterSeconds(hit: HitResult): number {
  return Math.max(1, Math.ceil(hit.resetMs / 1000));
}

function tooMany(what: string, hit: HitResult): HttpError {
  const retryAfter = retryAfterSeconds(hit);
  return new HttpError(429, 'rate_limited', `too many requests: ${what}; retry after ${retryAfter} s`, undefined, {
    'Retry-After': String(retryAfter),
  });
}
