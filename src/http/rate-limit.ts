import { sql, type Kysely } from 'kysely';
import type { Request, RequestHandler } from 'express';
import type { Logger } from '../observability/logger.js';
import type { DatabaseHandle } from '../store/database.js';
import type { Database } from '../store/schema.js';
import { HttpError } from './errors.js';

/**
 * Fixed-window rate limits. On Postgres the counters live in one table, so every replica shares
 * them (one atomic upsert per hit); on the embedded PGlite database there is only one process,
 * so a Map does. The client is `req.ip`: the socket address unless BLYTZ_TRUST_PROXY names the
 * proxies whose X-Forwarded-For is believed, so a spoofed header does not buy a fresh budget.
 */

export interface RateLimit {
  limit: number;
  windowMs: number;
}

export const RATE_LIMITS = {
  signup: { limit: 5, windowMs: 60_000 },
  webhook: { limit: 100, windowMs: 60_000 },
  pairing: { limit: 10, windowMs: 60_000 },
} as const satisfies Record<string, RateLimit>;

export interface HitResult {
  /** Hits in the current window, this one included. */
  count: number;
  /** Milliseconds until the window resets. */
  resetMs: number;
}

export interface RateLimitBackend {
  hit(key: string, windowMs: number): Promise<HitResult>;
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

  #prune(currentWindowStart: number): void {
    for (const [key, entry] of this.#windows) {
      if (entry.windowStart < currentWindowStart) this.#windows.delete(key);
    }
    // Still full: everyone is current; forgetting them all is the lesser harm than growing.
    if (this.#windows.size >= this.maxKeys) this.#windows.clear();
  }
}

/** Counters in Postgres, shared by every replica; time is the database's, so replicas agree. */
export class PostgresRateLimitBackend implements RateLimitBackend {
  readonly #db: Kysely<Database>;
  #lastPrune = 0;

  constructor(db: Kysely<Database>) {
    this.#db = db;
  }

  async hit(key: string, windowMs: number): Promise<HitResult> {
    const { rows } = await sql<{ count: number; reset_ms: number }>`
      WITH now_ms AS (SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint AS ms)
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
    void sql`DELETE FROM rate_limits WHERE window_start < (extract(epoch FROM clock_timestamp()) * 1000)::bigint - ${2 * windowMs}`
      .execute(this.#db)
      .catch(() => {});
  }
}

export function createRateLimitBackend(handle: DatabaseHandle): RateLimitBackend {
  return handle.kind === 'postgres' ? new PostgresRateLimitBackend(handle.db) : new MemoryRateLimitBackend();
}

export interface RateLimitOptions extends RateLimit {
  backend: RateLimitBackend;
  /** Names the budget (`signup`, `webhook`): each has its own counters. */
  name: string;
  logger?: Logger;
  key?: (req: Request) => string;
}

/**
 * Express middleware: 429 with Retry-After past the limit. When the counter store is down the
 * request goes through (fail open): the handler behind it needs the same database and answers
 * for itself, and a broken limiter must not turn every request into an error.
 */
export function rateLimit(options: RateLimitOptions): RequestHandler {
  const keyOf = options.key ?? ((req: Request) => req.ip ?? req.socket.remoteAddress ?? 'unknown');
  return async (req, res, next) => {
    let hit: HitResult;
    try {
      hit = await options.backend.hit(`${options.name}:${keyOf(req)}`, options.windowMs);
    } catch (error) {
      options.logger?.warn({ err: error, limit: options.name }, 'rate limiter unavailable; request allowed');
      next();
      return;
    }
    const retryAfter = Math.max(1, Math.ceil(hit.resetMs / 1000));
    res.set({
      'RateLimit-Limit': String(options.limit),
      'RateLimit-Remaining': String(Math.max(0, options.limit - hit.count)),
      'RateLimit-Reset': String(retryAfter),
    });
    if (hit.count > options.limit) {
      next(
        new HttpError(
          429,
          'rate_limited',
          `too many requests: at most ${options.limit} per ${options.windowMs / 1000} s; retry after ${retryAfter} s`,
          undefined,
          {
            'Retry-After': String(retryAfter),
          },
        ),
      );
      return;
    }
    next();
  };
}
