import { sql, type Kysely } from 'kysely';
import type { DatabaseHandle } from './database.js';
import type { Database } from './schema.js';

/**
 * The counters behind the HTTP rate limits (http/rate-limit.ts), one fixed window per key. On
 * Postgres they live in one table, so every replica shares them (one atomic upsert per hit); on
 * the embedded PGlite database there is only one process, so a Map does.
 */

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
