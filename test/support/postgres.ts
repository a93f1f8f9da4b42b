import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { inject } from 'vitest';
import { PGlite } from '@electric-sql/pglite';
import { openPglite, openPostgres, type DatabaseHandle } from '../../src/store/database.js';
import { migrateOrThrow } from '../../src/store/migrate.js';

/** The server the tests use (started by scripts/services.sh postgres). */
export function adminUrl(database?: string): string {
  const url = new URL(process.env['BLYTZ_TEST_DATABASE_URL'] ?? 'postgres://blytz:blytz@127.0.0.1:5432/blytz');
  if (database) url.pathname = `/${database}`;
  return url.toString();
}

export interface TestDatabase {
  url: string;
  name: string;
  handle: DatabaseHandle;
  drop(): Promise<void>;
}

/** A fresh, migrated database of its own for one test file, copied from the template. */
export async function createTestDatabase(): Promise<TestDatabase> {
  const name = `blytz_test_${randomBytes(6).toString('hex')}`;
  const admin = new pg.Client({ connectionString: adminUrl() });
  await admin.connect();
  try {
    await admin.query(`CREATE DATABASE ${name} TEMPLATE ${inject('templateDatabase')}`);
  } finally {
    await admin.end();
  }
  const url = adminUrl(name);
  const handle = openPostgres(url, 10);
  return {
    url,
    name,
    handle,
    drop: async () => {
      await handle.close();
      const c = new pg.Client({ connectionString: adminUrl() });
      await c.connect();
      try {
        await c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      } finally {
        await c.end();
      }
    },
  };
}

/** An in-memory, migrated PGlite database (the embedded default). */
export async function createPgliteDatabase(): Promise<TestDatabase> {
  const handle = openPglite(await PGlite.create());
  await migrateOrThrow(handle);
  return { url: 'pglite://memory', name: 'pglite', handle, drop: () => handle.close() };
}
