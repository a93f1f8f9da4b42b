import { sql, type Kysely } from 'kysely';
import type { Database } from '../../src/store/schema.js';
import { waitFor } from './wait-for.js';

/**
 * Customers made the way an operator makes them in psql (a plain INSERT: the trigger bumps the
 * generation and wakes the controller), and the wait until the controller has them Ready.
 */

export interface InsertedCustomer {
  template?: string;
  instructions?: string;
  displayName?: string;
}

export async function insertActiveCustomers(db: Kysely<Database>, names: readonly string[], customer: InsertedCustomer = {}): Promise<void> {
  const { template = 'personal-assistant', instructions = 'I am a freelance developer.', displayName = 'Ada' } = customer;
  for (const name of names) {
    await sql`
      INSERT INTO customers (name, email, display_name, state, template, instructions)
      VALUES (${name}, ${`${name}@example.com`}, ${displayName}, 'active', ${template}, ${instructions})
    `.execute(db);
  }
}

/** Every customer's status phase by name (null: not reconciled yet). */
export async function phases(db: Kysely<Database>): Promise<Map<string, string | null>> {
  const r = await sql<{ name: string; phase: string | null }>`SELECT name, status->>'phase' AS phase FROM customers`.execute(db);
  return new Map(r.rows.map((row) => [row.name, row.phase]));
}

/** Waits until every one of `names` is Ready; `explain` turns a timeout into a more useful error (the server's log, say). */
export async function waitUntilReady(
  db: Kysely<Database>,
  names: readonly string[],
  timeoutMs: number,
  explain: (error: unknown) => Error = (error) => error as Error,
): Promise<void> {
  await waitFor(async () => {
    const all = await phases(db);
    return names.every((name) => all.get(name) === 'Ready');
  }, timeoutMs).catch((error: unknown) => {
    throw explain(error);
  });
}

/** Inserts active customers and waits until every one is Ready. */
export async function insertCustomersAndWaitUntilReady(
  db: Kysely<Database>,
  names: readonly string[],
  options: InsertedCustomer & { timeoutMs: number; explain?: (error: unknown) => Error },
): Promise<void> {
  await insertActiveCustomers(db, names, options);
  await waitUntilReady(db, names, options.timeoutMs, options.explain);
}
