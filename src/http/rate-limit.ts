import { isIPv4, isIPv6 } from 'node:net';
import { sql, type Kysely } from 'kysely';
import type { Request, RequestHandler, Response } from 'express';
import type { Logger } from '../observability/logger.js';
import type { DatabaseHandle } from '../store/database.js';
import type { Database } from '../store/schema.js';
import { HttpError } from './errors.js';

/**
 * Fixed-window rate limits. On Postgres the counters live in one table, so every replica shares
 * them (one atomic upsert per hit); on the embedded PGlite database there is only one process,
 * so a Map does. The client is `req.ip`: the socket address unless BLYTZ_TRUST_PROXY names the
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

export interface HitResult {
  /** Hits in the current window, this one included. */
  count: number;
  /** Milliseconds until the window resets. */
  resetMs: number;
}

export interface RateLimitBackend {
  /** Counts one hit for `key` in the current window. */
  hit(key: string, windowMs: number): Promise<HitResult>;
  /** The current window's count for `key`, without counting. */
  peek(key: string, windowMs: number): Promise<HitResult>;
}

/** Counters in process memory (embedded database, tests). */
export class MemoryRateLimitBackend implements RateLimitBackend {
  readonly #windows = new Map<string, { windowStart: number; count: number }>();

  constructor(
    private readonly now: () => number = Date.now,
    // Bounds memory under a flood of distinct client addresses.
    private readonly maxKeys = 100_000,
  ) {}

  async hit(key: string, windowMs: number): Promise<HitResult> {
    const now = this.now();
    const windowStart = Math.floor(now / windowMs) * windowMs;
    const entry = this.#windows.get(key);
    let count = 1;
    if (entry && entry.windowStart === windowStart) count = entry.count + 1;
    if (!entry && this.#windows.size >= this.maxKeys) this.#prune(windowStart);
    this.#windows.set(key, { windowStart, count });
    return { count, resetMs: windowStart + windowMs - now };
  }

  async peek(key: string, windowMs: number): Promise<HitResult> {
    const now = this.now();
    const windowStart = Math.floor(now / windowMs) * windowMs;
    const entry = this.#windows.get(key);
    return { count: entry?.windowStart === windowStart ? entry.count : 0, resetMs: windowStart + windowMs - now };
  }

  #prune(currentWindowStart: number): void {
    for (const [key, entry] of this.#windows) {
      if (entry.windowStart < currentWindowStart) this.#windows.delete(key);
    }
    // Still full: everyone is current; forgetting them all is the lesser harm than growing.
    if (this.#windows.size >= this.maxKeys) this.#windows.clear();
  }
}

/**
 * Counters in Postgres, shared by every replica; time is the database's, so replicas agree
 * (a test may hand in its own clock instead, so no window boundary falls inside it by chance).
 */
export class PostgresRateLimitBackend implements RateLimitBackend {
  readonly #db: Kysely<Database>;
  readonly #now: (() => number) | undefined;
  #lastPrune = 0;

  constructor(db: Kysely<Database>, now?: () => number) {
    this.#db = db;
    this.#now = now;
  }

  #nowMs() {
    return this.#now ? sql<number>`${this.#now()}::bigint` : sql<number>`(extract(epoch FROM clock_timestamp()) * 1000)::bigint`;
  }

  async peek(key: string, windowMs: number): Promise<HitResult> {
    const { rows } = await sql<{ count: number; reset_ms: number }>`
      WITH now_ms AS (SELECT ${this.#nowMs()} AS ms)
      SELECT coalesce((SELECT count FROM rate_limits WHERE key = ${key} AND window_start = (ms / ${windowMs}) * ${windowMs}), 0) AS count,
             ((ms / ${windowMs}) * ${windowMs} + ${windowMs} - ms)::integer AS reset_ms
      FROM now_ms
    `.execute(this.#db);
    const row = rows[0];
    return { count: Number(row?.count ?? 0), resetMs: Math.max(0, Number(row?.reset_ms ?? windowMs)) };
  }

  async hit(key: string, windowMs: number): Promise<HitResult> {
    const { rows } = await sql<{ count: number; reset_ms: number }>`
      WITH now_ms AS (SELECT ${this.#nowMs()} AS ms)
      INSERT INTO rate_limits AS r (key, window_start, count)
      SELECT ${key}, (ms / ${windowMs}) * ${windowMs}, 1 FROM now_ms
      ON CONFLICT (key) DO UPDATE SET
        count = CASE WHEN r.window_start = excluded.window_start THEN r.count + 1 ELSE 1 END,
        window_start = excluded.window_start
      RETURNING r.count, (r.window_start + ${windowMs} - (SELECT ms FROM now_ms))::integer AS reset_ms
    `.execute(this.#db);
    const row = rows[0];
    if (!row) throw new Error('rate limit upsert returned no row');
    this.#maybePrune(windowMs);
    return { count: Number(row.count), resetMs: Math.max(0, Number(row.reset_ms)) };
  }

  /** Drops counters of finished windows, at most once a window per process, off the hot path. */
  #maybePrune(windowMs: number): void {
    const now = Date.now();
    if (now - this.#lastPrune < windowMs) return;
    this.#lastPrune = now;
    void sql`DELETE FROM rate_limits WHERE window_start < ${this.#nowMs()} - ${2 * windowMs}`
      .execute(this.#db)
      .catch(() => {});
  }
}

/** `now` is for tests: a clock of their own instead of the database's (or the process's). */
export function createRateLimitBackend(handle: DatabaseHandle, now?: () => number): RateLimitBackend {
  return handle.kind === 'postgres' ? new PostgresRateLimitBackend(handle.db, now) : new MemoryRateLimitBackend(now);
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
