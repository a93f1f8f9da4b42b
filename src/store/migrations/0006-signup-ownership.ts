import { sql, type Kysely } from 'kysely';

/**
 * Signup ownership (issue 19).
 *
 * - `uid`: the identity of one incarnation of a customer, like a Kubernetes object's
 *   metadata.uid. A name can be held again later (a lapsed signup's, a purged customer's), but
 *   a new holder gets a new uid; Stripe objects carry the uid they were made for
 *   (`metadata.blytz_uid`) and sessions name the uid they were opened for, so nothing made for
 *   one holder of a name ever acts on the next.
 * - `signup_client`, `telegram_bot_token_hash`: who started an unpaid signup and with which
 *   bot, so unpaid signups can be bounded per client and per bot.
 * - One live assistant per email now means active or suspended: a pending signup is not an
 *   assistant yet, and a second signup with the same email must be able to start beside the
 *   first without touching it (only one of them can become live).
 * - `customer_sessions`: the single-use access token from signup is exchanged for a session
 *   (stored hashed, bound to the customer's uid).
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`ALTER TABLE customers ADD COLUMN uid uuid NOT NULL DEFAULT gen_random_uuid()`.execute(db);
  await sql`ALTER TABLE customers ADD COLUMN signup_client text CHECK (length(signup_client) <= 64)`.execute(db);
  await sql`ALTER TABLE customers ADD COLUMN telegram_bot_token_hash text`.execute(db);
  await sql`CREATE INDEX customers_pending_client ON customers (signup_client) WHERE state = 'pending'`.execute(db);
  await sql`CREATE INDEX customers_pending_bot ON customers (telegram_bot_token_hash) WHERE state = 'pending'`.execute(db);

  await sql`DROP INDEX customers_live_email`.execute(db);
  await sql`
    CREATE UNIQUE INDEX customers_live_email ON customers (lower(email))
    WHERE state IN ('active', 'suspended') AND deleted_at IS NULL
  `.execute(db);
  await sql`CREATE INDEX customers_email ON customers (lower(email))`.execute(db);

  await sql`
    CREATE TABLE customer_sessions (
      token_hash text PRIMARY KEY,
      customer text NOT NULL,
      customer_uid uuid NOT NULL,
      created_at timestamptz NOT NULL DEFAULT now(),
      expires_at timestamptz NOT NULL
    )
  `.execute(db);
  await sql`CREATE INDEX customer_sessions_customer ON customer_sessions (customer)`.execute(db);
  await sql`CREATE INDEX customer_sessions_expiry ON customer_sessions (expires_at)`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`DROP TABLE customer_sessions`.execute(db);
  await sql`DROP INDEX customers_email`.execute(db);
  await sql`DROP INDEX customers_live_email`.execute(db);
  await sql`
    CREATE UNIQUE INDEX customers_live_email ON customers (lower(email)) WHERE state <> 'cancelled' AND deleted_at IS NULL
  `.execute(db);
  await sql`DROP INDEX customers_pending_bot`.execute(db);
  await sql`DROP INDEX customers_pending_client`.execute(db);
  await sql`ALTER TABLE customers DROP COLUMN telegram_bot_token_hash`.execute(db);
  await sql`ALTER TABLE customers DROP COLUMN signup_client`.execute(db);
  await sql`ALTER TABLE customers DROP COLUMN uid`.execute(db);
}
