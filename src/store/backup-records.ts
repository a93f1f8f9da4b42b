import { sql } from 'kysely';
import type { DatabaseHandle } from './database.js';
import { isUniqueViolation } from './errors.js';

/**
 * The backup and restore records (tables from migration 0007-backups). Writers (the admin API,
 * the schedule, a rollout, the purge) only ask: they insert `pending` rows. The backup
 * controller alone moves them on. SQL lives here; what the controller decides lives in
 * src/backup/.
 */

export type BackupReason = 'manual' | 'scheduled' | 'pre-update' | 'pre-purge';
export type BackupState = 'pending' | 'running' | 'succeeded' | 'failed';
export type RestoreStep = 'pending' | 'stopping' | 'fetching' | 'swapping' | 'starting' | 'succeeded' | 'failed';
export type RestoreReason = 'manual' | 'rollback';

export interface BackupRecord {
  id: number;
  customer: string;
  reason: BackupReason;
  ref: string | null;
  state: BackupState;
  attempts: number;
  requestedAt: Date;
  startedAt: Date | null;
  finishedAt: Date | null;
  storage: string | null;
  location: string | null;
  sizeBytes: number | null;
  sha256: string | null;
  openclawVersion: string | null;
  runtime: string | null;
  files: number | null;
  durationMs: number | null;
  message: string;
}

export interface RestoreRecord {
  id: number;
  backupId: number;
  customer: string;
  reason: RestoreReason;
  step: RestoreStep;
  requestedAt: Date;
  startedAt: Date | null;
  finishedAt: Date | null;
  message: string;
}

interface BackupRow {
  id: number;
  customer: string;
  reason: BackupReason;
  ref: string | null;
  state: BackupState;
  attempts: number;
  requested_at: Date;
  started_at: Date | null;
  finished_at: Date | null;
  storage: string | null;
  location: string | null;
  size_bytes: number | string | null;
  sha256: string | null;
  openclaw_version: string | null;
  runtime: string | null;
  files: number | null;
  duration_ms: number | null;
  message: string;
}

interface RestoreRow {
  id: number;
  backup_id: number;
  customer: string;
  reason: RestoreReason;
  step: RestoreStep;
  requested_at: Date;
  started_at: Date | null;
  finished_at: Date | null;
  message: string;
}

const toBackup = (r: BackupRow): BackupRecord => ({
  id: Number(r.id),
  customer: r.customer,
  reason: r.reason,
  ref: r.ref,
  state: r.state,
  attempts: r.attempts,
  requestedAt: new Date(r.requested_at),
  startedAt: r.started_at && new Date(r.started_at),
  finishedAt: r.finished_at && new Date(r.finished_at),
  storage: r.storage,
  location: r.location,
  sizeBytes: r.size_bytes === null ? null : Number(r.size_bytes),
  sha256: r.sha256,
  openclawVersion: r.openclaw_version,
  runtime: r.runtime,
  files: r.files,
  durationMs: r.duration_ms,
  message: r.message,
});

const toRestore = (r: RestoreRow): RestoreRecord => ({
  id: Number(r.id),
  backupId: Number(r.backup_id),
  customer: r.customer,
  reason: r.reason,
  step: r.step,
  requestedAt: new Date(r.requested_at),
  startedAt: r.started_at && new Date(r.started_at),
  finishedAt: r.finished_at && new Date(r.finished_at),
  message: r.message,
});

const BACKUP_COLUMNS = sql`id::int AS id, customer, reason, ref, state, attempts, requested_at, started_at, finished_at, storage,
  location, size_bytes, sha256, openclaw_version, runtime, files, duration_ms, message`;
const RESTORE_COLUMNS = sql`id::int AS id, backup_id::int AS backup_id, customer, reason, step, requested_at, started_at, finished_at, message`;
const ms = (value: number) => sql`to_timestamp(${value}::float8 / 1000)`;

