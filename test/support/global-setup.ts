import { createHash } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import pg from 'pg';
import type { TestProject } from 'vitest/node';
import { openPostgres } from '../../src/store/database.js';
import { migrateOrThrow } from '../../src/store/migrate.js';
import { adminUrl } from './postgres.js';

declare module 'vitest' {
  export interface ProvidedContext {
    templateDatabase: string;
  }
}

/**
 * Runs once per test run: makes a migrated template database, so each test file can get its
 * own database as a fast copy (CREATE DATABASE ... TEMPLATE), like graphile-worker's tests. The
 * template is named by a hash of the migrations, so concurrent runs share it safely and a new
 * migration gets a new template.
 */
export default async function setup(project: TestProject): Promise<void> {
  const dir = join(import.meta.dirname, '../../src/store/migrations');
  const hash = createHash('sha256');
  for (const file of readdirSync(dir).sort()) hash.update(file).update(readFileSync(join(dir, file)));
  const name = `blytz_test_tpl_${hash.digest('hex').slice(0, 12)}`;

  const admin = new pg.Client({ connectionString: adminUrl() });
  await admin.connect();
  try {
    await admin.query('SELECT pg_advisory_lock(7262)');
    const exists = await admin.query('SELECT 1 FROM pg_database WHERE datname = $1', [name]);
    if (exists.rowCount === 0) {
      await admin.query(`CREATE DATABASE ${name}_build`).catch(async () => {
        await admin.query(`DROP DATABASE IF EXISTS ${name}_build WITH (FORCE)`);
        await admin.query(`CREATE DATABASE ${name}_build`);
      });
      const handle = openPostgres(adminUrl(`${name}_build`), 2);
      try {
        await migrateOrThrow(handle);
      } finally {
        await handle.close();
      }
      // Renamed only once complete: a half-migrated template is never used.
      await admin.query(`ALTER DATABASE ${name}_build RENAME TO ${name}`);
    }
  } finally {
    await admin.query('SELECT pg_advisory_unlock(7262)').catch(() => {});
    await admin.end();
  }
  project.provide('templateDatabase', name);
}
