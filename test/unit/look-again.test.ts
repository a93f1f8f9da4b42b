import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { Customer, CustomerStatus } from '../../src/domain/customer.js';
import { LOOK, lookAgain, type LookAgainInput } from '../../src/controller/customer/look-again.js';

/** When a reconcile looks at its customer again: each rule by example, and its bounds as a property. */

const NOW = Date.parse('2026-12-06T12:00:00Z');
const DAY = 86_400_000;

function input(overrides: {
  state?: Customer['spec']['state'];
  phase?: CustomerStatus['phase'];
  cancelledAt?: Date | null;
  run?: LookAgainInput['run'];
  admission?: LookAgainInput['admission'];
  containers?: number;
  workspace?: boolean;
  purged?: boolean;
}): LookAgainInput {
  const customer = {
    spec: { state: overrides.state ?? 'active' },
    cancelledAt: overrides.cancelledAt ?? null,
  } as unknown as Customer;
  return {
    customer,
    status: { phase: overrides.phase ?? 'Ready' } as CustomerStatus,
    run: overrides.run ?? {},
    admission: overrides.admission,
    after: {
      containers: Array.from({ length: overrides.containers ?? 0 }, () => ({}) as never),
      workspace: { exists: overrides.workspace ?? true, contentHash: undefined } as never,
    },
    purged: overrides.purged ?? false,
    retentionMs: 30 * DAY,
    now: NOW,
  };
}

describe('lookAgain', () => {
  it('a Ready active customer needs no timed look: events wake it', () => {
    expect(lookAgain(input({}))).toEqual({});
  });

  it('a retry time of its own wins (no host port was free)', () => {
    expect(lookAgain(input({ phase: 'Provisioning', run: { retryAfterMs: LOOK.portsExhaustedMs } }))).toEqual({
      requeueAfterMs: LOOK.portsExhaustedMs,
    });
  });

  it('an active customer not Ready yet is looked at again soon; a held restart waits, capped', () => {
    expect(lookAgain(input({ phase: 'Provisioning' }))).toEqual({ requeueAfterMs: LOOK.waitForHealthMs });
    expect(lookAgain(input({ phase: 'Degraded', run: { restartHeldUntil: NOW + 4_000 } }))).toEqual({ requeueAfterMs: 4_000 });
    expect(lookAgain(input({ phase: 'Degraded', run: { restartHeldUntil: NOW + 600_000 } }))).toEqual({
      requeueAfterMs: LOOK.heldRestartMs,
    });
  });

  it('held back by a rollout: every few seconds, less often while it is paused or undone', () => {
    expect(lookAgain(input({ admission: { recreateAllowed: false } }))).toEqual({ requeueAfterMs: LOOK.rolloutWaitMs });
    const paused = { recreateAllowed: false, rollout: { state: 'paused' } } as LookAgainInput['admission'];
    expect(lookAgain(input({ admission: paused }))).toEqual({ requeueAfterMs: LOOK.rolloutPausedMs });
  });

  it('a cancelled customer: teardown first, then the purge when it falls due, capped at an hour', () => {
    const cancelled = (extra: Parameters<typeof input>[0]) => input({ state: 'cancelled', cancelledAt: new Date(NOW - DAY), ...extra });
    expect(lookAgain(cancelled({ containers: 1 }))).toEqual({ requeueAfterMs: LOOK.teardownMs });
    expect(lookAgain(cancelled({}))).toEqual({ requeueAfterMs: LOOK.maxPurgeWaitMs });
    const dueSoon = input({ state: 'cancelled', cancelledAt: new Date(NOW - 30 * DAY + 60_000) });
    expect(lookAgain(dueSoon)).toEqual({ requeueAfterMs: 60_000 });
    const due = input({ state: 'cancelled', cancelledAt: new Date(NOW - 31 * DAY) });
    expect(lookAgain(due)).toEqual({ requeueAfterMs: LOOK.teardownMs });
    expect(lookAgain({ ...due, purged: true })).toEqual({});
    expect(lookAgain(cancelled({ run: { waitNote: 'waiting for the last backup' } }))).toEqual({
      requeueAfterMs: LOOK.rolloutPausedMs,
    });
  });

  it('never asks for a look sooner than now or later than the purge cap (property)', () => {
    fc.assert(
      fc.property(
        fc.constantFrom('active', 'suspended', 'cancelled', 'pending'),
        fc.constantFrom('Ready', 'Provisioning', 'Degraded', 'Suspended'),
        fc.option(fc.integer({ min: -60 * DAY, max: 60 * DAY }), { nil: undefined }),
        fc.option(fc.integer({ min: -DAY, max: DAY }), { nil: undefined }),
        fc.boolean(),
        fc.nat(3),
        (state, phase, cancelledOffset, heldOffset, workspace, containers) => {
          const result = lookAgain(
            input({
              state: state as Customer['spec']['state'],
              phase: phase as CustomerStatus['phase'],
              cancelledAt: cancelledOffset === undefined ? null : new Date(NOW + cancelledOffset),
              run: heldOffset === undefined ? {} : { restartHeldUntil: NOW + heldOffset },
              workspace,
              containers,
            }),
          );
          if (result.requeueAfterMs !== undefined) {
            expect(result.requeueAfterMs).toBeGreaterThan(0);
            expect(result.requeueAfterMs).toBeLessThanOrEqual(LOOK.maxPurgeWaitMs);
          }
        },
      ),
    );
  });
});
