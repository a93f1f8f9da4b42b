import type pg from 'pg';
import type { Logger } from '../observability/logger.js';
import type { DatabaseHandle } from './database.js';

export const CUSTOMERS_CHANNEL = 'blytz_customers';

export interface ChangeListener {
  /** A customer's spec changed (or it was created or deleted). */
  onChange(name: string): void;
  /** Notifications may have been missed (connection lost and restored): resync everything. */
  onGap(reason: string): void;
}

export interface ChangeFeed {
  start(listener: ChangeListener): Promise<void>;
  stop(): Promise<void>;
}

export function createChangeFeed(handle: DatabaseHandle, logger: Logger): ChangeFeed {
  if (handle.kind === 'pglite') return new PgliteChangeFeed(handle);
  return new PostgresChangeFeed(handle, logger);
}

/**
 * LISTEN on a dedicated connection. When that connection dies it reconnects by itself with
 * jittered exponential backoff and reports a gap once it listens again, so the controller
 * resyncs whatever changed while nobody was listening.
 */
export class PostgresChangeFeed implements ChangeFeed {
  #client: pg.Client | undefined;
  #listener: ChangeListener | undefined;
  #stopped = true;
  #attempt = 0;
  #reconnectTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly handle: DatabaseHandle,
    private readonly logger: Logger,
    private readonly backoff = { minMs: 100, maxMs: 5000 },
  ) {}

  async start(listener: ChangeListener): Promise<void> {
    if (!this.#stopped) return;
    this.#stopped = false;
    this.#listener = listener;
    try {
      await this.#connect();
    } catch (error) {
      // Not running: a later start must try again rather than return as if it were.
      this.#stopped = true;
      this.#listener = undefined;
      throw error;
    }
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#reconnectTimer);
    const client = this.#client;
    this.#client = undefined;
    await client?.end().catch(() => {});
  }

  async #connect(): Promise<void> {
    const factory = this.handle.dedicatedClient;
    if (!factory) throw new Error('change feed needs a dedicated Postgres connection');
    const client = factory();
    client.on('error', (error) => this.#lost(client, error));
    client.on('end', () => this.#lost(client, new Error('connection ended')));
    client.on('notification', (message) => {
      if (message.channel === CUSTOMERS_CHANNEL && message.payload) this.#listener?.onChange(message.payload);
    });
    try {
      await client.connect();
      await client.query(`LISTEN ${CUSTOMERS_CHANNEL}`);
    } catch (error) {
      // A half-open client (connected, LISTEN failed) must not linger.
      await client.end().catch(() => {});
      throw error;
    }
    if (this.#stopped) {
      await client.end().catch(() => {});
      return;
    }
    this.#client = client;
    this.#attempt = 0;
  }

  #lost(client: pg.Client, error: Error): void {
    if (this.#client !== client || this.#stopped) return;
    this.#client = undefined;
    client.removeAllListeners('notification');
    client.end().catch(() => {});
    this.logger.warn({ err: error }, 'change feed connection lost; reconnecting');
    this.#scheduleReconnect();
  }

  #scheduleReconnect(): void {
    if (this.#stopped) return;
    const ceiling = Math.min(this.backoff.maxMs, this.backoff.minMs * 2 ** this.#attempt);
    const delay = ceiling / 2 + Math.random() * (ceiling / 2);
    this.#attempt++;
    this.#reconnectTimer = setTimeout(() => {
      this.#connect().then(
        () => {
          if (!this.#stopped) this.#listener?.onGap('change feed reconnected');
        },
        (error: unknown) => {
          this.logger.warn({ err: error }, 'change feed reconnect failed');
          this.#scheduleReconnect();
        },
      );
    }, delay);
  }
}

/** PGlite runs in this process: its notifications cannot be lost to a network fault. */
export class PgliteChangeFeed implements ChangeFeed {
  #unlisten: (() => Promise<void>) | undefined;

  constructor(private readonly handle: DatabaseHandle) {}

  async start(listener: ChangeListener): Promise<void> {
    if (this.#unlisten) return;
    const listen = this.handle.pgliteListen;
    if (!listen) throw new Error('not a PGlite database');
    this.#unlisten = await listen(CUSTOMERS_CHANNEL, (payload) => listener.onChange(payload));
  }

  async stop(): Promise<void> {
    const unlisten = this.#unlisten;
    this.#unlisten = undefined;
    await unlisten?.();
  }
}