/** A restore is already in flight for this customer (one at a time). */
export class RestoreInProgressError extends Error {
  constructor(readonly customer: string) {
    super(`a restore into ${customer} is already in progress`);
    this.name = 'RestoreInProgressError';
  }
}

export class BackupRecords {
  readonly #handle: DatabaseHandle;

  constructor(handle: DatabaseHandle) {
    this.#handle = handle;
  }

  get #db() {
    return this.#handle.db;
  }

  /**
   * Asks for a backup. With a `ref` it is idempotent: the same (customer, reason, ref) returns
   * the backup already asked for, whatever its state (a failed one is asked for again).
   */
  async request(customer: string, reason: BackupReason, ref?: string, now = Date.now()): Promise<BackupRecord> {
    if (ref !== undefined) {
      const existing = await this.findByRef(customer, reason, ref);
      if (existing && existing.state !== 'failed') return existing;
      if (existing) {
        const again = await sql<BackupRow>`
          UPDATE backups SET state = 'pending', attempts = 0, message = '', requested_at = ${ms(now)}
          WHERE id = ${existing.id} AND state = 'failed' RETURNING ${BACKUP_COLUMNS}
        `.execute(this.#db);
        return again.rows[0] ? toBackup(again.rows[0]) : ((await this.get(existing.id)) as BackupRecord);
      }
    }
    try {
      const r = await sql<BackupRow>`
        INSERT INTO backups (customer, reason, ref, state, requested_at)
        VALUES (${customer}, ${reason}, ${ref ?? null}, 'pending', ${ms(now)})
        RETURNING ${BACKUP_COLUMNS}
      `.execute(this.#db);
      return toBackup(r.rows[0] as BackupRow);
    } catch (error) {
      // Two writers asked for the same ref at once: the other one's row is the answer.
      if (ref !== undefined && isUniqueViolation(error)) return (await this.findByRef(customer, reason, ref)) as BackupRecord;
      throw error;
    }
  }

  async findByRef(customer: string, reason: BackupReason, ref: string): Promise<BackupRecord | undefined> {
    const r = await sql<BackupRow>`
      SELECT ${BACKUP_COLUMNS} FROM backups WHERE customer = ${customer} AND reason = ${reason} AND ref = ${ref}
    `.execute(this.#db);
    return r.rows[0] ? toBackup(r.rows[0]) : undefined;
  }

  async get(id: number): Promise<BackupRecord | undefined> {
    const r = await sql<BackupRow>`SELECT ${BACKUP_COLUMNS} FROM backups WHERE id = ${id}`.execute(this.#db);
    return r.rows[0] ? toBackup(r.rows[0]) : undefined;
  }

  /** A customer's backups, newest first (all customers' without a name). */
  async list(customer?: string, limit = 200): Promise<BackupRecord[]> {
    const r = customer
      ? await sql<BackupRow>`SELECT ${BACKUP_COLUMNS} FROM backups WHERE customer = ${customer} ORDER BY id DESC LIMIT ${limit}`.execute(
          this.#db,
        )
      : await sql<BackupRow>`SELECT ${BACKUP_COLUMNS} FROM backups ORDER BY id DESC LIMIT ${limit}`.execute(this.#db);
    return r.rows.map(toBackup);
  }

  /** Customers with a backup or restore still to do (the backup controller's work list). */
  async customersWithOpenWork(): Promise<string[]> {
    const r = await sql<{ customer: string }>`
      SELECT customer FROM backups WHERE state IN ('pending', 'running')
      UNION SELECT customer FROM restores WHERE step NOT IN ('succeeded', 'failed')
    `.execute(this.#db);
    return r.rows.map((row) => row.customer);
  }

  /** pending -> running, once: false when another worker (or replica) took it first. */
  async claim(id: number, now: number): Promise<boolean> {
    const r = await sql`
      UPDATE backups SET state = 'running', attempts = attempts + 1, started_at = ${ms(now)}, message = ''
      WHERE id = ${id} AND state = 'pending'
    `.execute(this.#db);
    return Number(r.numAffectedRows ?? 0) > 0;
  }

  /** A running backup nobody runs (its controller died): asked for again, or failed after `maxAttempts`. */
  async requeueAbandoned(id: number, maxAttempts: number, message: string): Promise<void> {
    await sql`
      UPDATE backups SET state = CASE WHEN attempts >= ${maxAttempts} THEN 'failed' ELSE 'pending' END,
        message = ${message}, finished_at = CASE WHEN attempts >= ${maxAttempts} THEN now() ELSE NULL END
      WHERE id = ${id} AND state = 'running'
    `.execute(this.#db);
  }

  /** The archive is wholly stored: only now is the backup listed as good. */
  async succeed(
    id: number,
    result: {
      storage: string;
      location: string;
      sizeBytes: number;
      sha256: string;
      openclawVersion: string | null;
      runtime: string;
      files: number;
      durationMs: number;
      now: number;
    },
  ): Promise<boolean> {
    const r = await sql`
      UPDATE backups SET state = 'succeeded', finished_at = ${ms(result.now)}, storage = ${result.storage},
        location = ${result.location}, size_bytes = ${result.sizeBytes}, sha256 = ${result.sha256},
        openclaw_version = ${result.openclawVersion}, runtime = ${result.runtime}, files = ${result.files},
        duration_ms = ${Math.round(result.durationMs)}, message = ''
      WHERE id = ${id} AND state = 'running'
    `.execute(this.#db);
    return Number(r.numAffectedRows ?? 0) > 0;
  }

  /** A failed attempt: back to pending (retried later) or failed for good after `maxAttempts`. */
  async fail(id: number, message: string, maxAttempts: number, now: number): Promise<BackupState> {
    const r = await sql<{ state: BackupState }>`
      UPDATE backups SET state = CASE WHEN attempts >= ${maxAttempts} THEN 'failed' ELSE 'pending' END,
        message = ${message.slice(0, 1000)}, finished_at = CASE WHEN attempts >= ${maxAttempts} THEN ${ms(now)} ELSE NULL END
      WHERE id = ${id} AND state = 'running' RETURNING state
    `.execute(this.#db);
    return r.rows[0]?.state ?? 'failed';
  }

  /** Forgets a backup whose archive was deleted (retention); kept while a restore from it runs. */
  async remove(id: number): Promise<boolean> {
    await sql`DELETE FROM restores WHERE backup_id = ${id} AND step IN ('succeeded', 'failed')`.execute(this.#db);
    const r = await sql`
      DELETE FROM backups WHERE id = ${id}
        AND NOT EXISTS (SELECT 1 FROM restores WHERE backup_id = ${id})
    `.execute(this.#db);
    return Number(r.numAffectedRows ?? 0) > 0;
  }

  /** The newest succeeded backup of each customer (for metrics and `describe`). */
  async latestSucceeded(): Promise<Map<string, BackupRecord>> {
    const r = await sql<BackupRow>`
      SELECT DISTINCT ON (customer) ${BACKUP_COLUMNS} FROM backups WHERE state = 'succeeded'
      ORDER BY customer, finished_at DESC, id DESC
    `.execute(this.#db);
    return new Map(r.rows.map((row) => [row.customer, toBackup(row)]));
  }

  // --- restores ---

  async requestRestore(
    backupId: number,
    customer: string,
    reason: RestoreReason = 'manual',
    now = Date.now(),
  ): Promise<RestoreRecord> {
    try {
      const r = await sql<RestoreRow>`
        INSERT INTO restores (backup_id, customer, reason, step, requested_at)
        VALUES (${backupId}, ${customer}, ${reason}, 'pending', ${ms(now)}) RETURNING ${RESTORE_COLUMNS}
      `.execute(this.#db);
      return toRestore(r.rows[0] as RestoreRow);
    } catch (error) {
      if (isUniqueViolation(error)) throw new RestoreInProgressError(customer);
      throw error;
    }
  }

  /** The restore in flight for this customer, if any. */
  async activeRestore(customer: string): Promise<RestoreRecord | undefined> {
    const r = await sql<RestoreRow>`
      SELECT ${RESTORE_COLUMNS} FROM restores WHERE customer = ${customer} AND step NOT IN ('succeeded', 'failed')
    `.execute(this.#db);
    return r.rows[0] ? toRestore(r.rows[0]) : undefined;
  }

  async getRestore(id: number): Promise<RestoreRecord | undefined> {
    const r = await sql<RestoreRow>`SELECT ${RESTORE_COLUMNS} FROM restores WHERE id = ${id}`.execute(this.#db);
    return r.rows[0] ? toRestore(r.rows[0]) : undefined;
  }

  async listRestores(customer?: string, limit = 50): Promise<RestoreRecord[]> {
    const r = customer
      ? await sql<RestoreRow>`SELECT ${RESTORE_COLUMNS} FROM restores WHERE customer = ${customer} ORDER BY id DESC LIMIT ${limit}`.execute(
          this.#db,
        )
      : await sql<RestoreRow>`SELECT ${RESTORE_COLUMNS} FROM restores ORDER BY id DESC LIMIT ${limit}`.execute(this.#db);
    return r.rows.map(toRestore);
  }

  /** Moves a restore from `from` to `to` (false when it was not at `from`: someone else moved it). */
  async advanceRestore(id: number, from: RestoreStep, to: RestoreStep, message = '', now = Date.now()): Promise<boolean> {
    const finished = to === 'succeeded' || to === 'failed';
    const r = await sql`
      UPDATE restores SET step = ${to}, message = ${message.slice(0, 1000)},
        started_at = coalesce(started_at, ${ms(now)}),
        finished_at = ${finished ? ms(now) : null}
      WHERE id = ${id} AND step = ${from}
    `.execute(this.#db);
    return Number(r.numAffectedRows ?? 0) > 0;
  }

  /**
   * The updates a `rollout undo` just turned around (target `previous`, not yet back): for each,
   * the spec hashes it went from and to, so its pre-update backup can be found. Reads the rollout
   * tables (migration 0003); the rollout store writes them.
   */
  async undoneUpdates(): Promise<Array<{ customer: string; fromHash: string; toHash: string }>> {
    const r = await sql<{ customer: string; from_hash: string; to_hash: string }>`
      SELECT rc.customer, rc.from_hash, rc.to_hash FROM rollout_customers rc JOIN rollouts r ON r.id = rc.rollout_id
      WHERE r.undone AND r.state <> 'superseded' AND rc.target = 'previous' AND rc.state IN ('waiting', 'updating')
        AND rc.from_hash IS NOT NULL
    `.execute(this.#db);
    return r.rows.map((row) => ({ customer: row.customer, fromHash: row.from_hash, toHash: row.to_hash }));
  }

  /**
   * Whether a rollout is yet to send this customer back (an undo queued it for a slot): its entry
   * has target `previous` and still waits. Once it holds a slot, or went back, or its rollout was
   * superseded, it no longer does.
   */
  async waitingToGoBack(customer: string): Promise<boolean> {
    const r = await sql<{ n: number }>`
      SELECT count(*)::int AS n FROM rollout_customers rc JOIN rollouts r ON r.id = rc.rollout_id
      WHERE rc.customer = ${customer} AND r.state <> 'superseded' AND rc.target = 'previous' AND rc.state = 'waiting'
    `.execute(this.#db);
    return (r.rows[0]?.n ?? 0) > 0;
  }

  /** Keeps the step, records why it waits (shown by `backup list` and `describe`). */
  async noteRestore(id: number, message: string): Promise<void> {
    await sql`UPDATE restores SET message = ${message.slice(0, 1000)} WHERE id = ${id}`.execute(this.#db);
  }
}
