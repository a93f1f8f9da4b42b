import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { Kysely, PGliteDialect, PostgresDialect, sql, type RawBuilder } from 'kysely';
import pg from 'pg';
import { PGlite } from '@electric-sql/pglite';
import { ensurePrivateDir, tightenTree } from '../data-dir.js';
import type { Database } from './schema.js';

// bigint columns (generation, resource_version) fit comfortably in a JS number.
pg.types.setTypeParser(pg.types.builtins.INT8, (value) => Number(value));

/** A notification callback; `onGap` is called when notifications may have been lost. */
export interface NotificationListener {
  onNotify(payload: string): void;
  onGap(reason: string): void;
}

/**
 * One open database: Kysely for queries plus what Kysely does not offer, a dedicated session
 * for LISTEN and for leader election. Postgres (DATABASE_URL) or embedded PGlite.
 */
export interface DatabaseHandle {
  readonly kind: 'postgres' | 'pglite';
  readonly db: Kysely<Database>;
  /** A connection outside the pool (postgres only): LISTEN, advisory locks. */
  dedicatedClient?(): pg.Client;
  /** PGlite's own LISTEN (pglite only). */
  pgliteListen?(channel: string, onNotify: (payload: string) => void): Promise<() => Promise<void>>;
  close(): Promise<void>;
}

export interface OpenDatabaseOptions {
  databaseUrl?: string | undefined;
  dataDir: string;
  poolSize?: number;
}

export async function openDatabase(options: OpenDatabaseOptions): Promise<DatabaseHandle> {
  if (options.databaseUrl) return openPostgres(options.databaseUrl, options.poolSize ?? 10);
  const dir = join(options.dataDir, 'pglite');
  ensurePrivateDir(dir);
  // PGlite writes the database's files 0666 (its initial cluster is unpacked from an archive
  // with those modes; Postgres itself would make them 0600): owner-only at open and at close.
  const pglite = await PGlite.create(dir);
  tightenTree(dir);
  const handle = openPglite(pglite);
  return {
    ...handle,
    close: async () => {
      await handle.close();
      tightenTree(dir);
    },
  };
}

/**
 * Every connection gives up instead of waiting forever: node-postgres has no connect or query
 * timeout by default, and one connection attempt left hanging across a Postgres restart (a
 * socket accepted and never answered) stalls leader election, the change feed or, through the
 * pool, every request behind it. Keep-alive finds connections that died without a FIN.
 */
const CONNECTION_SETTINGS = { connectionTimeoutMillis: 5_000, query_timeout: 30_000, keepAlive: true } as const;

/**
 * Statements a hot path runs hundreds of times a second (the Stripe webhook's read and write,
 * a backlog after an outage) are prepared once per connection: Postgres planned them anew for
 * every execution, which was most of its CPU per event (about 0.25 ms each, against 0.08 ms
 * prepared). `prepared(sql\`...\`)` marks one with a leading comment, so its text runs unchanged
 * anywhere (PGlite, a log line); the pool's clients send a marked text as a named statement,
 * named by the text's hash. Only marked statements: node-postgres never deallocates one, so each
 * must be one of a few fixed texts (values are parameters, never spliced in).
 */
const PREPARED_MARK = '/* prepared */ ';

export function prepared<T>(query: RawBuilder<T>): RawBuilder<T> {
  return sql<T>`${sql.raw(PREPARED_MARK)}${query}`;
}

const statementNames = new Map<string, string>();

function statementName(text: string): string {
  let name = statementNames.get(text);
  if (name === undefined) {
    name = `blytz_${createHash('sha256').update(text).digest('hex').slice(0, 24)}`;
    statementNames.set(text, name);
  }
  return name;
}

/** A pool client that sends `prepared` statements as named ones (see PREPARED_MARK). */
class PreparingClient extends pg.Client {
  // pg's query has a dozen overloads; this one only looks at (text, values) and forwards the rest.
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  override query(...args: any[]): any {
    const [text, values] = args as [unknown, unknown];
    if (args.length === 2 && typeof text === 'string' && text.startsWith(PREPARED_MARK) && Array.isArray(values)) {
      return super.query({ name: statementName(text), text, values });
    }
    return (super.query as (...forwarded: unknown[]) => unknown)(...args);
  }
}

export function openPostgres(connectionString: string, poolSize = 10): DatabaseHandle {
  const pool = new pg.Pool({
    connectionString,
    max: poolSize,
    application_name: 'blytz',
    Client: PreparingClient,
    ...CONNECTION_SETTINGS,
  });
  // An idle client that loses its connection must not crash the process; the pool replaces it.
  pool.on('error', () => {});
  // Nor may one that is checked out between two queries (inside a transaction, say) when
  // Postgres restarts: the pool takes its own listener off while a client is lent out, and an
  // 'error' event with no listener kills the process. The client is then unusable; its next
  // query fails (and is retried by the caller) and the pool discards it on release.
  pool.on('connect', (client) => client.on('error', () => {}));
  const db = new Kysely<Database>({ dialect: new PostgresDialect({ pool }) });
  return {
    kind: 'postgres',
    db,
    dedicatedClient: () => new pg.Client({ connectionString, application_name: 'blytz-dedicated', ...CONNECTION_SETTINGS }),
    close: () => db.destroy(),
  };
}

/** An in-memory PGlite when `pglite` is created without a folder: used by tests. */
export function openPglite(pglite: PGlite): DatabaseHandle {
  const db = new Kysely<Database>({ dialect: new PGliteDialect({ pglite }) });
  return {
    kind: 'pglite',
    db,
    pgliteListen: async (channel, onNotify) => {
      const unsubscribe = await pglite.listen(channel, onNotify);
      return unsubscribe;
    },
    close: async () => {
      await db.destroy();
      if (!pglite.closed) await pglite.close();
    },
  };
}

/** Throws when the database does not answer (for /readyz). */
export async function pingDatabase(handle: DatabaseHandle): Promise<void> {
  await sql`SELECT 1`.execute(handle.db);
}
