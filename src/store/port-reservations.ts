import { sql, type Kysely } from 'kysely';
import type { DatabaseHandle } from './database.js';
import { PortsExhaustedError } from './errors.js';
import type { Database } from './schema.js';

export interface PortRange {
  from: number;
  to: number;
}

/**
 * Host ports handed to customer containers. A reservation is taken before the container is
 * created and found again by customer name after a crash; `port` and `customer` are both unique,
 * so two reconciles (or two controllers) can never hand out the same port or two ports to one
 * customer.
 */
export class PortReservations {
  readonly #db: Kysely<Database>;

  constructor(handle: DatabaseHandle, readonly range: PortRange) {
    this.#db = handle.db;
  }

  async find(customer: string): Promise<number | undefined> {
    const row = await this.#db.selectFrom('port_reservations').select('port').where('customer', '=', customer).executeTakeFirst();
    return row?.port;
  }

  /** All reservations, customer -> port (one query for a full reconcile pass). */
  async all(): Promise<Map<string, number>> {
    const rows = await this.#db.selectFrom('port_reservations').select(['customer', 'port']).execute();
    return new Map(rows.map((r) => [r.customer, r.port]));
  }

  /**
   * The customer's port, reserving the lowest free one when it has none. `avoid` skips ports
   * known to be taken on the host by something else (a clash seen at container start).
   */
  async reserve(customer: string, avoid: readonly number[] = []): Promise<number> {
    for (let attempt = 0; attempt < 20; attempt++) {
      const existing = await this.find(customer);
      if (existing !== undefined) return existing;
      const avoidList = avoid.length > 0 ? avoid : [-1];
      const inserted = await sql<{ port: number }>`
        INSERT INTO port_reservations (port, customer)
        SELECT p, ${customer}
        FROM generate_series(${this.range.from}::int, ${this.range.to}::int) AS p
        WHERE NOT EXISTS (SELECT 1 FROM port_reservations r WHERE r.port = p)
          AND p <> ALL(${avoidList}::int[])
        ORDER BY p
        LIMIT 1
        ON CONFLICT DO NOTHING
        RETURNING port
      `.execute(this.#db);
      const port = inserted.rows[0]?.port;
      if (port !== undefined) return port;
      // Nothing inserted: either a racing reservation took the port (retry) or none is free.
      const free = await sql<{ free: number }>`
        SELECT count(*)::int AS free FROM generate_series(${this.range.from}::int, ${this.range.to}::int) AS p
        WHERE NOT EXISTS (SELECT 1 FROM port_reservations r WHERE r.port = p) AND p <> ALL(${avoidList}::int[])
      `.execute(this.#db);
      if ((free.rows[0]?.free ?? 0) === 0 && (await this.find(customer)) === undefined) {
        throw new PortsExhaustedError(this.range);
      }
    }
    throw new Error(`could not reserve a port for ${customer} after 20 attempts (heavy contention)`);
  }

  /** Gives the customer a different port (its current one clashed on the host). */
  async move(customer: string, clashing: number): Promise<number> {
    await this.release(customer);
    return this.reserve(customer, [clashing]);
  }

  async release(customer: string): Promise<void> {
    await this.#db.deleteFrom('port_reservations').where('customer', '=', customer).execute();
  }
}
