import { sql, type Kysely } from 'kysely';

/**
 * Blue-green updates: a customer may hold a second host port while its new container starts
 * beside the old one. Reservations get a slot: `current` (the port the route and the running
 * container use; every existing row) and `next` (the port of the container being switched to).
 * `port` stays the primary key, so no two customers (and no two slots) ever share a port, and a
 * customer holds at most one port per slot.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
    ALTER TABLE port_reservations
      ADD COLUMN slot text NOT NULL DEFAULT 'current' CHECK (slot IN ('current', 'next'))
  `.execute(db);
  await sql`ALTER TABLE port_reservations DROP CONSTRAINT port_reservations_customer_key`.execute(db);
  await sql`ALTER TABLE port_reservations ADD CONSTRAINT port_reservations_customer_slot_key UNIQUE (customer, slot)`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`DELETE FROM port_reservations WHERE slot = 'next'`.execute(db);
  await sql`ALTER TABLE port_reservations DROP CONSTRAINT port_reservations_customer_slot_key`.execute(db);
  await sql`ALTER TABLE port_reservations DROP COLUMN slot`.execute(db);
  await sql`ALTER TABLE port_reservations ADD CONSTRAINT port_reservations_customer_key UNIQUE (customer)`.execute(db);
}
