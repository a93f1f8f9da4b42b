import { sql, type Kysely } from 'kysely';

/**
 * Billing and signup: a rate-limit table shared by every replica, and a marker telling a
 * suspension made by billing (lifted again when Stripe says the customer paid) from one made by
 * an operator (which billing never lifts).
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  // One row per limited key (e.g. `signup:203.0.113.9`); the window restarts in place, so the
  // table holds at most one row per client and old ones are pruned by the limiter.
  await sql`
    CREATE TABLE rate_limits (
      key text PRIMARY KEY CHECK (length(key) <= 200),
      window_start bigint NOT NULL,
      count integer NOT NULL
    )
  `.execute(db);
  await sql`CREATE INDEX rate_limits_window ON rate_limits (window_start)`.execute(db);

  await sql`ALTER TABLE customers ADD COLUMN billing_suspended boolean NOT NULL DEFAULT false`.execute(db);
  // Capacity checks count unexpired pending signups.
  await sql`CREATE INDEX customers_pending_expiry ON customers (pending_expires_at) WHERE state = 'pending'`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`DROP INDEX customers_pending_expiry`.execute(db);
  await sql`ALTER TABLE customers DROP COLUMN billing_suspended`.execute(db);
  await sql`DROP TABLE rate_limits`.execute(db);
}
