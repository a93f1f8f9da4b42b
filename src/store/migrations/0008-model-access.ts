import { sql, type Kysely } from 'kysely';

/**
 * Included model access (issue 23): each customer's model credential, their token usage per
 * month, and the ledger of metered requests that makes metering exactly-once.
 *
 * - `model_credentials`: one per customer, looked up by the SHA-256 of the credential (the
 *   gateway never opens anything); the sealed copy is what the controller renders into the
 *   customer's openclaw.json. Deleted by the database itself when the customer is cancelled or
 *   deleted, whoever made that change (API, webhook, psql).
 * - `model_requests`: one row per metered provider answer, keyed by the gateway's request id, so
 *   a retried write of the same answer counts once; `overage_tokens` and `stripe_report` drive
 *   the Stripe meter events of plans that bill overage.
 * - `model_usage`: the running totals per customer and month (a `date`, the 1st, UTC), updated in
 *   the same transaction as the ledger row that adds to them.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
    CREATE TABLE model_credentials (
      customer text PRIMARY KEY REFERENCES customers (name) ON DELETE CASCADE,
      secret_hash text NOT NULL UNIQUE CHECK (secret_hash ~ '^[0-9a-f]{64}$'),
      secret_enc text NOT NULL,
      created_at timestamptz NOT NULL DEFAULT now()
    )
  `.execute(db);
  await sql`
    CREATE TABLE model_usage (
      customer text NOT NULL REFERENCES customers (name) ON DELETE CASCADE,
      period date NOT NULL CHECK (extract(day FROM period) = 1),
      requests bigint NOT NULL DEFAULT 0,
      input_tokens bigint NOT NULL DEFAULT 0,
      cached_input_tokens bigint NOT NULL DEFAULT 0,
      output_tokens bigint NOT NULL DEFAULT 0,
      updated_at timestamptz NOT NULL DEFAULT now(),
      PRIMARY KEY (customer, period)
    )
  `.execute(db);
  await sql`
    CREATE TABLE model_requests (
      id text PRIMARY KEY,
      customer text NOT NULL REFERENCES customers (name) ON DELETE CASCADE,
      period date NOT NULL,
      api text NOT NULL,
      model text NOT NULL,
      input_tokens bigint NOT NULL,
      cached_input_tokens bigint NOT NULL,
      output_tokens bigint NOT NULL,
      overage_tokens bigint NOT NULL DEFAULT 0,
      recorded_at timestamptz NOT NULL DEFAULT now(),
      -- NULL: nothing to report or not yet reported; 'sent'; 'skipped: <why>'.
      stripe_report text
    )
  `.execute(db);
  await sql`
    CREATE INDEX model_requests_unreported ON model_requests (recorded_at)
    WHERE overage_tokens > 0 AND stripe_report IS NULL
  `.execute(db);
  await sql`CREATE INDEX model_requests_recorded ON model_requests (recorded_at)`.execute(db);

  // Revocation at once, by the database: a cancelled or deleted customer's credential is gone in
  // the same transaction as the change. (Suspension keeps it, refused while the state is not
  // active, so a resumed assistant works again with the config it already has.)
  await sql`
    CREATE FUNCTION blytz_revoke_model_credential() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      IF NEW.state = 'cancelled' OR NEW.deleted_at IS NOT NULL THEN
        DELETE FROM model_credentials WHERE customer = NEW.name;
      END IF;
      RETURN NULL;
    END $$
  `.execute(db);
  await sql`
    CREATE TRIGGER customers_revoke_model_credential AFTER UPDATE OF state, deleted_at ON customers
    FOR EACH ROW EXECUTE FUNCTION blytz_revoke_model_credential()
  `.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`DROP TRIGGER customers_revoke_model_credential ON customers`.execute(db);
  await sql`DROP FUNCTION blytz_revoke_model_credential`.execute(db);
  await sql`DROP TABLE model_requests`.execute(db);
  await sql`DROP TABLE model_usage`.execute(db);
  await sql`DROP TABLE model_credentials`.execute(db);
}
