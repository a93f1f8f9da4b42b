import { sql, type Kysely } from 'kysely';

/**
 * Backups and restores as desired state (issue 20). A `backups` row is asked for (`pending`:
 * by an operator, the schedule, a rollout about to touch the customer, the purge), taken by the
 * backup controller (`running`), and only once its archive is wholly in the store and its size
 * and checksum are recorded is it `succeeded`: a crash leaves a `running` row, which the next
 * leader takes again, never an archive listed as good. A `restores` row is the wish to put a
 * backup's state into a customer; its `step` is where a crash resumes.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
    CREATE TABLE backups (
      id bigserial PRIMARY KEY,
      customer text NOT NULL,
      reason text NOT NULL CHECK (reason IN ('manual', 'scheduled', 'pre-update', 'pre-purge')),
      -- What a reasoned backup protects (a pre-update backup: the spec hash about to be rolled out).
      ref text,
      state text NOT NULL CHECK (state IN ('pending', 'running', 'succeeded', 'failed')),
      attempts int NOT NULL DEFAULT 0,
      requested_at timestamptz NOT NULL DEFAULT now(),
      started_at timestamptz,
      finished_at timestamptz,
      storage text,
      location text,
      size_bytes bigint,
      sha256 text,
      openclaw_version text,
      runtime text,
      files int,
      duration_ms int,
      message text NOT NULL DEFAULT ''
    )
  `.execute(db);
  await sql`CREATE INDEX backups_customer ON backups (customer, id DESC)`.execute(db);
  await sql`CREATE INDEX backups_open ON backups (state) WHERE state IN ('pending', 'running')`.execute(db);
  // One backup per customer and reason ref (a rollout asks on every pass; it gets the same one).
  await sql`CREATE UNIQUE INDEX backups_ref ON backups (customer, reason, ref) WHERE ref IS NOT NULL`.execute(db);
  await sql`
    CREATE TABLE restores (
      id bigserial PRIMARY KEY,
      backup_id bigint NOT NULL REFERENCES backups (id),
      customer text NOT NULL,
      reason text NOT NULL DEFAULT 'manual' CHECK (reason IN ('manual', 'rollback')),
      step text NOT NULL CHECK (step IN ('pending', 'stopping', 'fetching', 'swapping', 'starting', 'succeeded', 'failed')),
      requested_at timestamptz NOT NULL DEFAULT now(),
      started_at timestamptz,
      finished_at timestamptz,
      message text NOT NULL DEFAULT ''
    )
  `.execute(db);
  // At most one restore in flight per customer.
  await sql`CREATE UNIQUE INDEX restores_active ON restores (customer) WHERE step NOT IN ('succeeded', 'failed')`.execute(db);
  await sql`CREATE INDEX restores_customer ON restores (customer, id DESC)`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`DROP TABLE restores, backups`.execute(db);
}
