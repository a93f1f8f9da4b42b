import { sql, type Kysely } from 'kysely';
import type { RolloutEntry, RolloutRecord } from '../domain/rollout.js';
import type { DatabaseHandle } from './database.js';
import type { Database } from './schema.js';

/**
 * The fleet rollout records (tables from migration 0003-rollouts): one row per rollout of a
 * template/plan, one per customer taking part. Only the SQL lives here; what the rows mean and
 * when they change is controller/rollout/. Every change that depends on counting other customers
 * runs inside `locked`, on a store bound to that transaction.
 */

export interface NewRollout {
  key: string;
  fingerprint: string;
  image: string;
  now: number;
}

export interface NewEntry {
  customer: string;
  fromHash: string | null;
  toHash: string;
  prevImage: string | null;
}

// Any fixed number: every rollout mutation that counts other customers queues on it.
const ROLLOUT_LOCK_KEY = 0x726f_6c6c; // "roll"

interface RolloutRow {
  id: number;
  key: string;
  fingerprint: string;
  image: string;
  state: RolloutRecord['state'];
  undone: boolean;
  paused_reason: string | null;
  paused_message: string | null;
  image_present: boolean | null;
  started_ms: number;
}

interface EntryRow {
  rollout_id: number;
  customer: string;
  from_hash: string | null;
  to_hash: string;
  prev_image: string | null;
  target: RolloutEntry['target'];
  state: RolloutEntry['state'];
  started_ms: number | null;
  finished_ms: number | null;
  message: string;
}

const toRollout = (r: RolloutRow): RolloutRecord => ({
  id: Number(r.id),
  key: r.key,
  fingerprint: r.fingerprint,
  image: r.image,
  state: r.state,
  undone: r.undone,
  pausedReason: r.paused_reason,
  pausedMessage: r.paused_message,
  imagePresent: r.image_present,
  startedAtMs: Number(r.started_ms),
});

const toEntry = (r: EntryRow): RolloutEntry => ({
  rolloutId: Number(r.rollout_id),
  customer: r.customer,
  fromHash: r.from_hash,
  toHash: r.to_hash,
  prevImage: r.prev_image,
  target: r.target,
  state: r.state,
  startedAtMs: r.started_ms === null ? null : Number(r.started_ms),
  finishedAtMs: r.finished_ms === null ? null : Number(r.finished_ms),
  message: r.message,
});

const timestamp = (ms: number) => sql`to_timestamp(${ms}::float8 / 1000)`;
const affected = (result: { numAffectedRows?: bigint }) => Number(result.numAffectedRows ?? 0);

export class RolloutStore {
  readonly #db: Kysely<Database>;

  /** A handle's pool, or (inside `locked`) one transaction. */
  constructor(handle: Pick<DatabaseHandle, 'db'>) {
    this.#db = handle.db;
  }

