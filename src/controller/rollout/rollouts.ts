import type { RolloutEntry, RolloutRecord, RolloutView } from '../../domain/rollout.js';
import type { Logger } from '../../observability/logger.js';
import type { Metrics } from '../../observability/metrics.js';
import type { ControllerStore } from '../../store/store.js';
import type { RolloutStore } from '../../store/rollout-store.js';
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
} from './gate.js';

/**
 * Fleet rollouts on the store (the rollout records, store/rollout-store.ts). The customer reconciler
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
  /** The rollout records. */
  records: RolloutStore;
  /** Where the customers' events go. */
  store: Pick<ControllerStore, 'recordEvent'>;
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

export class Rollouts {
  readonly #deps: RolloutsDeps;
  readonly #records: RolloutStore;

  constructor(deps: RolloutsDeps) {
    this.#deps = deps;
    this.#records = deps.records;
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
    let rollout = await this.#records.latest(req.key);
    let entry = rollout ? await this.#records.entry(rollout.id, req.customer) : undefined;
    if (entry?.state === 'updating' && entry.startedAtMs === null) {
      await this.#records.restamp(entry, req.now);
      entry = { ...entry, startedAtMs: req.now };
    }
    const joining = req.change !== undefined && (needsNewRollout(rollout, entry, req.fingerprint, req.toHash) || !entry);
    if (!joining && (!rollout || !entry)) return { recreateAllowed: true };
    if (!joining && rollout && entry) {
      const decision = decide(rollout, entry);
      if (!decision.wantsSlot && !(entry.state === 'waiting' && rollout.imagePresent === null))
        return { ...strip(decision), entry, rollout };
    }
    // Something to write that depends on the other customers: under the lock, read again.
    return this.#records.locked(async (records) => {
      rollout = await records.latest(req.key);
      entry = rollout ? await records.entry(rollout.id, req.customer) : undefined;
      if (req.change) {
        if (needsNewRollout(rollout, entry, req.fingerprint, req.toHash)) {
          rollout = await records.start(req, rollout);
          this.#deps.logger.info(
            { rollout: rollout.id, key: req.key, image: req.image, fingerprint: req.fingerprint },
            'fleet rollout started',
          );
          entry = undefined;
        }
        if (!entry && rollout) {
          entry = await records.join(rollout.id, {
            customer: req.customer,
            fromHash: req.change.fromHash,
            toHash: req.toHash,
            prevImage: req.change.image ?? null,
          });
        }
      }
      if (!rollout || !entry) return { recreateAllowed: true };
      if (entry.state === 'waiting' && rollout.state === 'running' && !rollout.undone && rollout.imagePresent === null) {
        rollout = await this.#checkImage(records, rollout);
      }
      const decision = decide(rollout, entry);
      if (decision.wantsSlot) {
        const { busy, slots } = await this.#slotUse(records);
        if (busy < slots) {
          await records.takeSlot(entry, req.now);
          entry = { ...entry, state: 'updating', startedAtMs: req.now };
          const after = decide(rollout, entry);
          return { ...strip(after), entry, rollout };
        }
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
      if (!(await this.#records.finish(entry, next.state, input.now))) return { freed: false, failed: false };
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
    const { maxFailures } = this.#deps.settings;
    let paused = false;
    const recorded = await this.#records.locked(async (records) => {
      if (!(await records.fail(entry, next))) return false;
      const n = await records.countFailures(rollout.id);
      if (n > maxFailures) {
        const message = `${n} updated containers failed to become healthy (more than BLYTZ_ROLLOUT_MAX_FAILURES=${maxFailures}); they are rolled back`;
        paused = await records.pauseForFailures(rollout.id, message);
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
      await event('Warning', 'RolloutPaused', `rollout ${rollout.id} (${rollout.key}) paused: more than ${maxFailures} failed updates`);
    await this.refreshMetrics().catch(() => {});
    return { freed: true, failed: true };
  }

  /**
   * A customer that stopped being active (suspended, cancelled, paused, deleted) while it was
   * being updated: its slot is not counted meanwhile (`slotUse` leaves inactive customers out),
   * and its start time is cleared so that its start timeout counts from its return (`admit`
   * stamps it again), not from before (which would fail the update at once on a late resume).
   * The entry stays `updating`: its container may already run the new image, and an `undo`
   * meanwhile must still turn it around. Returns whether an entry was released (waiting
   * customers may take the slot now).
   */
  async release(customer: string): Promise<boolean> {
    const released = await this.#records.release(customer);
    if (released) await this.refreshMetrics().catch(() => {});
    return released;
  }

  /** Customers waiting for a slot in running rollouts: woken when a slot frees. */
  waitingCustomers(limit: number): Promise<string[]> {
    return this.#records.waitingCustomers(limit);
  }

  /** The latest rollout per template/plan (older ones are superseded), with counts. */
  async list(): Promise<RolloutView[]> {
    const rollouts = await this.#records.latestPerKey();
    const { slots } = await this.#slotUse(this.#records);
    const views: RolloutView[] = [];
    for (const r of rollouts) {
      if (r.state === 'superseded') continue;
      const entries = await this.#records.liveEntries(r.id);
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
    }
    return views;
  }

  /** Pauses every running rollout: no new customer starts; those in flight finish. */
  async pause(): Promise<number> {
    const count = await this.#records.pauseRunning();
    await this.refreshMetrics().catch(() => {});
    return count;
  }

  /** Resumes paused rollouts; customers whose update failed are tried again; the image is checked again. */
  async resume(): Promise<number> {
    const count = await this.#records.locked((records) => records.resumePaused());
    await this.refreshMetrics().catch(() => {});
    return count;
  }

  /**
   * Undoes the current rollouts: every customer already updated (or updating) goes back to its
   * previous image, in waves like the update; customers not reached yet stay as they are.
   */
  async undo(): Promise<number> {
    const count = await this.#records.locked((records) => records.undoLatest());
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

  /** Once per rollout (and again on resume): a missing image pauses it before any container goes. */
  async #checkImage(records: RolloutStore, rollout: RolloutRecord): Promise<RolloutRecord> {
    if (await this.#deps.imagePresent(rollout.image)) {
      await records.markImagePresent(rollout.id);
      return { ...rollout, imagePresent: true };
    }
    const message = `image ${rollout.image} is not present on the Docker host (docker image inspect found nothing): pull or build it, then \`blytz rollout resume\`; the current containers keep running`;
    await records.pauseForMissingImage(rollout.id, message);
    this.#deps.logger.warn({ rollout: rollout.id, image: rollout.image }, 'rollout paused: image missing');
    return { ...rollout, imagePresent: false, state: 'paused', pausedReason: 'ImageMissing', pausedMessage: message };
  }

  /** Customers being recreated, and how many may be at once (the limit over the active customers). */
  async #slotUse(records: RolloutStore): Promise<{ busy: number; slots: number }> {
    const { busy, active } = await records.slotUse();
    return { busy, slots: maxUnavailableOf(this.#deps.settings.maxUnavailable, active) };
  }
}

function strip(decision: Decision): Omit<Decision, 'wantsSlot'> {
  const { wantsSlot: _wantsSlot, ...rest } = decision;
  return rest;
}

function reasonLabel(reason: string): string {
  return reason === 'Failures' ? 'failures' : reason === 'ImageMissing' ? 'image_missing' : 'operator';
}
