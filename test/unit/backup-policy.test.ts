import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { FAILED_RETRY_SECONDS, nextScheduledAt, policyFor, PRE_UPDATE_KEPT, retentionVictims } from '../../src/backup/policy.js';
import type { BackupRecord } from '../../src/store/backup-records.js';

const HOUR = 3_600_000;
const policy = { scheduleSeconds: 3600, keep: 3 };

function backup(id: number, reason: BackupRecord['reason'], state: BackupRecord['state'], atMs: number): BackupRecord {
  return {
    id,
    customer: 'alice',
    reason,
    ref: null,
    state,
    attempts: 1,
    requestedAt: new Date(atMs),
    startedAt: null,
    finishedAt: state === 'succeeded' ? new Date(atMs + 1000) : null,
    storage: null,
    location: state === 'succeeded' ? `alice/${id}` : null,
    sizeBytes: null,
    sha256: null,
    openclawVersion: null,
    runtime: null,
    files: null,
    durationMs: null,
    message: '',
  };
}

const arbitraryBackups = fc.array(
  fc.record({
    reason: fc.constantFrom<BackupRecord['reason']>('manual', 'scheduled', 'pre-update', 'pre-purge'),
    state: fc.constantFrom<BackupRecord['state']>('pending', 'running', 'succeeded', 'failed'),
    at: fc.integer({ min: 0, max: 100 * HOUR }),
  }),
  { maxLength: 40 },
);

describe('backup schedule', () => {
  it("takes the plan's policy, overridden by the configuration", () => {
    expect(policyFor('personal')).toEqual({ scheduleSeconds: 86_400, keep: 7 });
    expect(policyFor('pro', { scheduleSeconds: 60 })).toEqual({ scheduleSeconds: 60, keep: 28 });
    expect(policyFor('personal', { scheduleSeconds: 0, keep: 2 })).toEqual({ scheduleSeconds: 0, keep: 2 });
  });

  it('is due at once for a customer never backed up, then one schedule after the newest', () => {
    expect(nextScheduledAt(policy, [], 5)).toBe(5);
    expect(nextScheduledAt(policy, [backup(1, 'scheduled', 'succeeded', 10 * HOUR)], 0)).toBe(11 * HOUR);
    // A manual backup resets the clock; a pre-update one does not.
    const list = [
      backup(1, 'scheduled', 'succeeded', 10 * HOUR),
      backup(2, 'manual', 'succeeded', 10.5 * HOUR),
      backup(3, 'pre-update', 'succeeded', 10.9 * HOUR),
    ];
    expect(nextScheduledAt(policy, list, 0)).toBe(11.5 * HOUR);
  });

  it('waits while one is pending, asks again soon after one failed for good, never with no schedule', () => {
    expect(nextScheduledAt(policy, [backup(1, 'scheduled', 'running', 0)], 0)).toBeUndefined();
    expect(nextScheduledAt({ scheduleSeconds: 86_400, keep: 1 }, [backup(1, 'scheduled', 'failed', 0)], 0)).toBe(
      FAILED_RETRY_SECONDS * 1000,
    );
    expect(nextScheduledAt({ scheduleSeconds: 0, keep: 1 }, [], 0)).toBeUndefined();
  });
});

describe('backup retention', () => {
  it('keeps the newest `keep` scheduled and manual ones, the newest pre-update ones, every pre-purge one', () => {
    const list = [
      ...[1, 2, 3, 4, 5].map((i) => backup(i, 'scheduled', 'succeeded', i * HOUR)),
      ...[6, 7, 8, 9, 10].map((i) => backup(i, 'pre-update', 'succeeded', i * HOUR)),
      backup(11, 'pre-purge', 'succeeded', 0),
    ];
    expect(
      retentionVictims(policy, list)
        .map((b) => b.id)
        .sort((a, b) => a - b),
    ).toEqual([1, 2, 6, 7]);
  });

  it('property: never removes an open backup, a pre-purge one or the newest good one, and keeps enough', () => {
    fc.assert(
      fc.property(arbitraryBackups, fc.integer({ min: 1, max: 5 }), (items, keep) => {
        const list = items.map((b, i) => backup(i + 1, b.reason, b.state, b.at));
        const victims = new Set(retentionVictims({ scheduleSeconds: 3600, keep }, list).map((b) => b.id));
        const newestGood = [...list]
          .filter((b) => b.state === 'succeeded')
          .sort((a, b) => b.requestedAt.getTime() - a.requestedAt.getTime() || b.id - a.id)[0];
        for (const b of list) {
          if (
            b.state === 'pending' ||
            b.state === 'running' ||
            (b.reason === 'pre-purge' && b.state === 'succeeded') ||
            b === newestGood
          )
            expect(victims.has(b.id)).toBe(false);
        }
        const keptGood = list.filter(
          (b) => b.state === 'succeeded' && (b.reason === 'scheduled' || b.reason === 'manual') && !victims.has(b.id),
        );
        const good = list.filter((b) => b.state === 'succeeded' && (b.reason === 'scheduled' || b.reason === 'manual'));
        expect(keptGood.length).toBeGreaterThanOrEqual(Math.min(keep, good.length));
        const keptUpdate = list.filter((b) => b.state === 'succeeded' && b.reason === 'pre-update' && !victims.has(b.id));
        expect(keptUpdate.length).toBeGreaterThanOrEqual(
          Math.min(PRE_UPDATE_KEPT, list.filter((b) => b.state === 'succeeded' && b.reason === 'pre-update').length),
        );
        // Idempotent: retention on what it keeps removes nothing more.
        const rest = list.filter((b) => !victims.has(b.id));
        expect(retentionVictims({ scheduleSeconds: 3600, keep }, rest)).toEqual([]);
      }),
      { numRuns: 300 },
    );
  });
});