  /**
   * Runs `work` in one transaction holding the rollout lock (transaction-level advisory lock), on
   * a store bound to that transaction: concurrent workers and a second replica take turns, so
   * counts they read stay true until they commit.
   */
  locked<T>(work: (locked: RolloutStore) => Promise<T>): Promise<T> {
    return this.#db.transaction().execute(async (trx) => {
      await sql`SELECT pg_advisory_xact_lock(${ROLLOUT_LOCK_KEY})`.execute(trx);
      return work(new RolloutStore({ db: trx }));
    });
  }

  /** The newest rollout of a template/plan, superseded or not. */
  async latest(key: string): Promise<RolloutRecord | undefined> {
    const r = await sql<RolloutRow>`
      SELECT id::int AS id, key, fingerprint, image, state, undone, paused_reason, paused_message, image_present,
        (extract(epoch FROM started_at) * 1000)::float8 AS started_ms
      FROM rollouts WHERE key = ${key} ORDER BY id DESC LIMIT 1
    `.execute(this.#db);
    return r.rows[0] ? toRollout(r.rows[0]) : undefined;
  }

  /** The newest rollout of every template/plan (superseded ones included: the caller leaves them out). */
  async latestPerKey(): Promise<RolloutRecord[]> {
    const r = await sql<RolloutRow>`
      SELECT DISTINCT ON (key) id::int AS id, key, fingerprint, image, state, undone, paused_reason, paused_message, image_present,
        (extract(epoch FROM started_at) * 1000)::float8 AS started_ms
      FROM rollouts ORDER BY key, id DESC
    `.execute(this.#db);
    return r.rows.map(toRollout);
  }

  async entry(rolloutId: number, customer: string): Promise<RolloutEntry | undefined> {
    const r = await sql<EntryRow>`
      SELECT rollout_id::int AS rollout_id, customer, from_hash, to_hash, prev_image, target, state, message,
        (extract(epoch FROM started_at) * 1000)::float8 AS started_ms, (extract(epoch FROM finished_at) * 1000)::float8 AS finished_ms
      FROM rollout_customers WHERE rollout_id = ${rolloutId} AND customer = ${customer}
    `.execute(this.#db);
    return r.rows[0] ? toEntry(r.rows[0]) : undefined;
  }

  /** Entries of live customers only: a customer cancelled mid-rollout does not hold it open. */
  async liveEntries(rolloutId: number): Promise<RolloutEntry[]> {
    const r = await sql<EntryRow>`
      SELECT rc.rollout_id::int AS rollout_id, rc.customer, rc.from_hash, rc.to_hash, rc.prev_image, rc.target, rc.state, rc.message,
        (extract(epoch FROM rc.started_at) * 1000)::float8 AS started_ms, (extract(epoch FROM rc.finished_at) * 1000)::float8 AS finished_ms
      FROM rollout_customers rc JOIN customers c ON c.name = rc.customer AND c.state = 'active' AND c.deleted_at IS NULL
      WHERE rc.rollout_id = ${rolloutId} ORDER BY rc.customer
    `.execute(this.#db);
    return r.rows.map(toEntry);
  }

  /** Supersedes `previous` (when it is not already) and starts a running rollout. */
  async start(rollout: NewRollout, previous: RolloutRecord | undefined): Promise<RolloutRecord> {
    if (previous && previous.state !== 'superseded') {
      await sql`UPDATE rollouts SET state = 'superseded', updated_at = now() WHERE id = ${previous.id}`.execute(this.#db);
    }
    const r = await sql<RolloutRow>`
      INSERT INTO rollouts (key, fingerprint, image, state, started_at)
      VALUES (${rollout.key}, ${rollout.fingerprint}, ${rollout.image}, 'running', ${timestamp(rollout.now)})
      RETURNING id::int AS id, key, fingerprint, image, state, undone, paused_reason, paused_message, image_present,
        (extract(epoch FROM started_at) * 1000)::float8 AS started_ms
    `.execute(this.#db);
    return toRollout(r.rows[0] as RolloutRow);
  }

  /** The customer joins the rollout, waiting for a slot towards its new image. */
  async join(rolloutId: number, entry: NewEntry): Promise<RolloutEntry> {
    const r = await sql<EntryRow>`
      INSERT INTO rollout_customers (rollout_id, customer, from_hash, to_hash, prev_image, target, state)
      VALUES (${rolloutId}, ${entry.customer}, ${entry.fromHash}, ${entry.toHash}, ${entry.prevImage}, 'new', 'waiting')
      RETURNING rollout_id::int AS rollout_id, customer, from_hash, to_hash, prev_image, target, state, message,
        NULL::float8 AS started_ms, NULL::float8 AS finished_ms
    `.execute(this.#db);
    return toEntry(r.rows[0] as EntryRow);
  }

  /** A released updating entry (see `release`) gets a start time again. */
  async restamp(entry: RolloutEntry, now: number): Promise<void> {
    await sql`
      UPDATE rollout_customers SET started_at = ${timestamp(now)}
      WHERE rollout_id = ${entry.rolloutId} AND customer = ${entry.customer} AND state = 'updating' AND started_at IS NULL
    `.execute(this.#db);
  }

  async markImagePresent(rolloutId: number): Promise<void> {
    await sql`UPDATE rollouts SET image_present = true, updated_at = now() WHERE id = ${rolloutId}`.execute(this.#db);
  }

  async pauseForMissingImage(rolloutId: number, message: string): Promise<void> {
    await sql`
      UPDATE rollouts SET image_present = false, state = 'paused', paused_reason = 'ImageMissing', paused_message = ${message}, updated_at = now()
      WHERE id = ${rolloutId}
    `.execute(this.#db);
  }

  /** Customers being recreated (holding a slot) and active customers (what a percentage limit counts). */
  async slotUse(): Promise<{ busy: number; active: number }> {
    const r = await sql<{ busy: number; active: number }>`
      SELECT
        (SELECT count(*)::int FROM rollout_customers rc
           JOIN rollouts r ON r.id = rc.rollout_id AND r.state <> 'superseded'
           -- Suspended, cancelled or paused (spec.paused: the controller leaves it alone) customers
           -- are not reconciled, so they never report: they must not hold a slot.
           JOIN customers c ON c.name = rc.customer AND c.state = 'active' AND NOT c.paused AND c.deleted_at IS NULL
         WHERE rc.state IN ('updating', 'rollingBack')) AS busy,
        (SELECT count(*)::int FROM customers WHERE state = 'active' AND deleted_at IS NULL) AS active
    `.execute(this.#db);
    return r.rows[0] ?? { busy: 0, active: 0 };
  }

  /** A waiting entry starts updating now (the caller checked the limit under the lock). */
  async takeSlot(entry: RolloutEntry, now: number): Promise<void> {
    await sql`
      UPDATE rollout_customers SET state = 'updating', started_at = ${timestamp(now)}
      WHERE rollout_id = ${entry.rolloutId} AND customer = ${entry.customer} AND state = 'waiting'
    `.execute(this.#db);
  }

  /**
   * Moves an entry to `state` and finishes it, only if it is still as read (state and target): an
   * `undo` in between turns an updating entry around, and this outcome is about the old target.
   * Returns whether it did.
   */
  async finish(entry: RolloutEntry, state: RolloutEntry['state'], now: number): Promise<boolean> {
    const r = await sql`
      UPDATE rollout_customers SET state = ${state}, finished_at = ${timestamp(now)}
      WHERE rollout_id = ${entry.rolloutId} AND customer = ${entry.customer} AND state = ${entry.state}
        AND target = ${entry.target}
    `.execute(this.#db);
    return affected(r) > 0;
  }

  /** An updating entry failed and turns to `next` (rolling back), only if it is still as read. */
  async fail(entry: RolloutEntry, next: RolloutEntry): Promise<boolean> {
    const r = await sql`
      UPDATE rollout_customers SET state = ${next.state}, target = ${next.target}, message = ${next.message},
        finished_at = ${next.finishedAtMs === null ? null : timestamp(next.finishedAtMs)}
      WHERE rollout_id = ${entry.rolloutId} AND customer = ${entry.customer} AND state = 'updating'
        AND target = ${entry.target}
    `.execute(this.#db);
    return affected(r) > 0;
  }

  /** Failed updates of a rollout (rolling back or rolled back with a reason). */
  async countFailures(rolloutId: number): Promise<number> {
    const r = await sql<{ n: number }>`
      SELECT count(*)::int AS n FROM rollout_customers
      WHERE rollout_id = ${rolloutId} AND state IN ('rollingBack', 'failed') AND message <> ''
    `.execute(this.#db);
    return r.rows[0]?.n ?? 0;
  }

  /** Pauses a running rollout for its failures; returns whether it was running. */
  async pauseForFailures(rolloutId: number, message: string): Promise<boolean> {
    const r = await sql`
      UPDATE rollouts SET state = 'paused', paused_reason = 'Failures', paused_message = ${message}, updated_at = now()
      WHERE id = ${rolloutId} AND state = 'running'
    `.execute(this.#db);
    return affected(r) > 0;
  }

  /** Clears the start time of the customer's updating entries; returns whether there was one. */
  async release(customer: string): Promise<boolean> {
    const r = await sql`
      UPDATE rollout_customers SET started_at = NULL
      WHERE customer = ${customer} AND state = 'updating' AND started_at IS NOT NULL
    `.execute(this.#db);
    return affected(r) > 0;
  }

  /** Customers waiting for a slot in running rollouts, by name. */
  async waitingCustomers(limit: number): Promise<string[]> {
    const rows = await sql<{ customer: string }>`
      SELECT rc.customer FROM rollout_customers rc JOIN rollouts r ON r.id = rc.rollout_id
      WHERE r.state = 'running' AND rc.state = 'waiting' AND (rc.target = 'previous' OR NOT r.undone)
      ORDER BY rc.customer LIMIT ${limit}
    `.execute(this.#db);
    return rows.rows.map((r) => r.customer);
  }

  /** An operator pauses every running rollout; returns how many. */
  async pauseRunning(): Promise<number> {
    const r = await sql`
      UPDATE rollouts SET state = 'paused', paused_reason = 'Operator', paused_message = 'paused by an operator (blytz rollout pause)', updated_at = now()
      WHERE state = 'running'
    `.execute(this.#db);
    return affected(r);
  }

  /** Paused rollouts run again, their failed customers wait again, the image is checked again; returns how many. */
  async resumePaused(): Promise<number> {
    const ids = await sql<{ id: number }>`
      UPDATE rollouts SET state = 'running', paused_reason = NULL, paused_message = NULL, image_present = NULL, updated_at = now()
      WHERE state = 'paused' RETURNING id::int AS id
    `.execute(this.#db);
    for (const { id } of ids.rows) {
      await sql`
        UPDATE rollout_customers SET state = 'waiting', target = 'new', message = '', started_at = NULL, finished_at = NULL
        WHERE rollout_id = ${id} AND state = 'failed' AND message <> ''
          AND NOT (SELECT undone FROM rollouts WHERE id = ${id})
      `.execute(this.#db);
    }
    return ids.rows.length;
  }

  /**
   * The newest rollout of every key is undone: its updated (or updating) customers target their
   * previous image; returns how many rollouts.
   */
  async undoLatest(): Promise<number> {
    const ids = await sql<{ id: number }>`
      UPDATE rollouts r SET undone = true, state = 'running', paused_reason = NULL, paused_message = NULL, updated_at = now()
      WHERE state <> 'superseded' AND NOT undone
        AND id = (SELECT max(id) FROM rollouts r2 WHERE r2.key = r.key)
      RETURNING id::int AS id
    `.execute(this.#db);
    for (const { id } of ids.rows) {
      await sql`
        UPDATE rollout_customers SET target = 'previous', message = '', finished_at = NULL,
          -- One being updated keeps its slot and turns straight back; the updated ones queue.
          state = CASE WHEN state = 'updating' THEN 'updating' ELSE 'waiting' END,
          started_at = CASE WHEN state = 'updating' THEN started_at ELSE NULL END
        WHERE rollout_id = ${id} AND target = 'new' AND state IN ('updating', 'done')
      `.execute(this.#db);
    }
    return ids.rows.length;
  }
}
