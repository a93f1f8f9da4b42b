import { sql, type Kysely } from 'kysely';
import type { DatabaseHandle } from './database.js';
import { PortsExhaustedError } from './errors.js';
import type { Database } from './schema.js';
import type { HostPorts, PortSlot } from './store.js';

export interface PortRange {
  from: number;
  to: number;
}

/**
 * Host ports handed to customer containers. A reservation is taken before the container is
 * created and found again by customer name after a crash; `port` and `(customer, slot)` are
 * both unique, so two reconciles (or two controllers) can never hand out the same port or two
 * ports for one slot of one customer.
 *
 * A customer's reservation slots: `current` is the port it is served on; `next` is held only
 * while a blue-green update runs its new container beside the old one (see `promote`).
 */
export class PortReservations implements HostPorts {
  readonly #db: Kysely<Database>;
  /** The last reservation in flight (see `reserve`). */
  #tail: Promise<unknown> = Promise.resolve();
  /**
   * Every port below this one was taken when this process last looked (see `reserve`): the
   * search for a free port starts here, not at the bottom of the range, so it costs one probe
   * rather than one per reserved port. Lowered by this process's own releases.
   */
  #searchFrom: number;

  constructor(handle: DatabaseHandle, readonly range: PortRange) {
    this.#db = handle.db;
    this.#searchFrom = range.from;
  }

  async find(customer: string, slot: PortSlot = 'current'): Promise<number | undefined> {
    const row = await this.#db
      .selectFrom('port_reservations')
      .select('port')
      .where('customer', '=', customer)
      .where('slot', '=', slot)
      .executeTakeFirst();
    return row?.port;
  }

  /** The customer's `next` port, when a blue-green update holds one. */
  findNext(customer: string): Promise<number | undefined> {
    return this.find(customer, 'next');
  }

  /** All reservations of a slot, customer -> port (one query for a full reconcile pass). */
  async all(slot: PortSlot = 'current'): Promise<Map<string, number>> {
    const rows = await this.#db.selectFrom('port_reservations').select(['customer', 'port']).where('slot', '=', slot).execute();
    return new Map(rows.map((r) => [r.customer, r.port]));
  }

  /**
   * The customer's port in `slot`, reserving the lowest free one when it has none (a port another
   * process freed below the ones this process reserved is found once the range above is full).
   * `avoid` skips ports known to be taken on the host by something else (a clash seen at
   * container start).
   */
  async reserve(customer: string, avoid: readonly number[] = [], slot: PortSlot = 'current'): Promise<number> {
    // This process's reservations one at a time: concurrent workers would all pick the same
    // lowest free port and all but one lose the race (a retry each). Another process's
    // reservation (a second replica) still loses to the unique port and is retried.
    const run = this.#tail.then(() => this.#reserve(customer, avoid, slot));
    this.#tail = run.catch(() => undefined);
    return run;
  }

