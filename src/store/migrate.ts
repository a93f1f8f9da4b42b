import { sql } from 'kysely';
import { Migrator, type Migration, type MigrationResultSet } from 'kysely/migration';
import type { DatabaseHandle } from './database.js';
import * as m0001 from './migrations/0001-initial.js';
import * as m0002 from './migrations/0002-billing.js';
import * as m0003 from './migrations/0003-rollouts.js';
import * as m0004 from './migrations/0004-next-port.js';
import * as m0005 from './migrations/0005-model-key-secret-ref.js';
import * as m0006 from './migrations/0006-signup-ownership.js';
import * as m0007 from './migrations/0007-backups.js';
import * as m0008 from './migrations/0008-model-access.js';
import * as m0009 from './migrations/0009-pools.js';

/** Every migration, in order. New ones are appended; applied ones are never edited. */
const MIGRATIONS: Record<string, Migration> = {
  '0001-initial': m0001,
  '0002-billing': m0002,
  '0003-rollouts': m0003,
  '0004-next-port': m0004,
  '0005-model-key-secret-ref': m0005,
  '0006-signup-ownership': m0006,
  '0007-backups': m0007,
  '0008-model-access': m0008,
  '0009-pools': m0009,
};

// Any fixed number: two processes migrating at once queue on it.
const MIGRATION_LOCK_KEY = 0x626c_7974; // "blyt"

/**
 * Applies pending migrations. Safe to run twice and from two processes at once: the whole run
 * holds a session advisory lock on one connection, so a second migrator waits and then finds
 * nothing to do (Kysely's own lock does not cover creating its bookkeeping tables).
 */
export async function migrateToLatest(handle: DatabaseHandle): Promise<MigrationResultSet> {
  return handle.db.connection().execute(async (conn) => {
    await sql`SELECT pg_advisory_lock(${MIGRATION_LOCK_KEY})`.execute(conn);
    try {
      const migrator = new Migrator({
        db: conn,
        provider: { getMigrations: async () => MIGRATIONS },
      });
      return await migrator.migrateToLatest();
    } finally {
      await sql`SELECT pg_advisory_unlock(${MIGRATION_LOCK_KEY})`.execute(conn);
    }
  });
}

export async function migrateOrThrow(handle: DatabaseHandle): Promise<string[]> {
  const { error, results } = await migrateToLatest(handle);
  const failed = results?.find((r) => r.status === 'Error');
  if (error || failed) {
    throw new Error(
      `migration ${failed?.migrationName ?? ''} failed: ${String((error as Error | undefined)?.message ?? error)}`,
      {
        cause: error,
      },
    );
  }
  return (results ?? []).filter((r) => r.status === 'Success').map((r) => r.migrationName);
}
