/**
 * The pure part of fleet rollouts: limits, per-customer decisions and transitions, summaries.
 * No I/O and no clock (times come in as numbers), so each rule is tested by example.
 *
 * A customer takes part in a rollout through an entry:
 *
 *   target new:      waiting ──slot──► updating ──healthy + routed──► done
 *                                          │ not healthy within the start timeout
 *                                          ▼
 *   target previous:                   rollingBack ──healthy on the previous image──► failed
 *   (undo)           waiting ──slot──► updating ──────────────────────────────────► done
 *
 * `updating` and `rollingBack` entries are the customers being recreated: at most
 * `maxUnavailable` of them at a time. A rollback never waits for a slot (the customer is down
 * already), but it holds one until it serves again.
 */

import type { EntryState, RolloutCounts, RolloutEntry, RolloutRecord } from '../../domain/rollout.js';

/** `BLYTZ_ROLLOUT_MAX_UNAVAILABLE`: a count, or a percentage of the active customers. */
export type MaxUnavailable = { kind: 'count'; value: number } | { kind: 'percent'; value: number };

export function parseMaxUnavailable(text: string): MaxUnavailable {
  const match = /^\s*(\d+)\s*(%?)\s*$/.exec(text);
  if (!match) throw new Error(`"${text}" is not a number or a percentage like 10%`);
  const value = Number(match[1]);
  if (match[2] === '%') {
    if (value < 1 || value > 100) throw new Error(`"${text}": a percentage must be between 1% and 100%`);
    return { kind: 'percent', value };
  }
  if (value < 1) throw new Error(`"${text}": at least 1 customer must be allowed to update at a time`);
  return { kind: 'count', value };
}

/** How many customers may be unavailable at once: rounded down like Kubernetes, at least 1. */
export function maxUnavailableOf(limit: MaxUnavailable, activeCustomers: number): number {
  const n = limit.kind === 'count' ? limit.value : Math.floor((activeCustomers * limit.value) / 100);
  return Math.max(1, n);
}

export function formatMaxUnavailable(limit: MaxUnavailable): string {
  return limit.kind === 'count' ? String(limit.value) : `${limit.value}%`;
}

/** Entries that hold a slot: their customer is being recreated. */
export function holdsSlot(state: EntryState): boolean {
  return state === 'updating' || state === 'rollingBack';
}

/**
 * Whether a customer's fleet change belongs to another rollout than the latest one for its key:
 * none yet, other fleet inputs (a new image, new plan limits), or the customer's entry aims at
 * another hash (a template or render change with the same inputs).
 */
export function needsNewRollout(
  latest: RolloutRecord | undefined,
  entry: RolloutEntry | undefined,
  fingerprint: string,
  toHash: string,
): boolean {
  if (!latest || latest.state === 'superseded') return true;
  if (latest.fingerprint !== fingerprint) return true;
  return entry !== undefined && entry.toHash !== toHash;
}

export interface Decision {
  /** Whether the planner may replace the customer's outdated container now. */
  recreateAllowed: boolean;
  /** The customer goes (or stays) back on this image instead of the new one. */
  rollbackImage?: string | undefined;
  /** Why the container does not run the new spec (status condition UpToDate=False). */
  condition?: { reason: string; message: string } | undefined;
  /** A slot should be taken for this waiting entry (checked and written under the lock). */
  wantsSlot?: boolean;
}

/**
 * What a customer's entry allows, given its rollout. `wantsSlot` asks the caller to take a slot
 * (under the rollout lock); the caller then treats the entry as updating.
 */
