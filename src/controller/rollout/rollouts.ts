import { sql, type Kysely, type Transaction } from 'kysely';
import type { Logger } from '../../observability/logger.js';
import type { Metrics } from '../../observability/metrics.js';
import type { CustomerStore } from '../../store/customer-store.js';
import type { DatabaseHandle } from '../../store/database.js';
import type { Database } from '../../store/schema.js';
import {
  countEntries,
  decide,
  estimateRemainingMs,
  formatMaxUnavailable,
  maxUnavailableOf,
  needsNewRollout,
  settle,
  type Decision,
  type MaxUnavailable,
  type RolloutCounts,
  type RolloutEntry,
  type RolloutRecord,
} from './gate.js';

/**
 * Fleet rollouts on the store (tables from migration 0003-rollouts). The customer reconciler
 * asks `admit` before planning and reports with `report` after executing; operators steer with
 * pause, resume and undo through the admin API. Every change that depends on counting other
 * customers (taking a slot, starting a rollout, pausing on failures) happens under one
 * transaction-level advisory lock, so concurrent workers and a second replica never overshoot.
 */

export interface RolloutSettings {
  maxUnavailable: MaxUnavailable;
  /** More failed updates than this pause the rollout. */
  maxFailures: number;
  /** Overrides the template's startTimeoutSeconds (tests use a few seconds). */
  startTimeoutSeconds?: number | undefined;
}

export interface RolloutsDeps {
  database: DatabaseHandle;
  store: CustomerStore;
  settings: RolloutSettings;
  /** Whether the engine has the image (no registry here: `docker image inspect`). */
  imagePresent: (image: string) => Promise<boolean>;
  metrics: Metrics;
  logger: Logger;
}

export interface AdmitRequest {
  customer: string;
  key: string;
  fingerprint: string;
  image: string;
  /** The desired (new) spec hash. */
  toHash: string;
  /** The outdated container a fleet change would replace, when there is one. */
  change: { fromHash: string; image: string | undefined } | undefined;
  now: number;
}

export interface Admission extends Omit<Decision, 'wantsSlot'> {
  entry?: RolloutEntry | undefined;
  rollout?: RolloutRecord | undefined;
}

export interface RolloutView {
  id: number;
  key: string;
  target: { fingerprint: string; image: string };
  state: 'running' | 'paused' | 'complete';
  undone: boolean;
  pausedReason: string | null;
  pausedMessage: string | null;
  startedAt: string;
  counts: RolloutCounts;
  maxUnavailable: string;
  slots: number;
  etaSeconds: number | null;
  customers: Array<Pick<RolloutEntry, 'customer' | 'state' | 'target' | 'message'> & { prevImage: string | null }>;
}

// Any fixed number: every rollout mutation that counts other customers queues on it.
const ROLLOUT_LOCK_KEY = 0x726f_6c6c; // "roll"

type Db = Kysely<Database> | Transaction<Database>;

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

const ms = (value: number) => sql`to_timestamp(${value}::float8 / 1000)`;

export class Rollouts {
  readonly #deps: RolloutsDeps;
  readonly #db: Kysely<Database>;

  constructor(deps: RolloutsDeps) {
    this.#deps = deps;
    this.#db = deps.database.db;
  }

  get settings(): RolloutSettings {
    return this.#deps.settings;
  }

