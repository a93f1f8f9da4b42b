import { sql, type Kysely } from 'kysely';

/**
 * Fleet rollouts: a change that outdates many customers' containers at once (the image, a
 * template manifest, a plan's limits) is applied in waves. One row per rollout (kept per
 * template and plan; a newer one supersedes the older), one row per customer taking part,
 * holding what the customer ran before (hash and image) so a failed or undone update goes back
 * to it. The controller's memory of a rollout lives here, so a restarted controller resumes it.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
    CREATE TABLE rollouts (
      id bigserial PRIMARY KEY,
      key text NOT NULL CHECK (length(key) <= 200),
      fingerprint text NOT NULL,
      image text NOT NULL,
      state text NOT NULL CHECK (state IN ('running', 'paused', 'superseded')),
      undone boolean NOT NULL DEFAULT false,
      paused_reason text,
      paused_message text,
      image_present boolean,
      started_at timestamptz NOT NULL DEFAULT now(),
      updated_at timestamptz NOT NULL DEFAULT now()
    )
  `.execute(db);
  await sql`CREATE INDEX rollouts_key ON rollouts (key, id DESC)`.execute(db);
  await sql`
    CREATE TABLE rollout_customers (
      rollout_id bigint NOT NULL REFERENCES rollouts (id) ON DELETE CASCADE,
      customer text NOT NULL,
      from_hash text,
      to_hash text NOT NULL,
      prev_image text,
      target text NOT NULL CHECK (target IN ('new', 'previous')),
      state text NOT NULL CHECK (state IN ('waiting', 'updating', 'rollingBack', 'done', 'failed')),
      started_at timestamptz,
      finished_at timestamptz,
      message text NOT NULL DEFAULT '',
      PRIMARY KEY (rollout_id, customer)
    )
  `.execute(db);
  await sql`CREATE INDEX rollout_customers_state ON rollout_customers (state, rollout_id)`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`DROP TABLE rollout_customers, rollouts`.execute(db);
}