export function decide(rollout: RolloutRecord, entry: RolloutEntry): Decision {
  if (rollout.state === 'superseded') return { recreateAllowed: true };
  if (entry.target === 'previous') {
    const rollbackImage = entry.prevImage ?? undefined;
    switch (entry.state) {
      case 'rollingBack':
        return {
          recreateAllowed: true,
          rollbackImage,
          condition: {
            reason: 'RollingBack',
            message: `${entry.message}; rolling back to ${entry.prevImage ?? 'the previous image'}`,
          },
        };
      case 'failed':
        return {
          recreateAllowed: true,
          rollbackImage,
          condition: { reason: 'RolledBack', message: `${entry.message}; runs ${entry.prevImage ?? 'the previous image'} again` },
        };
      case 'waiting':
        return {
          recreateAllowed: false,
          rollbackImage,
          wantsSlot: rollout.state === 'running',
          condition: {
            reason: 'WaitingForRollback',
            message: 'the rollout was undone; waiting for a slot to go back to the previous image',
          },
        };
      case 'updating':
      case 'done':
        return {
          recreateAllowed: true,
          rollbackImage,
          condition: {
            reason: 'RolloutUndone',
            message: `the rollout was undone: runs ${entry.prevImage ?? 'the previous image'}`,
          },
        };
    }
  }
  switch (entry.state) {
    case 'updating':
    case 'done':
      return { recreateAllowed: true };
    case 'rollingBack':
    case 'failed':
      // Not reached: a failed update always targets the previous image.
      return { recreateAllowed: false };
    case 'waiting':
      if (rollout.undone) {
        return {
          recreateAllowed: false,
          condition: { reason: 'RolloutUndone', message: 'the rollout was undone before this customer was updated' },
        };
      }
      if (rollout.state === 'paused') {
        return {
          recreateAllowed: false,
          condition: {
            reason: 'RolloutPaused',
            message: `the fleet rollout is paused (${rollout.pausedMessage ?? rollout.pausedReason ?? 'by an operator'}); the current container keeps running`,
          },
        };
      }
      return {
        recreateAllowed: false,
        wantsSlot: true,
        condition: { reason: 'WaitingForRollout', message: 'a fleet rollout replaces this container when a slot is free' },
      };
  }
}

export type Settlement =
  | { kind: 'none' }
  | { kind: 'done'; entry: RolloutEntry }
  | { kind: 'rolledBack'; entry: RolloutEntry }
  /** The new container did not become healthy in time: the customer goes back. */
  | { kind: 'failed'; entry: RolloutEntry };

/**
 * After a reconcile: `current` says the customer serves on the spec the planner aimed at (for a
 * rollback, the previous image). Pure transition of the entry.
 */
export function settle(
  entry: RolloutEntry,
  input: { current: boolean; now: number; startTimeoutMs: number; healthMessage?: string | undefined },
): Settlement {
  if (input.current) {
    if (entry.state === 'waiting' || entry.state === 'updating') {
      return { kind: 'done', entry: { ...entry, state: 'done', finishedAtMs: input.now } };
    }
    if (entry.state === 'rollingBack') {
      return { kind: 'rolledBack', entry: { ...entry, state: 'failed', finishedAtMs: input.now } };
    }
    return { kind: 'none' };
  }
  if (entry.state === 'updating' && entry.startedAtMs !== null && input.now - entry.startedAtMs > input.startTimeoutMs) {
    const why = `the new container did not become healthy within ${Math.round(input.startTimeoutMs / 1000)}s${input.healthMessage ? ` (${input.healthMessage})` : ''}`;
    if (entry.target === 'new') {
      return { kind: 'failed', entry: { ...entry, state: 'rollingBack', target: 'previous', message: why } };
    }
    // An undo's rollback that does not come up either: stop holding a slot, say so.
    return { kind: 'failed', entry: { ...entry, state: 'failed', message: why, finishedAtMs: input.now } };
  }
  return { kind: 'none' };
}

export function countEntries(entries: Array<Pick<RolloutEntry, 'state' | 'target'>>): RolloutCounts {
  const counts: RolloutCounts = { total: entries.length, waiting: 0, inProgress: 0, done: 0, failed: 0, rolledBack: 0 };
  for (const e of entries) {
    if (e.state === 'waiting') counts.waiting++;
    else if (e.state === 'updating') counts.inProgress++;
    else if (e.state === 'rollingBack' || e.state === 'failed') counts.failed++;
    else if (e.target === 'previous') counts.rolledBack++;
    else counts.done++;
  }
  return counts;
}

/**
 * Remaining time: the mean duration of finished updates times the waves still to go. Undefined
 * until one update finished, or when nothing waits.
 */
export function estimateRemainingMs(
  entries: Array<Pick<RolloutEntry, 'state' | 'startedAtMs' | 'finishedAtMs'>>,
  slots: number,
): number | undefined {
  const finished = entries.filter((e) => e.state === 'done' && e.startedAtMs !== null && e.finishedAtMs !== null);
  const remaining = entries.filter((e) => e.state === 'waiting' || e.state === 'updating').length;
  if (remaining === 0) return 0;
  if (finished.length === 0) return undefined;
  const mean = finished.reduce((sum, e) => sum + ((e.finishedAtMs as number) - (e.startedAtMs as number)), 0) / finished.length;
  return Math.round(mean * Math.ceil(remaining / Math.max(1, slots)));
}