  /** The start timeout for a template's containers, with the configured override. */
  startTimeoutMs(templateSeconds: number): number {
    return (this.#deps.settings.startTimeoutSeconds ?? templateSeconds) * 1000;
  }

  /**
   * Before planning: may this customer's outdated container be replaced now, and on which image?
   * Joins the customer to its rollout (starting one when the fleet inputs changed).
   */
  async admit(req: AdmitRequest): Promise<Admission> {
    let rollout = await this.#latest(this.#db, req.key);
    let entry = rollout ? await this.#entry(this.#db, rollout.id, req.customer) : undefined;
    if (entry?.state === 'updating' && entry.startedAtMs === null) entry = await this.#restamp(entry, req.now);
    const joining = req.change !== undefined && (needsNewRollout(rollout, entry, req.fingerprint, req.toHash) || !entry);
    if (!joining && (!rollout || !entry)) return { recreateAllowed: true };
    if (!joining && rollout && entry) {
      const decision = decide(rollout, entry);
      if (!decision.wantsSlot && !(entry.state === 'waiting' && rollout.imagePresent === null))
        return { ...strip(decision), entry, rollout };
    }
    // Something to write that depends on the other customers: under the lock, read again.
    return this.#db.transaction().execute(async (trx) => {
      await sql`SELECT pg_advisory_xact_lock(${ROLLOUT_LOCK_KEY})`.execute(trx);
      rollout = await this.#latest(trx, req.key);
      entry = rollout ? await this.#entry(trx, rollout.id, req.customer) : undefined;
      if (req.change) {
        if (needsNewRollout(rollout, entry, req.fingerprint, req.toHash)) {
          rollout = await this.#start(trx, req, rollout);
          entry = undefined;
        }
        if (!entry && rollout) {
          entry = await this.#join(trx, rollout.id, req);
        }
      }
      if (!rollout || !entry) return { recreateAllowed: true };
      if (entry.state === 'waiting' && rollout.state === 'running' && !rollout.undone && rollout.imagePresent === null) {
        rollout = await this.#checkImage(trx, rollout);
      }
      const decision = decide(rollout, entry);
      if (decision.wantsSlot) {
        const taken = await this.#takeSlot(trx, entry, req.now);
        if (taken) {
          entry = { ...entry, state: 'updating', startedAtMs: req.now };
          const after = decide(rollout, entry);
          return { ...strip(after), entry, rollout };
        }
        const { busy, slots } = await this.#slotUse(trx);
        const condition = decision.condition && {
          ...decision.condition,
          message: `${decision.condition.message} (${busy} of ${slots} being updated)`,
        };
        return { ...strip(decision), condition, entry, rollout };
      }
      return { ...strip(decision), entry, rollout };
    });
  }

  /**
   * After executing: `current` says the customer serves on the spec the planner aimed at. Moves
   * the entry on (done, failed, rolled back), pauses the rollout past the failure limit.
   * Returns whether a slot was freed (others may go now).
   */
  async report(
    admission: Admission,
    input: {
      customer: string;
      current: boolean;
      now: number;
      templateStartTimeoutSeconds: number;
      healthMessage?: string | undefined;
    },
  ): Promise<{ freed: boolean; failed: boolean }> {
    const { entry, rollout } = admission;
    if (!entry || !rollout || rollout.state === 'superseded') return { freed: false, failed: false };
    const outcome = settle(entry, {
      current: input.current,
      now: input.now,
      startTimeoutMs: this.startTimeoutMs(input.templateStartTimeoutSeconds),
      healthMessage: input.healthMessage,
    });
    if (outcome.kind === 'none') return { freed: false, failed: false };
    const next = outcome.entry;
    const event = (type: 'Normal' | 'Warning', reason: string, message: string) =>
      this.#deps.store.recordEvent(input.customer, { type, reason, message }).catch(() => {});
    // Every write below matches the entry as read (state and target): an `undo` in between turns
    // an updating entry around (target `previous`), and this outcome is about the old target.
    if (outcome.kind === 'done' || outcome.kind === 'rolledBack') {
      const settled = await sql`
        UPDATE rollout_customers SET state = ${next.state}, finished_at = ${ms(input.now)}
        WHERE rollout_id = ${entry.rolloutId} AND customer = ${entry.customer} AND state = ${entry.state}
          AND target = ${entry.target}
      `.execute(this.#db);
      if (Number(settled.numAffectedRows ?? 0) === 0) return { freed: false, failed: false };
      if (outcome.kind === 'done') {
        await event(
          'Normal',
          entry.target === 'new' ? 'RolloutUpdated' : 'RolloutReverted',
          entry.target === 'new'
            ? `updated by rollout ${rollout.id} (${rollout.key})`
            : `back on ${entry.prevImage ?? 'the previous image'} (rollout ${rollout.id} undone)`,
        );
      } else {
        await event(
          'Normal',
          'RolledBack',
          `back on ${entry.prevImage ?? 'the previous image'} after a failed update (rollout ${rollout.id})`,
        );
      }
      await this.refreshMetrics().catch(() => {});
      return { freed: entry.state !== 'waiting', failed: false };
    }
    // Failed: the customer goes back; past the limit the rollout pauses. Under the lock, so two
    // failures at once count each other.
    let paused = false;
    const recorded = await this.#db.transaction().execute(async (trx) => {
      await sql`SELECT pg_advisory_xact_lock(${ROLLOUT_LOCK_KEY})`.execute(trx);
      const failed = await sql`
        UPDATE rollout_customers SET state = ${next.state}, target = ${next.target}, message = ${next.message},
          finished_at = ${next.finishedAtMs === null ? null : ms(next.finishedAtMs)}
        WHERE rollout_id = ${entry.rolloutId} AND customer = ${entry.customer} AND state = 'updating'
          AND target = ${entry.target}
      `.execute(trx);
      if (Number(failed.numAffectedRows ?? 0) === 0) return false;
      const failures = await sql<{ n: number }>`
        SELECT count(*)::int AS n FROM rollout_customers
        WHERE rollout_id = ${rollout.id} AND state IN ('rollingBack', 'failed') AND message <> ''
      `.execute(trx);
      const n = failures.rows[0]?.n ?? 0;
      if (n > this.#deps.settings.maxFailures) {
        const message = `${n} updated containers failed to become healthy (more than BLYTZ_ROLLOUT_MAX_FAILURES=${this.#deps.settings.maxFailures}); they are rolled back`;
        const updated = await sql`
          UPDATE rollouts SET state = 'paused', paused_reason = 'Failures', paused_message = ${message}, updated_at = now()
          WHERE id = ${rollout.id} AND state = 'running'
        `.execute(trx);
        paused = Number(updated.numAffectedRows ?? 0) > 0;
        if (paused)
          this.#deps.logger.warn(
            { rollout: rollout.id, key: rollout.key, failures: n },
            'rollout paused: too many failed updates',
          );
      }
      return true;
    });
    if (!recorded) return { freed: false, failed: false };
    await event('Warning', 'RolloutFailed', `${next.message}; rolling back to ${entry.prevImage ?? 'the previous image'}`);
    if (paused)
      await event(
        'Warning',
        'RolloutPaused',
        `rollout ${rollout.id} (${rollout.key}) paused: more than ${this.#deps.settings.maxFailures} failed updates`,
      );
    await this.refreshMetrics().catch(() => {});
    return { freed: true, failed: true };
  }

  /**
   * A customer that stopped being active (suspended, cancelled, paused, deleted) while it was
   * being updated: its slot is not counted meanwhile (`#slotUse` leaves inactive customers out),
   * and its start time is cleared so that its start timeout counts from its return (`admit`
   * stamps it again), not from before (which would fail the update at once on a late resume).
   * The entry stays `updating`: its container may already run the new image, and an `undo`
   * meanwhile must still turn it around. Returns whether an entry was released (waiting
   * customers may take the slot now).
   */
  async release(customer: string): Promise<boolean> {
    const released = await sql`
      UPDATE rollout_customers SET started_at = NULL
      WHERE customer = ${customer} AND state = 'updating' AND started_at IS NOT NULL
    `.execute(this.#db);
    const freed = Number(released.numAffectedRows ?? 0) > 0;
    if (freed) await this.refreshMetrics().catch(() => {});
    return freed;
  }

  /** Customers waiting for a slot in running rollouts: woken when a slot frees. */
  async waitingCustomers(limit: number): Promise<string[]> {
    const rows = await sql<{ customer: string }>`
      SELECT rc.customer FROM rollout_customers rc JOIN rollouts r ON r.id = rc.rollout_id
      WHERE r.state = 'running' AND rc.state = 'waiting' AND (rc.target = 'previous' OR NOT r.undone)
      ORDER BY rc.customer LIMIT ${limit}
    `.execute(this.#db);
    return rows.rows.map((r) => r.customer);
  }

  /** The latest rollout per template/plan (older ones are superseded), with counts. */
  async list(now = Date.now()): Promise<RolloutView[]> {
    const rollouts = await sql<RolloutRow>`
      SELECT DISTINCT ON (key) id::int AS id, key, fingerprint, image, state, undone, paused_reason, paused_message, image_present,
        (extract(epoch FROM started_at) * 1000)::float8 AS started_ms
      FROM rollouts ORDER BY key, id DESC
    `.execute(this.#db);
    const { slots } = await this.#slotUse(this.#db);
    const views: RolloutView[] = [];
    for (const row of rollouts.rows) {
      const r = toRollout(row);
      if (r.state === 'superseded') continue;
      const entries = await this.#entries(this.#db, r.id);
      const counts = countEntries(entries);
      const eta = estimateRemainingMs(entries, slots);
      const complete =
        r.state === 'running' &&
        counts.waiting === 0 &&
        counts.inProgress === 0 &&
        entries.every((e) => e.state !== 'rollingBack');
      views.push({
        id: r.id,
        key: r.key,
        target: { fingerprint: r.fingerprint, image: r.image },
        state: complete ? 'complete' : r.state === 'paused' ? 'paused' : 'running',
        undone: r.undone,
        pausedReason: r.pausedReason,
        pausedMessage: r.pausedMessage,
        startedAt: new Date(r.startedAtMs).toISOString(),
        counts,
        maxUnavailable: formatMaxUnavailable(this.#deps.settings.maxUnavailable),
        slots,
        etaSeconds: r.state === 'paused' || eta === undefined ? null : Math.round(eta / 1000),
        customers: entries.map((e) => ({
          customer: e.customer,
          state: e.state,
          target: e.target,
          message: e.message,
          prevImage: e.prevImage,
        })),
      });
      void now;
    }
    return views;
  }

  /** Pauses every running rollout: no new customer starts; those in flight finish. */
  async pause(): Promise<number> {
    const r = await sql`
      UPDATE rollouts SET state = 'paused', paused_reason = 'Operator', paused_message = 'paused by an operator (blytz rollout pause)', updated_at = now()
      WHERE state = 'running'
    `.execute(this.#db);
    await this.refreshMetrics().catch(() => {});
    return Number(r.numAffectedRows ?? 0);
  }

  /** Resumes paused rollouts; customers whose update failed are tried again; the image is checked again. */
  async resume(): Promise<number> {
    const count = await this.#db.transaction().execute(async (trx) => {
      await sql`SELECT pg_advisory_xact_lock(${ROLLOUT_LOCK_KEY})`.execute(trx);
      const ids = await sql<{ id: number }>`
        UPDATE rollouts SET state = 'running', paused_reason = NULL, paused_message = NULL, image_present = NULL, updated_at = now()
        WHERE state = 'paused' RETURNING id::int AS id
      `.execute(trx);
      for (const { id } of ids.rows) {
        await sql`
          UPDATE rollout_customers SET state = 'waiting', target = 'new', message = '', started_at = NULL, finished_at = NULL
          WHERE rollout_id = ${id} AND state = 'failed' AND message <> ''
            AND NOT (SELECT undone FROM rollouts WHERE id = ${id})
        `.execute(trx);
      }
      return ids.rows.length;
    });
    await this.refreshMetrics().catch(() => {});
    return count;
  }

  /**
   * Undoes the current rollouts: every customer already updated (or updating) goes back to its
   * previous image, in waves like the update; customers not reached yet stay as they are.
   */
  async undo(): Promise<number> {
    const count = await this.#db.transaction().execute(async (trx) => {
      await sql`SELECT pg_advisory_xact_lock(${ROLLOUT_LOCK_KEY})`.execute(trx);
      const ids = await sql<{ id: number }>`
        UPDATE rollouts r SET undone = true, state = 'running', paused_reason = NULL, paused_message = NULL, updated_at = now()
        WHERE state <> 'superseded' AND NOT undone
          AND id = (SELECT max(id) FROM rollouts r2 WHERE r2.key = r.key)
        RETURNING id::int AS id
      `.execute(trx);
      for (const { id } of ids.rows) {
        await sql`
          UPDATE rollout_customers SET target = 'previous', message = '', finished_at = NULL,
            -- One being updated keeps its slot and turns straight back; the updated ones queue.
            state = CASE WHEN state = 'updating' THEN 'updating' ELSE 'waiting' END,
            started_at = CASE WHEN state = 'updating' THEN started_at ELSE NULL END
          WHERE rollout_id = ${id} AND target = 'new' AND state IN ('updating', 'done')
        `.execute(trx);
      }
      return ids.rows.length;
    });
    await this.refreshMetrics().catch(() => {});
    return count;
  }

  /** blytz_rollout_customers{state} and blytz_rollout_paused{reason} from the store. */
  async refreshMetrics(): Promise<void> {
    const views = await this.list();
    const { metrics } = this.#deps;
    const totals: Record<string, number> = { waiting: 0, in_progress: 0, done: 0, failed: 0, rolled_back: 0 };
    const paused: Record<string, number> = { Failures: 0, ImageMissing: 0, Operator: 0 };
    for (const v of views) {
      totals['waiting']! += v.counts.waiting;
      totals['in_progress']! += v.counts.inProgress;
      totals['done']! += v.counts.done;
      totals['failed']! += v.counts.failed;
      totals['rolled_back']! += v.counts.rolledBack;
      if (v.state === 'paused' && v.pausedReason) paused[v.pausedReason] = (paused[v.pausedReason] ?? 0) + 1;
    }
    for (const [state, n] of Object.entries(totals)) metrics.rolloutCustomers.set({ state }, n);
    for (const [reason, n] of Object.entries(paused)) metrics.rolloutPaused.set({ reason: reasonLabel(reason) }, n);
  }

  async #latest(db: Db, key: string): Promise<RolloutRecord | undefined> {
    const r = await sql<RolloutRow>`
      SELECT id::int AS id, key, fingerprint, image, state, undone, paused_reason, paused_message, image_present,
        (extract(epoch FROM started_at) * 1000)::float8 AS started_ms
      FROM rollouts WHERE key = ${key} ORDER BY id DESC LIMIT 1
    `.execute(db);
    return r.rows[0] ? toRollout(r.rows[0]) : undefined;
  }

  /** A released entry (see `release`) whose customer is active again: its start timeout starts now. */
  async #restamp(entry: RolloutEntry, now: number): Promise<RolloutEntry> {
    await sql`
      UPDATE rollout_customers SET started_at = ${ms(now)}
      WHERE rollout_id = ${entry.rolloutId} AND customer = ${entry.customer} AND state = 'updating' AND started_at IS NULL
    `.execute(this.#db);
    return { ...entry, startedAtMs: now };
  }

  async #entry(db: Db, rolloutId: number, customer: string): Promise<RolloutEntry | undefined> {
    const r = await sql<EntryRow>`
      SELECT rollout_id::int AS rollout_id, customer, from_hash, to_hash, prev_image, target, state, message,
        (extract(epoch FROM started_at) * 1000)::float8 AS started_ms, (extract(epoch FROM finished_at) * 1000)::float8 AS finished_ms
      FROM rollout_customers WHERE rollout_id = ${rolloutId} AND customer = ${customer}
    `.execute(db);
    return r.rows[0] ? toEntry(r.rows[0]) : undefined;
  }

  /** Entries of live customers only: a customer cancelled mid-rollout does not hold it open. */
  async #entries(db: Db, rolloutId: number): Promise<RolloutEntry[]> {
    const r = await sql<EntryRow>`
      SELECT rc.rollout_id::int AS rollout_id, rc.customer, rc.from_hash, rc.to_hash, rc.prev_image, rc.target, rc.state, rc.message,
        (extract(epoch FROM rc.started_at) * 1000)::float8 AS started_ms, (extract(epoch FROM rc.finished_at) * 1000)::float8 AS finished_ms
      FROM rollout_customers rc JOIN customers c ON c.name = rc.customer AND c.state = 'active' AND c.deleted_at IS NULL
      WHERE rc.rollout_id = ${rolloutId} ORDER BY rc.customer
    `.execute(db);
    return r.rows.map(toEntry);
  }

  async #start(trx: Db, req: AdmitRequest, previous: RolloutRecord | undefined): Promise<RolloutRecord> {
    if (previous && previous.state !== 'superseded') {
      await sql`UPDATE rollouts SET state = 'superseded', updated_at = now() WHERE id = ${previous.id}`.execute(trx);
    }
    const r = await sql<RolloutRow>`
      INSERT INTO rollouts (key, fingerprint, image, state, started_at)
      VALUES (${req.key}, ${req.fingerprint}, ${req.image}, 'running', ${ms(req.now)})
      RETURNING id::int AS id, key, fingerprint, image, state, undone, paused_reason, paused_message, image_present,
        (extract(epoch FROM started_at) * 1000)::float8 AS started_ms
    `.execute(trx);
    const rollout = toRollout(r.rows[0] as RolloutRow);
    this.#deps.logger.info(
      { rollout: rollout.id, key: req.key, image: req.image, fingerprint: req.fingerprint },
      'fleet rollout started',
    );
    return rollout;
  }

  async #join(trx: Db, rolloutId: number, req: AdmitRequest): Promise<RolloutEntry> {
    const r = await sql<EntryRow>`
      INSERT INTO rollout_customers (rollout_id, customer, from_hash, to_hash, prev_image, target, state)
      VALUES (${rolloutId}, ${req.customer}, ${req.change?.fromHash ?? null}, ${req.toHash}, ${req.change?.image ?? null}, 'new', 'waiting')
      RETURNING rollout_id::int AS rollout_id, customer, from_hash, to_hash, prev_image, target, state, message,
        NULL::float8 AS started_ms, NULL::float8 AS finished_ms
    `.execute(trx);
    return toEntry(r.rows[0] as EntryRow);
  }

  /** Once per rollout (and again on resume): a missing image pauses it before any container goes. */
  async #checkImage(trx: Db, rollout: RolloutRecord): Promise<RolloutRecord> {
    const present = await this.#deps.imagePresent(rollout.image);
    if (present) {
      await sql`UPDATE rollouts SET image_present = true, updated_at = now() WHERE id = ${rollout.id}`.execute(trx);
      return { ...rollout, imagePresent: true };
    }
    const message = `image ${rollout.image} is not present on the Docker host (docker image inspect found nothing): pull or build it, then \`blytz rollout resume\`; the current containers keep running`;
    await sql`
      UPDATE rollouts SET image_present = false, state = 'paused', paused_reason = 'ImageMissing', paused_message = ${message}, updated_at = now()
      WHERE id = ${rollout.id}
    `.execute(trx);
    this.#deps.logger.warn({ rollout: rollout.id, image: rollout.image }, 'rollout paused: image missing');
    return { ...rollout, imagePresent: false, state: 'paused', pausedReason: 'ImageMissing', pausedMessage: message };
  }

  async #slotUse(db: Db): Promise<{ busy: number; slots: number }> {
    const r = await sql<{ busy: number; active: number }>`
      SELECT
        (SELECT count(*)::int FROM rollout_customers rc
           JOIN rollouts r ON r.id = rc.rollout_id AND r.state <> 'superseded'
           -- Suspended, cancelled or paused (spec.paused: the controller leaves it alone) customers
           -- are not reconciled, so they never report: they must not hold a slot.
           JOIN customers c ON c.name = rc.customer AND c.state = 'active' AND NOT c.paused AND c.deleted_at IS NULL
         WHERE rc.state IN ('updating', 'rollingBack')) AS busy,
        (SELECT count(*)::int FROM customers WHERE state = 'active' AND deleted_at IS NULL) AS active
    `.execute(db);
    const row = r.rows[0] ?? { busy: 0, active: 0 };
    return { busy: row.busy, slots: maxUnavailableOf(this.#deps.settings.maxUnavailable, row.active) };
  }

  /** Takes a slot for a waiting entry when fewer than the limit are being recreated. Call under the lock. */
  async #takeSlot(trx: Db, entry: RolloutEntry, now: number): Promise<boolean> {
    const { busy, slots } = await this.#slotUse(trx);
    if (busy >= slots) return false;
    await sql`
      UPDATE rollout_customers SET state = 'updating', started_at = ${ms(now)}
      WHERE rollout_id = ${entry.rolloutId} AND customer = ${entry.customer} AND state = 'waiting'
    `.execute(trx);
    return true;
  }
}

function strip(decision: Decision): Omit<Decision, 'wantsSlot'> {
  const { wantsSlot: _wantsSlot, ...rest } = decision;
  return rest;
}

function reasonLabel(reason: string): string {
  return reason === 'Failures' ? 'failures' : reason === 'ImageMissing' ? 'image_missing' : 'operator';
}
