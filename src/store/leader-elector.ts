import { createHash } from 'node:crypto';
import type pg from 'pg';
import type { Logger } from '../observability/logger.js';
import type { Metrics } from '../observability/metrics.js';
import type { DatabaseHandle } from './database.js';

export interface LeaderElectorOptions {
  /** Lock name (the advisory lock key is derived from it) and the metric's `name` label. */
  name: string;
  handle: DatabaseHandle;
  logger: Logger;
  metrics?: Metrics | undefined;
  /** How often a standby tries to take the lock (default 2 s). */
  retryIntervalMs?: number;
  /** How often the leader checks that its session is alive (default 1 s). */
  checkIntervalMs?: number;
  /** A check slower than this counts as a lost connection (default 2 s). */
  checkTimeoutMs?: number;
}

/**
 * Only one `blytz serve` reconciles at a time. The leader holds a session-level Postgres
 * advisory lock on a connection of its own: Postgres releases the lock when that session ends,
 * however the process dies, so a crashed leader never blocks a standby.
 *
 * Fencing: the lock belongs to the session, so a leader must stop the moment it cannot be sure
 * its session lives. On an error or end of the connection, or a liveness check that fails or
 * hangs, leadership is dropped synchronously (listeners abort their work) before the connection
 * is even closed. When Postgres ends the session itself (pg_terminate_backend, a restart) it
 * tells the client before releasing the lock, so the old leader hears first; a silent network
 * partition keeps the session (and the lock) on the server until TCP gives up, while the old
 * leader fences itself within checkIntervalMs + checkTimeoutMs.
 *
 * On the embedded PGlite database there is exactly one process: it is always leader.
 *
 * It is the controller's `Leadership` (controller/leadership.ts) by its shape: the store does not
 * import the controller; the composition root hands it over.
 */
export class PostgresLeaderElector {
  readonly name: string;
  readonly #handle: DatabaseHandle;
  readonly #logger: Logger;
  readonly #metrics: Metrics | undefined;
  readonly #retryIntervalMs: number;
  readonly #checkIntervalMs: number;
  readonly #checkTimeoutMs: number;
  /** pg_try_advisory_lock(bigint): a signed 64-bit key, passed as text to keep all 64 bits. */
  readonly lockKey: string;

  readonly #listeners = new Set<(leading: boolean) => void>();
  #running = false;
  #leading = false;
  #client: pg.Client | undefined;
  #timer: NodeJS.Timeout | undefined;

  constructor(options: LeaderElectorOptions) {
    this.name = options.name;
    this.#handle = options.handle;
    this.#logger = options.logger.child({ component: 'leader-election', lock: options.name });
    this.#metrics = options.metrics;
    this.#retryIntervalMs = options.retryIntervalMs ?? 2_000;
    this.#checkIntervalMs = options.checkIntervalMs ?? 1_000;
    this.#checkTimeoutMs = options.checkTimeoutMs ?? 2_000;
    this.lockKey = advisoryLockKey(options.name);
    this.#metrics?.leaderStatus.set({ name: this.name }, 0);
  }

  isLeader(): boolean {
    return this.#leading;
  }

  onChange(listener: (leading: boolean) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** Starts campaigning; resolves after the first attempt (so `isLeader()` is meaningful). */
  async start(): Promise<void> {
    if (this.#running) return;
    this.#running = true;
    if (this.#handle.kind === 'pglite') {
      this.#setLeading(true);
      return;
    }
    await this.#attempt();
  }

  /** Gives up leadership (listeners hear it first) and ends the session, releasing the lock. */
  async stop(): Promise<void> {
    if (!this.#running) return;
    this.#running = false;
    clearTimeout(this.#timer);
    this.#setLeading(false);
    const client = this.#client;
    this.#client = undefined;
    client?.removeAllListeners('end');
    await client?.end().catch(() => {});
  }

  async #attempt(): Promise<void> {
    if (!this.#running || this.#leading) return;
    let client: pg.Client | undefined;
    try {
      client = await this.#connection();
      const session = client;
      const result = await session.query<{ locked: boolean }>('SELECT pg_try_advisory_lock($1::bigint) AS locked', [
        this.lockKey,
      ]);
      // Stopped or lost meanwhile: stop() or #lost() closed the session, so a granted lock is gone too.
      if (!this.#running || this.#client !== session) return;
      if (result.rows[0]?.locked === true) {
        this.#setLeading(true);
        this.#schedule(() => this.#check(session), this.#checkIntervalMs);
      } else {
        this.#schedule(() => this.#attempt(), this.#retryIntervalMs);
      }
    } catch (error) {
      if (client) {
        this.#lost(client, error); // a no-op when the connection's own events got there first
      } else {
        this.#logger.warn({ err: error }, 'leader election: cannot reach Postgres; retrying');
        this.#schedule(() => this.#attempt(), this.#retryIntervalMs);
      }
    }
  }

  /** The leader's heartbeat: a session that no longer answers may already have lost the lock. */
  async #check(client: pg.Client): Promise<void> {
    if (!this.#running || this.#client !== client) return;
    let timeout: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        client.query('SELECT 1'),
        new Promise((_, reject) => {
          timeout = setTimeout(
            () => reject(new Error(`liveness check took over ${this.#checkTimeoutMs} ms`)),
            this.#checkTimeoutMs,
          );
        }),
      ]);
      if (this.#running && this.#client === client) this.#schedule(() => this.#check(client), this.#checkIntervalMs);
    } catch (error) {
      this.#lost(client, error);
    } finally {
      clearTimeout(timeout);
    }
  }

  async #connection(): Promise<pg.Client> {
    if (this.#client) return this.#client;
    const factory = this.#handle.dedicatedClient;
    if (!factory) throw new Error('leader election needs a dedicated Postgres connection');
    const client = factory();
    client.on('error', (error) => this.#lost(client, error));
    client.on('end', () => this.#lost(client, new Error('connection ended')));
    this.#client = client;
    try {
      await client.connect();
    } catch (error) {
      if (this.#client === client) this.#client = undefined;
      client.removeAllListeners('end');
      client.end().catch(() => {});
      throw error;
    }
    return client;
  }

  /** The session is gone or in doubt: stop leading first, then clean up and campaign again. */
  #lost(client: pg.Client, error: unknown): void {
    if (this.#client !== client) return;
    this.#client = undefined;
    const wasLeading = this.#leading;
    this.#setLeading(false);
    this.#logger.warn({ err: error, wasLeading }, 'leader election connection lost');
    client.removeAllListeners('end');
    client.end().catch(() => {});
    this.#schedule(() => this.#attempt(), this.#retryIntervalMs);
  }

  #schedule(task: () => Promise<void>, delayMs: number): void {
    clearTimeout(this.#timer);
    if (!this.#running) return;
    this.#timer = setTimeout(() => void task(), delayMs);
  }

  #setLeading(leading: boolean): void {
    if (this.#leading === leading) return;
    this.#leading = leading;
    this.#metrics?.leaderStatus.set({ name: this.name }, leading ? 1 : 0);
    this.#logger.info({ leading }, leading ? 'became leader' : 'stopped leading');
    for (const listener of this.#listeners) {
      try {
        listener(leading);
      } catch (error) {
        this.#logger.error({ err: error }, 'leadership listener threw');
      }
    }
  }
}

/** A stable signed 64-bit advisory lock key for a name (first 8 bytes of its SHA-256). */
export function advisoryLockKey(name: string): string {
  return createHash('sha256').update(`blytz:${name}`).digest().readBigInt64BE(0).toString();
}
