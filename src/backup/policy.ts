import type { BackupRecord } from '../store/backup-records.js';

/**
 * When a customer is backed up and how many backups are kept: pure functions of the plan's
 * policy, the customer's backup records and the time, so the schedule is tested without a clock.
 *
 * A plan declares its policy (`PLAN_BACKUP_POLICIES`); BLYTZ_BACKUP_SCHEDULE_SECONDS and
 * BLYTZ_BACKUP_KEEP override every plan's (0 seconds: no scheduled backups).
 */

export interface BackupPolicy {
  /** How often a scheduled backup is taken (0: never on schedule). */
  scheduleSeconds: number;
  /** Scheduled and manual backups kept (the newest). */
  keep: number;
}

export const PLAN_BACKUP_POLICIES: Readonly<Record<string, BackupPolicy>> = {
  personal: { scheduleSeconds: 86_400, keep: 7 },
  pro: { scheduleSeconds: 6 * 3600, keep: 28 },
};
const FALLBACK_POLICY: BackupPolicy = { scheduleSeconds: 86_400, keep: 7 };

/** Pre-update backups kept per customer (the newest): enough to undo the last few rollouts. */
export const PRE_UPDATE_KEPT = 3;
/** Failed records kept per customer (they have no archive; the newest say why). */
export const FAILED_KEPT = 5;
/** A schedule whose last backup failed for good asks again this soon, not a whole period later. */
export const FAILED_RETRY_SECONDS = 15 * 60;

export function policyFor(
  plan: string,
  overrides: { scheduleSeconds?: number | undefined; keep?: number | undefined } = {},
): BackupPolicy {
  const base = PLAN_BACKUP_POLICIES[plan] ?? FALLBACK_POLICY;
  return {
    scheduleSeconds: overrides.scheduleSeconds ?? base.scheduleSeconds,
    keep: Math.max(1, overrides.keep ?? base.keep),
  };
}

const COUNTS_FOR_SCHEDULE = new Set<BackupRecord['reason']>(['scheduled', 'manual']);

/**
 * When the next scheduled backup is due (ms since epoch), or undefined for none. Scheduled and
 * manual backups both count: a backup an operator just took resets the clock. One asked for and
 * not finished holds the next one off; one that failed for good brings the next one closer.
 */
export function nextScheduledAt(policy: BackupPolicy, backups: readonly BackupRecord[], createdAtMs: number): number | undefined {
  if (policy.scheduleSeconds <= 0) return undefined;
  const relevant = backups.filter((b) => COUNTS_FOR_SCHEDULE.has(b.reason));
  if (relevant.some((b) => b.state === 'pending' || b.state === 'running')) return undefined;
  const newest = relevant.reduce<BackupRecord | undefined>(
    (best, b) => (best === undefined || b.requestedAt.getTime() > best.requestedAt.getTime() ? b : best),
    undefined,
  );
  // A customer never backed up is due at once (from the moment it exists).
  if (!newest) return createdAtMs;
  const gap = newest.state === 'failed' ? Math.min(FAILED_RETRY_SECONDS, policy.scheduleSeconds) : policy.scheduleSeconds;
  return newest.requestedAt.getTime() + gap * 1000;
}

/**
 * The backups retention removes: beyond the newest `keep` succeeded scheduled and manual ones,
 * beyond the newest PRE_UPDATE_KEPT pre-update ones, beyond the newest FAILED_KEPT failed
 * records. Pre-purge backups are never removed here (the last copy of a purged customer), nor
 * anything still pending or running, nor the newest succeeded backup of any reason.
 */
export function retentionVictims(policy: BackupPolicy, backups: readonly BackupRecord[]): BackupRecord[] {
  const newestFirst = [...backups].sort((a, b) => b.requestedAt.getTime() - a.requestedAt.getTime() || b.id - a.id);
  const newestGood = newestFirst.find((b) => b.state === 'succeeded');
  const victims: BackupRecord[] = [];
  const beyond = (items: BackupRecord[], keep: number) => victims.push(...items.slice(keep));
  beyond(
    newestFirst.filter((b) => b.state === 'succeeded' && COUNTS_FOR_SCHEDULE.has(b.reason)),
    policy.keep,
  );
  beyond(
    newestFirst.filter((b) => b.state === 'succeeded' && b.reason === 'pre-update'),
    PRE_UPDATE_KEPT,
  );
  beyond(
    newestFirst.filter((b) => b.state === 'failed'),
    FAILED_KEPT,
  );
  return victims.filter((b) => b !== newestGood);
}