  async #reserve(customer: string, avoid: readonly number[], slot: PortSlot): Promise<number> {
    const avoidList = avoid.length > 0 ? avoid : [-1];
    for (let attempt = 0; attempt < 20; attempt++) {
      // From where this process last found the range taken; from the bottom once that finds
      // nothing, since another process (an operator in psql, a former leader) may have freed a
      // lower port: the port is then the lowest free one, and exhaustion is never a guess.
      const searchFrom = this.#searchFrom;
      // One statement: the port the customer holds, else the lowest free one, inserted. It also
      // says whether a free port was seen, so a lost race and no free port need no second query.
      const { rows } = await sql<{ held: number | null; inserted: number | null; free: number | null }>`
        WITH held AS (
          SELECT port FROM port_reservations WHERE customer = ${customer} AND slot = ${slot}
        ),
        free AS (
          SELECT p AS port FROM generate_series(${searchFrom}::int, ${this.range.to}::int) AS p
          WHERE NOT EXISTS (SELECT 1 FROM port_reservations r WHERE r.port = p) AND p <> ALL(${avoidList}::int[])
          ORDER BY p
          LIMIT 1
        ),
        inserted AS (
          INSERT INTO port_reservations (port, customer, slot)
          SELECT port, ${customer}, ${slot} FROM free WHERE NOT EXISTS (SELECT 1 FROM held)
          ON CONFLICT DO NOTHING
          RETURNING port
        )
        SELECT (SELECT port FROM held) AS held, (SELECT port FROM inserted) AS inserted, (SELECT port FROM free) AS free
      `.execute(this.#db);
      const row = rows[0];
      if (typeof row?.held === 'number') return row.held;
      if (typeof row?.inserted === 'number') {
        // Ports skipped as taken on the host are free in the store: the next search still looks at them.
        if (avoid.length === 0) this.#searchFrom = row.inserted + 1;
        return row.inserted;
      }
      if (typeof row?.free !== 'number') {
        if (searchFrom === this.range.from) throw new PortsExhaustedError(this.range);
        this.#searchFrom = this.range.from; // nothing above the hint: look at the whole range
        continue;
      }
      // A racing reservation (another process) took the free port, or reserved this customer's slot: look again.
    }
    throw new Error(`could not reserve a port for ${customer} after 20 attempts (heavy contention)`);
  }

  /** The second port of a blue-green update (idempotent: the one already held, if any). */
  reserveNext(customer: string, avoid: readonly number[] = []): Promise<number> {
    return this.reserve(customer, avoid, 'next');
  }

  /** Gives the customer a different port in `slot` (its port clashed on the host). */
  async move(customer: string, clashing: number, slot: PortSlot = 'current'): Promise<number> {
    await this.#releaseSlot(customer, slot);
    return this.reserve(customer, [clashing], slot);
  }

  /** Releases every port the customer holds (both slots): nothing leaks when it goes away. */
  async release(customer: string): Promise<void> {
    const released = await this.#db.deleteFrom('port_reservations').where('customer', '=', customer).returning('port').execute();
    for (const { port } of released) this.#freed(port);
  }

  /** Releases only the `next` port (a blue-green update abandoned or left over). */
  releaseNext(customer: string): Promise<void> {
    return this.#releaseSlot(customer, 'next');
  }

  /**
   * Ends a blue-green update: the `next` port becomes the customer's port and the old one is
   * released, in one transaction (a crash leaves either both slots or the promoted one).
   * Without a `next` port nothing changes. Returns the customer's port afterwards.
   */
  async promote(customer: string): Promise<number | undefined> {
    return this.#db.transaction().execute(async (tx) => {
      const next = await tx
        .selectFrom('port_reservations')
        .select('port')
        .where('customer', '=', customer)
        .where('slot', '=', 'next')
        .forUpdate()
        .executeTakeFirst();
      if (!next) {
        const current = await tx.selectFrom('port_reservations').select('port').where('customer', '=', customer).where('slot', '=', 'current').executeTakeFirst();
        return current?.port;
      }
      const old = await tx
        .deleteFrom('port_reservations')
        .where('customer', '=', customer)
        .where('slot', '=', 'current')
        .returning('port')
        .executeTakeFirst();
      await tx.updateTable('port_reservations').set({ slot: 'current' }).where('port', '=', next.port).execute();
      if (old) this.#freed(old.port);
      return next.port;
    });
  }

  async #releaseSlot(customer: string, slot: PortSlot): Promise<void> {
    const released = await this.#db
      .deleteFrom('port_reservations')
      .where('customer', '=', customer)
      .where('slot', '=', slot)
      .returning('port')
      .executeTakeFirst();
    if (released) this.#freed(released.port);
  }

  /** A port this process released: the next search starts no higher than it. */
  #freed(port: number): void {
    if (port >= this.range.from) this.#searchFrom = Math.min(this.#searchFrom, port);
  }
}
