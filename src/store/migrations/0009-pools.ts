import { sql, type Kysely } from 'kysely';

/**
 * Warm pools (issue 22): pre-started assistants per plan, bound to a customer at payment.
 *
 * - `pools`: the desired state, a size per plan (no row: size 0, nothing runs).
 * - `pool_slots`: one row per slot, made before anything of the slot exists in the world, so a
 *   crash leaves nothing unrecorded. `state` only moves forward (warming -> ready -> bound, or ->
 *   retiring), each step a conditional UPDATE. A claim sets `customer` (unique: one customer, one
 *   slot) with the customer's incarnation (`customer_uid`, so a name held again after a purge never
 *   inherits a binding) and the hashes its container counts as from then on.
 * - A slot's host port is a reservation of its own (`slot = 'pool'`, customer `pool_<id>`): the
 *   port search skips it like any other, and a claim hands it over as the customer's `current`.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
    CREATE TABLE pools (
      plan text PRIMARY KEY,
      size integer NOT NULL CHECK (size BETWEEN 0 AND 100),
      template text NOT NULL,
      generation bigint NOT NULL DEFAULT 1,
      created_at timestamptz NOT NULL DEFAULT now(),
      updated_at timestamptz NOT NULL DEFAULT now()
    )
  `.execute(db);
  await sql`
    CREATE TABLE pool_slots (
      id bigserial PRIMARY KEY,
      plan text NOT NULL,
      template text NOT NULL,
      state text NOT NULL CHECK (state IN ('warming', 'ready', 'retiring', 'bound')),
      fingerprint text NOT NULL,
      gateway_token_enc text NOT NULL,
      customer text UNIQUE,
      customer_uid uuid,
      spec_hash text,
      own_hash text,
      created_at timestamptz NOT NULL DEFAULT now(),
      ready_at timestamptz,
      bound_at timestamptz,
      applied_at timestamptz,
      bind_failed text,
      CHECK ((state = 'bound') = (customer IS NOT NULL)),
      CHECK (state <> 'bound' OR (customer_uid IS NOT NULL AND spec_hash IS NOT NULL AND own_hash IS NOT NULL AND bound_at IS NOT NULL))
    )
  `.execute(db);
  await sql`CREATE INDEX pool_slots_claimable ON pool_slots (plan, template, fingerprint, id) WHERE state = 'ready'`.execute(db);
  await sql`ALTER TABLE port_reservations DROP CONSTRAINT port_reservations_slot_check`.execute(db);
  await sql`ALTER TABLE port_reservations ADD CONSTRAINT port_reservations_slot_check CHECK (slot IN ('current', 'next', 'pool'))`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`DELETE FROM port_reservations WHERE slot = 'pool'`.execute(db);
  await sql`ALTER TABLE port_reservations DROP CONSTRAINT port_reservations_slot_check`.execute(db);
  await sql`ALTER TABLE port_reservations ADD CONSTRAINT port_reservations_slot_check CHECK (slot IN ('current', 'next'))`.execute(db);
  await sql`DROP TABLE pool_slots, pools`.execute(db);
}
