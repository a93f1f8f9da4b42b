import pg from 'pg';
import { openPostgres } from '../../src/store/database.js';
import { migrateOrThrow } from '../../src/store/migrate.js';
import { adminUrl, TEMPLATE_DATABASE } from './postgres.js';

/**
 * Runs once per test run: migrates a template database, so each test file can get its own
 * database as a fast copy (CREATE DATABASE ... TEMPLATE), like graphile-worker's tests.
 */
export default async function setup(): Promise<void> {
  const admin = new pg.Client({ connectionString: adminUrl() });
  await admin.connect();
  try {
    await admin.query(`DROP DATABASE IF EXISTS ${TEMPLATE_DATABASE} WITH (FORCE)`);
    await admin.query(`CREATE DATABASE ${TEMPLATE_DATABASE}`);
  } finally {
    await admin.end();
  }
  const handle = openPostgres(adminUrl(TEMPLATE_DATABASE), 2);
  try {
    await migrateOrThrow(handle);
  } finally {
    await handle.close();
  }
}
