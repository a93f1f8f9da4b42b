import { randomBytes } from 'node:crypto';
import { lstat, mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { PGlite } from '@electric-sql/pglite';
import { sql, type Kysely } from 'kysely';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../../src/observability/logger.js';
import { createChangeFeed, type ChangeFeed } from '../../src/store/change-feed.js';
import { CustomerStore } from '../../src/store/customer-store.js';
import { openDatabase, openPglite, openPostgres, prepared, type DatabaseHandle } from '../../src/store/database.js';
import { ConflictError, isUniqueViolation, PortsExhaustedError } from '../../src/store/errors.js';
import { migrateOrThrow } from '../../src/store/migrate.js';
import * as m0001 from '../../src/store/migrations/0001-initial.js';
import * as m0002 from '../../src/store/migrations/0002-billing.js';
import * as m0003 from '../../src/store/migrations/0003-rollouts.js';
import * as m0004 from '../../src/store/migrations/0004-next-port.js';
import * as m0005 from '../../src/store/migrations/0005-model-key-secret-ref.js';
import * as m0006 from '../../src/store/migrations/0006-signup-ownership.js';
import { PortReservations } from '../../src/store/port-reservations.js';
import { SecretBox } from '../../src/store/secret-box.js';
import { desiredCustomer, TEST_BOT_TOKEN, uniqueName } from '../support/fixtures.js';
import { adminUrl, createPgliteDatabase, createTestDatabase, type TestDatabase } from '../support/postgres.js';
import { waitFor } from '../support/wait-for.js';

const silentLogger = () =>
  createLogger({ level: 'silent', destination: new Writable({ write: (_c, _e, cb: () => void) => cb() }) });

const OTHER_BOT_TOKEN = '987654321:ZZyyxxwwvvuuttssrrqqppoonnmmllkkjji';

interface Backend {
  kind: 'postgres' | 'pglite';
  create(): Promise<TestDatabase>;
}

const backends: Backend[] = [
  { kind: 'postgres', create: createTestDatabase },
  { kind: 'pglite', create: createPgliteDatabase },
];

/** Records what a change feed reports. */
function recorder() {
  const changes: string[] = [];
  const gaps: string[] = [];
  return {
    changes,
    gaps,
    listener: { onChange: (name: string) => changes.push(name), onGap: (reason: string) => gaps.push(reason) },
  };
}

/** All migrations this build knows about, as recorded in a fully migrated database. */
async function appliedMigrations(handle: DatabaseHandle): Promise<string[]> {
  const result = await sql<{ name: string }>`SELECT name FROM kysely_migration ORDER BY name`.execute(handle.db);
  return result.rows.map((r) => r.name);
}

describe.each(backends)('customer store on $kind', ({ kind, create }) => {
  let db: TestDatabase;
  let box: SecretBox;
  let store: CustomerStore;

  /** A plain SQL statement, as an operator would type it into psql (not through the store). */
  async function psql(text: string, params: unknown[] = []): Promise<void> {
    if (kind === 'postgres') {
      const client = new pg.Client({ connectionString: db.url, application_name: 'psql' });
      await client.connect();
      try {
        await client.query(text, params);
      } finally {
        await client.end();
      }
    } else {
      // The embedded database has no second session: the same statement, as raw SQL.
      await sql.raw(interpolate(text, params)).execute(db.handle.db);
    }
  }

  async function rawRow(name: string): Promise<Record<string, unknown>> {
    const result = await sql<Record<string, unknown>>`SELECT * FROM customers WHERE name = ${name}`.execute(db.handle.db);
    const row = result.rows[0];
    if (!row) throw new Error(`no row for ${name}`);
    return row;
  }

  beforeAll(async () => {
    db = await create();
    box = new SecretBox(randomBytes(32));
    store = new CustomerStore(db.handle, box);
  });
  afterAll(async () => {
    await db?.drop();
  });

  describe('migrations', () => {
    it('run twice: the second run applies nothing', async () => {
      const known = await appliedMigrations(db.handle);
      expect(known).toContain('0001-initial');
      expect(await migrateOrThrow(db.handle)).toEqual([]);
      expect(await migrateOrThrow(db.handle)).toEqual([]);
      expect(await appliedMigrations(db.handle)).toEqual(known);
    });

    // (Postgres: the concurrent test at the end of this file starts from an empty database.)
    if (kind === 'pglite')
      it('apply every migration to a fresh database, then nothing', async () => {
        const handle = openPglite(await PGlite.create());
        try {
          const first = await migrateOrThrow(handle);
          expect(first).toEqual(await appliedMigrations(db.handle));
          expect(await migrateOrThrow(handle)).toEqual([]);
        } finally {
          await handle.close();
        }
      });
  });

  if (kind === 'pglite')
    it('0005 leaves rows written before it with no reference as JSON null (the store writes no change), and goes down cleanly', async () => {
      const handle = openPglite(await PGlite.create());
      const untyped = handle.db as unknown as Kysely<unknown>; // what a migration is given
      try {
        for (const migration of [m0001, m0002, m0003, m0004]) await migration.up(untyped);
        await sql`INSERT INTO customers (name, email, display_name, state, instructions) VALUES ('old', 'old@example.com', 'Old', 'active', '')`.execute(
          handle.db,
        );
        await m0005.up(untyped);
        // The store writes 'null' for "no reference": on an SQL NULL that would be a spec change.
        await sql`UPDATE customers SET model_api_key_secret_ref = 'null'::jsonb WHERE name = 'old'`.execute(handle.db);
        const generation = async () =>
          (await sql<{ generation: string }>`SELECT generation FROM customers WHERE name = 'old'`.execute(handle.db)).rows[0]
            ?.generation;
        expect(Number(await generation())).toBe(1);
        await sql`UPDATE customers SET model_api_key_secret_ref = '{"name":"keys","key":"old"}'::jsonb WHERE name = 'old'`.execute(
          handle.db,
        );
        expect(Number(await generation())).toBe(2);
        // Another spec column changed with it: one new generation, not two.
        await sql`UPDATE customers SET model_api_key_secret_ref = 'null'::jsonb, instructions = 'both' WHERE name = 'old'`.execute(
          handle.db,
        );
        expect(Number(await generation())).toBe(3);
        await m0005.down(untyped);
        await sql`UPDATE customers SET instructions = 'still counted' WHERE name = 'old'`.execute(handle.db);
        expect(Number(await generation())).toBe(4);
      } finally {
        await handle.close();
      }
    });

  if (kind === 'pglite')
    it('keeps the embedded database owner-only on disk: files 0600, folders 0700 (PGlite writes 0666)', async () => {
      const dataDir = await mkdtemp(join(tmpdir(), 'blytz-pglite-modes-'));
      // Every entry whose mode is not owner-only: 0600 for a file, 0700 for a folder.
      const loose = async (dir: string, out: string[] = []): Promise<string[]> => {
        for (const entry of await readdir(dir)) {
          const path = join(dir, entry);
          const stat = await lstat(path);
          if ((stat.mode & 0o777) !== (stat.isDirectory() ? 0o700 : 0o600)) out.push(`${path} ${(stat.mode & 0o777).toString(8)}`);
          if (stat.isDirectory()) await loose(path, out);
        }
        return out;
      };
      try {
        const handle = await openDatabase({ dataDir });
        expect(await loose(dataDir)).toEqual([]);
        await migrateOrThrow(handle); // writes new relation files while open
        await handle.close();
        expect(await loose(dataDir)).toEqual([]);
        expect((await readdir(join(dataDir, 'pglite'))).length).toBeGreaterThan(10);
      } finally {
        await rm(dataDir, { recursive: true, force: true });
      }
    });

  if (kind === 'pglite')
    it('0006 gives every existing row its own uid, lets two pending signups share an email but never two live ones, and goes down cleanly', async () => {
      const handle = openPglite(await PGlite.create());
      const untyped = handle.db as unknown as Kysely<unknown>;
      try {
        for (const migration of [m0001, m0002, m0003, m0004, m0005]) await migration.up(untyped);
        for (const name of ['a', 'b'])
          await sql`INSERT INTO customers (name, email, display_name, state) VALUES (${name}, ${`${name}@example.com`}, 'X', 'active')`.execute(
            handle.db,
          );
        await m0006.up(untyped);
        const uids = (await sql<{ uid: string }>`SELECT uid FROM customers`.execute(handle.db)).rows.map((r) => r.uid);
        expect(new Set(uids).size).toBe(2);
        const insert = (name: string, state: string) =>
          sql`INSERT INTO customers (name, email, display_name, state) VALUES (${name}, 'p@example.com', 'P', ${state})`.execute(handle.db);
        await insert('p1', 'pending');
        await insert('p2', 'pending');
        await insert('p3', 'active');
        await expect(insert('p4', 'suspended')).rejects.toThrow(/customers_live_email/);
        await sql`DELETE FROM customers WHERE name IN ('p1', 'p2', 'p3')`.execute(handle.db);
        await m0006.down(untyped);
        await insert('p1', 'pending');
        await expect(insert('p2', 'pending')).rejects.toThrow(/customers_live_email/);
      } finally {
        await handle.close();
      }
    });

  describe('generation', () => {
    it('bumps only on spec changes', async () => {
      const name = uniqueName('gen');
      const first = await store.apply(desiredCustomer(name, { telegram: { botToken: TEST_BOT_TOKEN } }));
      expect(first).toMatchObject({ created: true, changed: true });
      expect(first.customer.generation).toBe(1);

      // A no-op apply changes nothing at all.
      const again = await store.apply(desiredCustomer(name, { telegram: { botToken: TEST_BOT_TOKEN } }));
      expect(again).toMatchObject({ created: false, changed: false });
      expect(again.customer.generation).toBe(1);
      expect(again.customer.resourceVersion).toBe(first.customer.resourceVersion);

      // Status writes never bump it.
      expect(await store.updateStatus(name, { phase: 'Provisioning', observedGeneration: 1 })).toBe(true);
      expect(await store.updateStatus(name, { phase: 'Ready', observedGeneration: 1, hostPort: 30001 })).toBe(true);
      expect((await store.get(name))?.generation).toBe(1);

      // The same bot token again keeps the old ciphertext, so it is no spec change.
      const sealedBefore = (await rawRow(name))['telegram_bot_token_enc'];
      const sameToken = await store.apply(desiredCustomer(name, { telegram: { botToken: TEST_BOT_TOKEN } }));
      expect(sameToken.changed).toBe(false);
      expect(sameToken.customer.generation).toBe(1);
      expect((await rawRow(name))['telegram_bot_token_enc']).toBe(sealedBefore);

      // Omitting the write-only token keeps it too.
      const omitted = await store.apply(desiredCustomer(name));
      expect(omitted.changed).toBe(false);
      expect(omitted.customer.spec.telegram.botTokenSet).toBe(true);

      // Real spec changes do.
      const instructions = await store.apply(desiredCustomer(name, { instructions: 'new instructions' }));
      expect(instructions).toMatchObject({ created: false, changed: true });
      expect(instructions.customer.generation).toBe(2);
      const token = await store.apply(
        desiredCustomer(name, { instructions: 'new instructions', telegram: { botToken: OTHER_BOT_TOKEN } }),
      );
      expect(token.customer.generation).toBe(3);
      expect((await store.readSecrets(name)).telegramBotToken).toBe(OTHER_BOT_TOKEN);
      expect(await store.setState(name, 'suspended')).toBe(true);
      expect((await store.get(name))?.generation).toBe(4);
      expect((await store.get(name))?.status).toMatchObject({ phase: 'Ready', hostPort: 30001 });
    });

    it('lets several writers create the same new customer at once', async () => {
      for (let round = 0; round < 5; round++) {
        const name = uniqueName('race');
        const results = await Promise.all(Array.from({ length: 8 }, () => store.apply(desiredCustomer(name))));
        expect(results.filter((r) => r.created)).toHaveLength(1);
        expect(results.map((r) => r.customer.generation)).toEqual(Array.from({ length: 8 }, () => 1));
      }
    });

    it('treats a re-applied secret reference as no change, and another reference as a spec change', async () => {
      const name = uniqueName('ref');
      const ref = {
        telegram: { botTokenSecretRef: { name: 'bot-tokens', key: 'alice' } },
        model: { provider: 'anthropic' as const, apiKeySecretRef: { name: 'model-keys', key: 'alice' } },
      };
      const first = await store.apply(desiredCustomer(name, ref));
      const again = await store.apply(desiredCustomer(name, ref));
      expect(again.changed).toBe(false);
      expect(again.customer.resourceVersion).toBe(first.customer.resourceVersion);
      expect(again.customer.spec.telegram.botTokenSecretRef).toEqual({ name: 'bot-tokens', key: 'alice' });
      expect(again.customer.spec.model.apiKeySecretRef).toEqual({ name: 'model-keys', key: 'alice' });
      // Another key of the Secret: a new generation (the trigger knows the column), and psql too.
      const moved = await store.apply(
        desiredCustomer(name, { ...ref, model: { ...ref.model, apiKeySecretRef: { name: 'model-keys', key: 'bob' } } }),
      );
      expect(moved.changed).toBe(true);
      expect(moved.customer.generation).toBe(first.customer.generation + 1);
      await psql(`UPDATE customers SET model_api_key_secret_ref = NULL WHERE name = $1`, [name]);
      const cleared = await store.get(name);
      expect(cleared?.generation).toBe(first.customer.generation + 2);
      expect(cleared?.spec.model.apiKeySecretRef).toBeUndefined();
    });

    it('counts a psql-style UPDATE of a spec column as a spec change', async () => {
      const name = uniqueName('psql');
      await store.apply(desiredCustomer(name));
      await psql(`UPDATE customers SET instructions = 'set by hand' WHERE name = $1`, [name]);
      const customer = await store.get(name);
      expect(customer?.generation).toBe(2);
      expect(customer?.spec.instructions).toBe('set by hand');
    });
  });

  describe('status', () => {
    it('is written only when changed and never over a newer observedGeneration', async () => {
      const name = uniqueName('status');
      await store.apply(desiredCustomer(name));
      await store.apply(desiredCustomer(name, { instructions: 'v2' }));
      const ready = { phase: 'Ready' as const, observedGeneration: 2, url: 'https://x.blytz.localhost' };
      expect(await store.updateStatus(name, ready)).toBe(true);
      const rv = (await store.get(name))?.resourceVersion;
      // Same status, keys in another order: nothing written.
      expect(await store.updateStatus(name, { url: ready.url, observedGeneration: 2, phase: 'Ready' })).toBe(false);
      expect((await store.get(name))?.resourceVersion).toBe(rv);
      // A slow reconcile of generation 1 loses.
      expect(await store.updateStatus(name, { phase: 'Provisioning', observedGeneration: 1 })).toBe(false);
      expect((await store.get(name))?.status).toEqual(ready);
      // The same generation or a newer one wins.
      expect(await store.updateStatus(name, { phase: 'Degraded', observedGeneration: 2 })).toBe(true);
      expect((await store.get(name))?.status).toEqual({ phase: 'Degraded', observedGeneration: 2 });
      expect((await store.get(name))?.generation).toBe(2);
    });

    it('reports false for an unknown customer', async () => {
      expect(await store.updateStatus(uniqueName('ghost'), { phase: 'Ready', observedGeneration: 1 })).toBe(false);
    });
  });

  describe('reads across customers', () => {
    it('say who is reachable, count phases and list the customers that want a route', async () => {
      const ports = new PortReservations(db.handle, { from: 41900, to: 41909 });
      const [active, suspended, pending, paused, cancelled, unported] = [
        'active',
        'suspended',
        'pending',
        'paused',
        'cancelled',
        'unported',
      ].map((prefix) => uniqueName(prefix)) as [string, string, string, string, string, string];
      const phasesBefore = await store.countByPhase();
      await store.apply(desiredCustomer(active, { state: 'active' }));
      await store.apply(desiredCustomer(suspended, { state: 'suspended' }));
      await store.apply(desiredCustomer(pending, { state: 'pending' }));
      await store.apply(desiredCustomer(paused, { state: 'active', paused: true }));
      await store.apply(desiredCustomer(cancelled, { state: 'cancelled' }));
      await store.apply(desiredCustomer(unported, { state: 'active' }));
      const port = await ports.reserve(active);
      await ports.reserve(paused);
      await store.updateStatus(active, { phase: 'Ready', observedGeneration: 1 });

      expect(await store.isReachable(active)).toBe(true);
      expect(await store.isReachable(suspended)).toBe(true);
      expect(await store.isReachable(pending)).toBe(false);
      expect(await store.isReachable(cancelled)).toBe(false);
      expect(await store.isReachable(uniqueName('ghost'))).toBe(false);

      const phasesAfter = await store.countByPhase();
      expect((phasesAfter.get('Ready') ?? 0) - (phasesBefore.get('Ready') ?? 0)).toBe(1);
      // Never reconciled: Pending.
      expect((phasesAfter.get('Pending') ?? 0) - (phasesBefore.get('Pending') ?? 0)).toBe(5);

      const mine = new Set([active, suspended, pending, paused, cancelled, unported]);
      const routed = (await store.routedCustomers()).filter((c) => mine.has(c.name));
      expect(routed.sort((a, b) => a.name.localeCompare(b.name))).toEqual(
        [
          { name: active, state: 'active', port },
          { name: suspended, state: 'suspended', port: undefined },
          { name: unported, state: 'active', port: undefined },
        ].sort((a, b) => a.name.localeCompare(b.name)),
      );
    });
  });

  describe('change feed', () => {
    let feed: ChangeFeed;
    const seen = recorder();

    beforeAll(async () => {
      feed = createChangeFeed(db.handle, silentLogger());
      await feed.start(seen.listener);
    });
    afterAll(async () => {
      await feed?.stop();
    });

    it('notifies on create, on a psql-style UPDATE, and not on a status-only update', async () => {
      const name = uniqueName('feed');
      await store.apply(desiredCustomer(name));
      await waitFor(() => seen.changes.includes(name));

      seen.changes.length = 0;
      await psql(`UPDATE customers SET instructions = 'changed in psql' WHERE name = $1`, [name]);
      await waitFor(() => seen.changes.includes(name));

      // A status write, then a spec change to another customer as a marker: notifications arrive
      // in commit order, so once the marker is in, a notification for the status write would be too.
      const marker = uniqueName('marker');
      seen.changes.length = 0;
      expect(await store.updateStatus(name, { phase: 'Ready', observedGeneration: 2 })).toBe(true);
      await psql(`UPDATE customers SET status = '{"phase":"Failed"}'::jsonb WHERE name = $1`, [name]);
      await store.apply(desiredCustomer(marker));
      await waitFor(() => seen.changes.includes(marker));
      expect(seen.changes).not.toContain(name);
    });

    if (kind === 'postgres')
      it('survives a killed connection, reports the gap and still delivers', async () => {
        const backends = async () =>
          (
            await sql<{ pid: number }>`
            SELECT pid FROM pg_stat_activity
            WHERE application_name = 'blytz-dedicated' AND datname = current_database()
          `.execute(db.handle.db)
          ).rows.map((r) => r.pid);
        const before = await waitFor(async () => {
          const pids = await backends();
          return pids.length === 1 ? pids : undefined;
        });
        const gapsBefore = seen.gaps.length;
        await sql`SELECT pg_terminate_backend(${before[0]})`.execute(db.handle.db);

        await waitFor(() => seen.gaps.length > gapsBefore);
        const after = await waitFor(async () => {
          const pids = await backends();
          return pids.length === 1 && pids[0] !== before[0] ? pids : undefined;
        });
        expect(after[0]).not.toBe(before[0]);

        const name = uniqueName('after-gap');
        await store.apply(desiredCustomer(name));
        await waitFor(() => seen.changes.includes(name));
        await psql(`UPDATE customers SET paused = true WHERE name = $1`, [name]);
        seen.changes.length = 0;
        await psql(`UPDATE customers SET paused = false WHERE name = $1`, [name]);
        await waitFor(() => seen.changes.includes(name));
      });
  });

  if (kind === 'postgres') {
    it('change feed start fails loudly when the database is unreachable, every time', async () => {
      const unreachable = openPostgres('postgres://blytz:blytz@127.0.0.1:1/nowhere', 1);
      const feed = createChangeFeed(unreachable, silentLogger());
      try {
        await expect(feed.start(recorder().listener)).rejects.toThrow();
        // A second start must try again, not pretend to be running.
        await expect(feed.start(recorder().listener)).rejects.toThrow();
      } finally {
        await feed.stop();
        await unreachable.close();
      }
    });
  }

  describe('prepared statements', () => {
    it('run with their values, the same text again and again', async () => {
      for (const n of [1, 2, 3]) {
        const { rows } = await prepared(sql<{ n: number; twice: string }>`SELECT ${n}::int AS n, ${`x${n}`} || ${`x${n}`} AS twice`).execute(
          db.handle.db,
        );
        expect(rows).toEqual([{ n, twice: `x${n}x${n}` }]);
      }
    });

    if (kind === 'postgres') {
      it('are parsed once per connection on Postgres; other statements are not kept', async () => {
        const one = openPostgres(db.url, 1); // one connection, so every query below shares its session
        try {
          const marked = (n: number) => prepared(sql<{ n: number }>`SELECT ${n}::int + 0 AS n`);
          for (const n of [7, 8, 9]) expect((await marked(n).execute(one.db)).rows).toEqual([{ n }]);
          expect((await sql<{ n: number }>`SELECT ${5}::int + 1 AS n`.execute(one.db)).rows).toEqual([{ n: 6 }]);
          const { rows } = await sql<{ statement: string }>`SELECT statement FROM pg_prepared_statements`.execute(one.db);
          expect(rows.map((r) => r.statement)).toEqual([expect.stringContaining('SELECT $1::int + 0 AS n')]);
        } finally {
          await one.close();
        }
      });
    }
  });

  if (kind === 'postgres') {
    it('survives the server ending a connection lent out inside a transaction (a Postgres restart)', async () => {
      // node-postgres emits 'error' on a checked-out client that is between two queries; with
      // no listener that event kills the process (a chaos run lost the controller this way).
      const uncaught: unknown[] = [];
      const record = (error: unknown) => uncaught.push(error);
      process.on('uncaughtException', record);
      try {
        const transaction = db.handle.db.transaction().execute(async (trx) => {
          const { rows } = await sql<{ pid: number }>`SELECT pg_backend_pid() AS pid`.execute(trx);
          await psql('SELECT pg_terminate_backend($1)', [rows[0]?.pid]);
          // The session is gone on the server before the transaction's next query.
          await waitFor(async () => {
            const alive = await sql`SELECT 1 FROM pg_stat_activity WHERE pid = ${rows[0]?.pid ?? 0}`.execute(db.handle.db);
            return alive.rows.length === 0;
          });
          await sql`SELECT 1`.execute(trx);
        });
        await expect(transaction).rejects.toThrow();
        // The dead connection is discarded: the next query gets a live one.
        const { rows } = await sql<{ one: number }>`SELECT 1 AS one`.execute(db.handle.db);
        expect(rows[0]?.one).toBe(1);
      } finally {
        process.off('uncaughtException', record);
      }
      expect(uncaught).toEqual([]);
    });
  }

  describe('uniqueness', () => {
    it.each(['stripe_subscription_id', 'stripe_customer_id', 'stripe_checkout_session_id'] as const)(
      'rejects two customers with the same %s',
      async (column) => {
        const a = uniqueName('stripe');
        const b = uniqueName('stripe');
        await store.apply(desiredCustomer(a));
        await store.apply(desiredCustomer(b));
        const id = `id_${randomBytes(6).toString('hex')}`;
        await store.db
          .updateTable('customers')
          .set({ [column]: id })
          .where('name', '=', a)
          .execute();
        const error = await store.db
          .updateTable('customers')
          .set({ [column]: id })
          .where('name', '=', b)
          .execute()
          .then(
            () => undefined,
            (e: unknown) => e,
          );
        expect(error).toBeDefined();
        expect(isUniqueViolation(error)).toBe(true);
        expect((await store.get(a))?.billing).toBeDefined();
      },
    );

    it('allows one live customer per email, and another once the first is cancelled', async () => {
      const email = `${uniqueName('mail')}@example.com`;
      const first = uniqueName('live');
      const second = uniqueName('live');
      await store.apply(desiredCustomer(first, { email }));
      await expect(store.apply(desiredCustomer(second, { email }))).rejects.toThrow(ConflictError);
      // Email comparison ignores case.
      await expect(store.apply(desiredCustomer(second, { email: email.toUpperCase() }))).rejects.toThrow(
        /already has a live assistant/,
      );
      expect(await store.get(second)).toBeUndefined();

      expect(await store.setState(first, 'cancelled')).toBe(true);
      expect((await store.get(first))?.cancelledAt).toBeInstanceOf(Date);
      const created = await store.apply(desiredCustomer(second, { email }));
      expect(created.created).toBe(true);
      // And the cancelled one cannot come back while the new one is live.
      await expect(store.apply(desiredCustomer(first, { email, state: 'active' }))).rejects.toThrow(ConflictError);
    });
  });

  describe('port reservations', () => {
    it('hands out the lowest free port, the same one again, and frees it on release', async () => {
      const ports = new PortReservations(db.handle, { from: 41000, to: 41009 });
      const [a, b, c] = [uniqueName('port'), uniqueName('port'), uniqueName('port')];
      expect(await ports.reserve(a)).toBe(41000);
      expect(await ports.reserve(b)).toBe(41001);
      expect(await ports.reserve(a)).toBe(41000);
      expect(await ports.find(a)).toBe(41000);
      await ports.release(a);
      expect(await ports.find(a)).toBeUndefined();
      expect(await ports.reserve(c)).toBe(41000);
      expect(await ports.reserve(a)).toBe(41002);
      expect((await ports.all()).get(b)).toBe(41001);
    });

    it('finds a port another process freed below the ones it handed out, once the range above is full', async () => {
      const ours = new PortReservations(db.handle, { from: 41200, to: 41203 });
      const theirs = new PortReservations(db.handle, { from: 41200, to: 41203 });
      const [a, b, c, d, e] = [uniqueName('hint'), uniqueName('hint'), uniqueName('hint'), uniqueName('hint'), uniqueName('hint')];
      expect(await ours.reserve(a)).toBe(41200);
      expect(await ours.reserve(b)).toBe(41201);
      await theirs.release(a); // another replica, or an operator in psql
      expect(await ours.reserve(c)).toBe(41202);
      expect(await ours.reserve(d)).toBe(41203);
      expect(await ours.reserve(e)).toBe(41200);
      await expect(ours.reserve(uniqueName('hint'))).rejects.toThrow(PortsExhaustedError);
      // Its own releases it knows at once.
      await ours.release(b);
      expect(await ours.reserve(a)).toBe(41201);
    });

    it("are read with the customer's reconcile view, in the same query", async () => {
      const name = uniqueName('view');
      await store.apply(desiredCustomer(name));
      const ports = new PortReservations(db.handle, { from: 41300, to: 41309 });
      expect((await store.reconcileView(name))?.ports).toEqual({});
      await ports.reserve(name);
      await ports.reserveNext(name);
      expect((await store.reconcileView(name))?.ports).toEqual({ current: 41300, next: 41301 });
    });

    it('skips ports to avoid and moves a customer off a clashing port', async () => {
      const ports = new PortReservations(db.handle, { from: 41100, to: 41109 });
      const a = uniqueName('avoid');
      expect(await ports.reserve(a, [41100, 41101])).toBe(41102);
      expect(await ports.move(a, 41102)).toBe(41100);
    });

    it('gives 20 customers reserving at once 20 different ports', async () => {
      const ports = new PortReservations(db.handle, { from: 42000, to: 42029 });
      const customers = Array.from({ length: 20 }, () => uniqueName('many'));
      const got = await Promise.all(customers.map((c) => ports.reserve(c)));
      expect(new Set(got).size).toBe(20);
      for (const port of got) expect(port).toBeGreaterThanOrEqual(42000);
      for (const port of got) expect(port).toBeLessThanOrEqual(42029);
      // Lowest free first: exactly the first 20 ports.
      expect([...got].sort((x, y) => x - y)).toEqual(Array.from({ length: 20 }, (_, i) => 42000 + i));
      const all = await ports.all();
      for (const [i, c] of customers.entries()) expect(all.get(c)).toBe(got[i]);
    });

    it('gives one customer reserving 20 times at once one port', async () => {
      const ports = new PortReservations(db.handle, { from: 42100, to: 42129 });
      const customer = uniqueName('one');
      const got = await Promise.all(Array.from({ length: 20 }, () => ports.reserve(customer)));
      expect(new Set(got)).toEqual(new Set([42100]));
      const rows = await store.db.selectFrom('port_reservations').selectAll().where('customer', '=', customer).execute();
      expect(rows).toHaveLength(1);
    });

    it('fails with PortsExhaustedError when the range is full', async () => {
      const ports = new PortReservations(db.handle, { from: 43000, to: 43001 });
      const [a, b, c] = [uniqueName('full'), uniqueName('full'), uniqueName('full')];
      await ports.reserve(a);
      await ports.reserve(b);
      await expect(ports.reserve(c)).rejects.toThrow(PortsExhaustedError);
      await expect(ports.reserve(c)).rejects.toThrow(/43000-43001/);
      // The customers that have one still get theirs.
      expect(await ports.reserve(b)).toBe(43001);
      await ports.release(a);
      expect(await ports.reserve(c)).toBe(43000);
    });

    it('holds a second (next) port per customer for a blue-green update, promotes it atomically and releases both', async () => {
      const ports = new PortReservations(db.handle, { from: 43100, to: 43109 });
      const [a, b] = [uniqueName('bg'), uniqueName('bg')];
      expect(await ports.reserve(a)).toBe(43100);
      expect(await ports.reserveNext(a)).toBe(43101);
      expect(await ports.reserveNext(a)).toBe(43101); // idempotent
      // Nobody else gets a port a customer holds in either slot.
      expect(await ports.reserve(b)).toBe(43102);
      expect(await ports.find(a)).toBe(43100);
      expect(await ports.findNext(a)).toBe(43101);
      expect((await ports.all()).get(a)).toBe(43100);
      expect((await ports.all('next')).get(a)).toBe(43101);
      // Twenty promotions at once: one moves the slot, the rest find nothing to do.
      const promoted = await Promise.all(Array.from({ length: 20 }, () => ports.promote(a)));
      expect(new Set(promoted)).toEqual(new Set([43101]));
      expect(await ports.find(a)).toBe(43101);
      expect(await ports.findNext(a)).toBeUndefined();
      expect(await ports.reserve(b)).toBe(43102);
      // The old port is free again; a leftover next port is released alone.
      expect(await ports.reserveNext(a)).toBe(43100);
      await ports.releaseNext(a);
      expect(await ports.find(a)).toBe(43101);
      expect(await ports.findNext(a)).toBeUndefined();
      // Cancelling releases every slot.
      await ports.reserveNext(a);
      await ports.release(a);
      const rows = await store.db.selectFrom('port_reservations').selectAll().where('customer', '=', a).execute();
      expect(rows).toEqual([]);
    });
  });

  describe('events', () => {
    it('aggregate repeats into one event with a count', async () => {
      const name = uniqueName('events');
      await store.apply(desiredCustomer(name));
      for (let i = 0; i < 3; i++)
        await store.recordEvent(name, { type: 'Warning', reason: 'BackOff', message: 'container exited 1' });
      await store.recordEvent(name, { type: 'Normal', reason: 'Created', message: 'container created' });
      await store.recordEvent(name, { type: 'Warning', reason: 'BackOff', message: 'container exited 2' });
      const events = await store.listEvents(name);
      expect(events).toHaveLength(3);
      const backOff = events.find((e) => e.message === 'container exited 1');
      expect(backOff).toMatchObject({ type: 'Warning', reason: 'BackOff', count: 3 });
      expect(backOff!.lastSeen.getTime()).toBeGreaterThanOrEqual(backOff!.firstSeen.getTime());
      expect(events.find((e) => e.reason === 'Created')?.count).toBe(1);
      expect(await store.listEvents(uniqueName('none'))).toEqual([]);
    });

    it('go with the customer when it is marked deleted: a new customer of the same name starts clean', async () => {
      const name = uniqueName('gone');
      await store.apply(desiredCustomer(name));
      await store.recordEvent(name, { type: 'Normal', reason: 'Created', message: 'container created' });
      await store.markDeleted(name);
      expect(await store.listEvents(name)).toEqual([]);
      // Marking again changes nothing and deletes nothing new.
      await store.recordEvent(name, { type: 'Normal', reason: 'Late', message: 'written after' });
      await store.markDeleted(name);
      expect((await store.listEvents(name)).map((e) => e.reason)).toEqual(['Late']);
    });

    it('keeps the 100 most recent per customer', async () => {
      const name = uniqueName('many');
      for (let i = 1; i <= 105; i++) await store.recordEvent(name, { type: 'Normal', reason: 'Step', message: `step ${i}` });
      // A repeat of a kept one is counted, not added: nothing more goes.
      await store.recordEvent(name, { type: 'Normal', reason: 'Step', message: 'step 50' });
      const rows = await store.db.selectFrom('customer_events').select('message').where('customer', '=', name).execute();
      expect(rows).toHaveLength(100);
      const kept = new Set(rows.map((r) => r.message));
      for (let i = 1; i <= 5; i++) expect(kept.has(`step ${i}`)).toBe(false);
      expect(kept.has('step 6')).toBe(true);
      expect(kept.has('step 105')).toBe(true);
      // (Found by message, not by position: two writes can share a last_seen on a coarse clock.)
      expect((await store.listEvents(name, 100)).find((e) => e.message === 'step 50')).toMatchObject({ count: 2 });
    });

    it("write with a reconcile's status in one statement: repeats counted together, the latest first, the status on its usual terms", async () => {
      const name = uniqueName('batch');
      await store.apply(desiredCustomer(name));
      await store.recordEvent(name, { type: 'Normal', reason: 'ContainerStarted', message: 'container started' });
      const written = await store.writeStatusAndEvents(name, { phase: 'Ready', observedGeneration: 1 }, [
        { type: 'Normal', reason: 'WorkspaceRendered', message: 'rendered' },
        { type: 'Normal', reason: 'ContainerStarted', message: 'container started' },
        { type: 'Warning', reason: 'Flaky', message: 'x'.repeat(5000) },
        { type: 'Warning', reason: 'Flaky', message: 'x'.repeat(5000) },
        { type: 'Normal', reason: 'RouteReady', message: 'routed' },
      ]);
      expect(written).toBe(true);
      expect((await store.get(name))?.status.phase).toBe('Ready');
      const events = await store.listEvents(name);
      // The repeat of an older event keeps its row, yet sorts as seen in this batch's order.
      expect(events.map((e) => [e.reason, e.count])).toEqual([
        ['RouteReady', 1],
        ['Flaky', 2],
        ['ContainerStarted', 2],
        ['WorkspaceRendered', 1],
      ]);
      expect(events.find((e) => e.reason === 'Flaky')!.message.length).toBeLessThanOrEqual(1000);
      // The same status again is not written; the events still are. No status: events only.
      expect(await store.writeStatusAndEvents(name, { phase: 'Ready', observedGeneration: 1 }, [])).toBe(false);
      expect(await store.writeStatusAndEvents(name, undefined, [{ type: 'Normal', reason: 'RouteReady', message: 'routed' }])).toBe(false);
      expect((await store.listEvents(name)).find((e) => e.reason === 'RouteReady')?.count).toBe(2);
      // A status of an older generation loses, even with events beside it.
      await store.updateStatus(name, { phase: 'Ready', observedGeneration: 3 });
      expect(
        await store.writeStatusAndEvents(name, { phase: 'Degraded', observedGeneration: 2 }, [
          { type: 'Warning', reason: 'Late', message: 'late' },
        ]),
      ).toBe(false);
      expect((await store.get(name))?.status.phase).toBe('Ready');
      expect((await store.listEvents(name))[0]?.reason).toBe('Late');
    });

    it('keep the 100 most recent when a batch both adds events and counts old ones again', async () => {
      const name = uniqueName('batchtrim');
      for (let i = 1; i <= 100; i++) await store.recordEvent(name, { type: 'Normal', reason: 'Step', message: `step ${i}` });
      // step 1 (the oldest) is seen again and two new ones arrive: steps 2 and 3 go, step 1 stays.
      await store.writeStatusAndEvents(name, undefined, [
        { type: 'Normal', reason: 'Step', message: 'new a' },
        { type: 'Normal', reason: 'Step', message: 'step 1' },
        { type: 'Normal', reason: 'Step', message: 'new b' },
      ]);
      const rows = await store.db.selectFrom('customer_events').select(['message', 'count']).where('customer', '=', name).execute();
      expect(rows).toHaveLength(100);
      const kept = new Map(rows.map((r) => [r.message, r.count]));
      expect(kept.get('step 1')).toBe(2);
      expect(kept.has('step 2')).toBe(false);
      expect(kept.has('step 3')).toBe(false);
      expect(kept.has('step 4')).toBe(true);
      expect(kept.has('new a') && kept.has('new b')).toBe(true);
      expect((await store.listEvents(name, 3)).map((e) => e.message)).toEqual(['new b', 'step 1', 'new a']);
    });

    it('keeps a long message, cut short', async () => {
      const name = uniqueName('long');
      await store.recordEvent(name, { type: 'Normal', reason: 'Long', message: 'x'.repeat(100_000) });
      const [event] = await store.listEvents(name);
      expect(event!.message.length).toBeLessThanOrEqual(1000);
    });
  });

  describe('secrets', () => {
    it('are unreadable in the raw table, yet readSecrets returns them', async () => {
      const name = uniqueName('secret');
      const apiKey = `sk-ant-${randomBytes(16).toString('hex')}`;
      const applied = await store.apply(
        desiredCustomer(name, { telegram: { botToken: TEST_BOT_TOKEN }, model: { provider: 'anthropic', apiKey } }),
      );
      const raw = JSON.stringify(await rawRow(name));
      expect(raw).not.toContain(TEST_BOT_TOKEN);
      expect(raw).not.toContain(TEST_BOT_TOKEN.split(':')[1]);
      expect(raw).not.toContain(apiKey);
      expect(JSON.stringify(applied.customer)).not.toContain(TEST_BOT_TOKEN);
      expect(JSON.stringify(await store.get(name))).not.toContain(apiKey);
      expect(applied.customer.spec.telegram.botTokenSet).toBe(true);
      expect(applied.customer.spec.model.apiKeySet).toBe(true);
      expect(await store.readSecrets(name)).toEqual({ telegramBotToken: TEST_BOT_TOKEN, modelApiKey: apiKey });
    });

    it('cannot be moved onto another customer row', async () => {
      const [a, b] = [uniqueName('thief'), uniqueName('victim')];
      await store.apply(desiredCustomer(a));
      await store.apply(desiredCustomer(b, { telegram: { botToken: TEST_BOT_TOKEN } }));
      await psql(
        `UPDATE customers SET telegram_bot_token_enc = (SELECT telegram_bot_token_enc FROM customers WHERE name = $2) WHERE name = $1`,
        [a, b],
      );
      await expect(store.readSecrets(a)).rejects.toThrow();
    });

    it('gives a stable gateway token', async () => {
      const name = uniqueName('gw');
      await store.apply(desiredCustomer(name));
      const racing = await Promise.all([store.gatewayToken(name), store.gatewayToken(name), store.gatewayToken(name)]);
      expect(new Set(racing).size).toBe(1);
      const token = racing[0]!;
      expect(token.length).toBeGreaterThanOrEqual(24);
      expect(await store.gatewayToken(name)).toBe(token);
      expect(JSON.stringify(await rawRow(name))).not.toContain(token);
      const other = uniqueName('gw');
      await store.apply(desiredCustomer(other));
      expect(await store.gatewayToken(other)).not.toBe(token);
      // Not a spec change.
      expect((await store.get(name))?.generation).toBe(1);
    });

    it('mints the gateway token of a customer that runs in its reconcile view, once', async () => {
      const name = uniqueName('gwview');
      await store.apply(desiredCustomer(name, { state: 'active' }));
      expect((await rawRow(name))['gateway_token_enc']).toBeNull();
      const racing = await Promise.all([store.reconcileView(name), store.reconcileView(name), store.reconcileView(name)]);
      // The view that wrote it carries it; a racing view that found it written since may not.
      const seen = new Set(racing.map((v) => v?.gatewayToken).filter((t) => t !== undefined));
      expect(seen.size).toBe(1);
      const token = [...seen][0]!;
      expect(token.length).toBeGreaterThanOrEqual(24);
      expect(await store.gatewayToken(name)).toBe(token);
      expect((await store.reconcileView(name))?.gatewayToken).toBe(token);
      expect(JSON.stringify(await rawRow(name))).not.toContain(token);
      // Not a spec change: the controller is not woken by it, and the customer is as it was.
      expect((await store.get(name))?.generation).toBe(1);
    });

    it('mints no gateway token for a customer that runs nothing (pending, cancelled, paused)', async () => {
      const names = {
        pending: uniqueName('gwpend'),
        cancelled: uniqueName('gwcanc'),
        paused: uniqueName('gwpaus'),
      };
      await store.apply(desiredCustomer(names.pending, { state: 'pending' }));
      await store.apply(desiredCustomer(names.cancelled, { state: 'cancelled' }));
      await store.apply(desiredCustomer(names.paused, { state: 'active', paused: true }));
      for (const name of Object.values(names)) {
        expect((await store.reconcileView(name))?.gatewayToken).toBeUndefined();
        expect((await rawRow(name))['gateway_token_enc']).toBeNull();
      }
      // Unpaused, its next view has one.
      await store.apply(desiredCustomer(names.paused, { state: 'active', paused: false }));
      const token = (await store.reconcileView(names.paused))?.gatewayToken;
      expect(token).toBeDefined();
      expect(await store.gatewayToken(names.paused)).toBe(token);
    });
  });

  describe('list', () => {
    it('pages in name order and filters by labels', async () => {
      const suite = randomBytes(4).toString('hex');
      const names = Array.from({ length: 5 }, (_, i) => `list-${suite}-${i}`);
      for (const [i, name] of names.entries()) {
        await store.apply(desiredCustomer(name, {}, { suite, tier: i % 2 === 0 ? 'gold' : 'silver' }));
      }
      const seenNames: string[] = [];
      let continueAfter: string | undefined;
      let pages = 0;
      do {
        const page = await store.list({ limit: 2, continueAfter, labelSelector: { suite } });
        expect(page.items.length).toBeLessThanOrEqual(2);
        seenNames.push(...page.items.map((c) => c.name));
        continueAfter = page.continue;
        pages++;
      } while (continueAfter);
      expect(pages).toBe(3);
      expect(seenNames).toEqual(names);

      const gold = await store.list({ labelSelector: { suite, tier: 'gold' } });
      expect(gold.items.map((c) => c.name)).toEqual([names[0], names[2], names[4]]);
      expect(gold.continue).toBeUndefined();
      expect((await store.list({ labelSelector: { suite, tier: 'bronze' } })).items).toEqual([]);
      expect(gold.items[0]?.labels).toEqual({ suite, tier: 'gold' });

      const everything = await store.listNames();
      for (const name of names) expect(everything).toContain(name);
    });
  });

  describe('resourceVersion', () => {
    it('rejects an apply based on a stale version', async () => {
      const name = uniqueName('rv');
      const created = await store.apply(desiredCustomer(name));
      const rv1 = created.customer.resourceVersion;
      const updated = await store.apply(desiredCustomer(name, { instructions: 'v2' }), { resourceVersion: rv1 });
      expect(updated.changed).toBe(true);
      expect(updated.customer.resourceVersion).not.toBe(rv1);
      await expect(store.apply(desiredCustomer(name, { instructions: 'v3' }), { resourceVersion: rv1 })).rejects.toThrow(
        ConflictError,
      );
      expect((await store.get(name))?.spec.instructions).toBe('v2');
      await expect(store.apply(desiredCustomer(uniqueName('rv-new')), { resourceVersion: '1' })).rejects.toThrow(ConflictError);
    });
  });
});

describe('migrations on a fresh Postgres database', () => {
  it('run concurrently from two handles: both succeed and the schema is applied once', async () => {
    const name = `blytz_test_fresh_${randomBytes(6).toString('hex')}`;
    const admin = new pg.Client({ connectionString: adminUrl() });
    await admin.connect();
    await admin.query(`CREATE DATABASE ${name}`);
    const a = openPostgres(adminUrl(name), 2);
    const b = openPostgres(adminUrl(name), 2);
    try {
      const [first, second] = await Promise.all([migrateOrThrow(a), migrateOrThrow(b)]);
      const recorded = await appliedMigrations(a);
      expect(recorded).toContain('0001-initial');
      // Every migration applied exactly once, by one of the two.
      expect([...first, ...second].sort()).toEqual(recorded);
      expect(first.length === 0 || second.length === 0).toBe(true);
      expect(await migrateOrThrow(a)).toEqual([]);
      const tables = await sql<{ n: number }>`
        SELECT count(*)::int AS n FROM information_schema.tables
        WHERE table_schema = 'public' AND table_name IN ('customers', 'customer_events', 'webhook_events', 'port_reservations')
      `.execute(a.db);
      expect(tables.rows[0]?.n).toBe(4);
      // And the store works on it.
      const store = new CustomerStore(a, new SecretBox(randomBytes(32)));
      expect((await store.apply(desiredCustomer(uniqueName('fresh')))).created).toBe(true);
    } finally {
      await a.close();
      await b.close();
      await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await admin.end();
    }
  });
});

/** Inlines $n parameters as SQL literals (PGlite fallback only; test-controlled values). */
function interpolate(text: string, params: unknown[]): string {
  return text.replace(/\$(\d+)/g, (_m, n: string) => `'${String(params[Number(n) - 1]).replace(/'/g, "''")}'`);
}
