import type { Customer, CustomerStatus } from '../../domain/customer.js';
import type { ReconcileResult } from '../controller.js';
import type { Admission } from '../rollout/rollouts.js';
import type { ExecuteOutcome } from './execute.js';
import type { Observed } from './plan.js';

/**
 * When a reconcile looks at its customer again without an event. Events (the change feed, the
 * engine's stream, the route sweep) wake a customer at once; these intervals are for what no
 * event announces: a container becoming healthy, a back-off running out, a purge falling due.
 */
export const LOOK = {
  /** An active customer not Ready yet: its container's health is looked at again this soon. */
  waitForHealthMs: 1000,
  /** A cancelled customer whose containers are still being removed (in the background). */
  teardownMs: 1000,
  /** A customer whose pooled gateway is taking its configuration. */
  bindMs: 500,
  /** At most this long between looks at an unhealthy container waiting out its restart back-off. */
  heldRestartMs: 10_000,
  /** No host port was free: another may be soon (not a failure to back off from). */
  portsExhaustedMs: 30_000,
  /** The longest wait for a purge that is due later: a changed retention is seen within it. */
  maxPurgeWaitMs: 3_600_000,
  /** A customer held back by a rollout (a freed slot wakes it sooner), or waiting for a backup. */
  rolloutWaitMs: 5_000,
  /** A customer held by a paused or undone rollout, or a purge waiting for its last backup. */
  rolloutPausedMs: 15_000,
} as const;

export interface LookAgainInput {
  customer: Customer;
  status: CustomerStatus;
  run: Pick<ExecuteOutcome, 'waitNote' | 'restartHeldUntil'> & { retryAfterMs?: number | undefined };
  admission: Pick<Admission, 'recreateAllowed' | 'rollout'> | undefined;
  after: Pick<Observed, 'containers' | 'workspace'>;
  /** This pass deleted the customer (its purge): nothing left to look at. */
  purged: boolean;
  retentionMs: number;
  now: number;
}

/** When to look at the customer again, once nothing failed (or a failure has its own retry time). Pure. */
export function lookAgain(input: LookAgainInput): ReconcileResult {
  const { customer, status, run, admission, after, now } = input;
  if (run.retryAfterMs !== undefined) return { requeueAfterMs: run.retryAfterMs };
  if (customer.spec.state === 'active' && status.phase !== 'Ready') {
    // Held by its restart back-off: look less often (a recovery is still seen within seconds).
    const held = run.restartHeldUntil === undefined ? 0 : Math.min(run.restartHeldUntil - now, LOOK.heldRestartMs);
    return { requeueAfterMs: Math.max(held, LOOK.waitForHealthMs) };
  }
  if (admission && !admission.recreateAllowed) {
    const stopped = admission.rollout?.state === 'paused' || admission.rollout?.undone;
    return { requeueAfterMs: stopped ? LOOK.rolloutPausedMs : LOOK.rolloutWaitMs };
  }
  // The purge waits for its last backup; the backup's end wakes it, this is the safety net.
  if (customer.spec.state === 'cancelled' && run.waitNote && after.workspace.exists) return { requeueAfterMs: LOOK.rolloutPausedMs };
  if (customer.spec.state === 'cancelled' && customer.cancelledAt) {
    // Still tearing down (a Kubernetes Deployment waits for its pods): the purge comes after.
    if (after.containers.length > 0) return { requeueAfterMs: LOOK.teardownMs };
    const purgeIn = customer.cancelledAt.getTime() + input.retentionMs - now;
    if (purgeIn > 0 && after.workspace.exists) return { requeueAfterMs: Math.min(purgeIn, LOOK.maxPurgeWaitMs) };
    // Due, and this pass removed containers first (in the background): the purge is the next pass's.
    if (purgeIn <= 0 && !input.purged) return { requeueAfterMs: LOOK.teardownMs };
  }
  return {};
}
