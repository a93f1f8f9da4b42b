import type { BackupGate } from '../../backup/backup-gate.js';
import type { Customer, CustomerStatus } from '../../domain/customer.js';
import type { Logger } from '../../observability/logger.js';
import type { CustomerRuntime } from '../../runtime/runtime.js';
import type { ReconcileView } from '../../store/store.js';
import type { Admission, Rollouts } from '../rollout/rollouts.js';
import type { ResolvedCustomer } from './desired.js';
import { fleetChangeOf, type Observed } from './plan.js';

export interface FleetUpdatesDeps {
  runtime: Pick<CustomerRuntime, 'sideBySide' | 'updatesInPlace'>;
  logger: Logger;
  now: () => number;
  /** Without rollouts a fleet-wide change applies at once: every hook here lets it through. */
  rollouts?: Rollouts | undefined;
  /** A rollout slot was freed: wake the customers waiting for one. */
  onRolloutProgress?: (() => void) | undefined;
  /** A fleet update waits for a backup first; a failed one gets the state from before it back. */
  backups?: Pick<BackupGate, 'beforeUpdate' | 'restoreBeforeUpdate'> | undefined;
}

/** What a fleet update lets this reconcile do, decided after observing and before planning. */
export interface UpdateGate {
  /** Why a fleet update waits for a backup of the customer's state, if it does. */
  backupWait: string | undefined;
  /** What the customer's rollout allows (undefined: no fleet change, or no rollouts). */
  admission: Admission | undefined;
}

/**
 * A customer's part in fleet-wide updates (a new image, new plan limits), around one reconcile:
 * before planning, the update waits for a backup of the customer's state and then for its
 * rollout's slot (`gate`); after the status, the rollout hears whether the customer serves on
 * the new spec, and a failed update gets the state from before it back (`report`). The rules of
 * rollouts themselves are in ../rollout/; this is where a customer's reconcile meets them.
 */
export class FleetUpdates {
  readonly #deps: FleetUpdatesDeps;

  constructor(deps: FleetUpdatesDeps) {
    this.#deps = deps;
  }

  /**
   * Before planning: the rollout touches no customer before its state is backed up (the wait
   * says why); then it admits the customer or holds it back. Not active (any more) while a
   * rollout was updating it: its slot goes, so its start timeout does not run on.
   */
  async gate(
    name: string,
    view: ReconcileView | undefined,
    resolved: ResolvedCustomer | undefined,
    observed: Observed,
  ): Promise<UpdateGate> {
    const backupWait = view && resolved ? await this.#backupBeforeUpdate(view, resolved, observed) : undefined;
    const admission = view && resolved && !backupWait ? await this.#admit(view, resolved, observed) : undefined;
    await this.#releaseIfInactive(name, view?.customer);
    return { backupWait, admission };
  }

  /**
   * After the status: the rollout hears whether the customer serves on the new spec. A failed
   * update goes back to the previous image at once, and to the state from before it (the new
   * version may have migrated it into a shape the old one cannot read), unless the old container
   * served throughout (blue-green): then the live state is the truth, and a restore would stop a
   * serving assistant and lose what it wrote during the update.
   */
  async report(input: {
    name: string;
    admission: Admission;
    resolved: ResolvedCustomer;
    after: Observed;
    status: CustomerStatus;
    heldBack: boolean;
  }): Promise<{ failed: boolean } | undefined> {
    const { rollouts } = this.#deps;
    const { name, admission, resolved, after, status } = input;
    if (!rollouts || !admission.entry || !resolved.fleet) return undefined;
    const target = after.containers.find((c) => c.hostPort === after.port && c.specHash === resolved.desired.specHash);
    const progress = await rollouts.report(admission, {
      customer: name,
      current: status.phase === 'Ready' && !input.heldBack,
      now: this.#deps.now(),
      templateStartTimeoutSeconds: resolved.fleet.startTimeoutSeconds,
      healthMessage: target?.healthMessage,
    });
    if (progress.freed) this.#deps.onRolloutProgress?.();
    if (progress.failed && !this.#keptServing(resolved)) await this.#restoreBeforeUpdate(name, admission);
    return progress;
  }

  /** An active customer with a fleet-wide change joins its rollout and may be held back (rollouts.ts). */
  async #admit(view: ReconcileView, resolved: ResolvedCustomer, observed: Observed): Promise<Admission | undefined> {
    const { rollouts } = this.#deps;
    const { customer } = view;
    const { fleet } = resolved;
    if (!rollouts || !fleet || !isUpdatable(customer)) return undefined;
    const change = fleetChangeOf(resolved.desired, observed);
    return rollouts.admit({
      customer: customer.name,
      key: fleet.key,
      fingerprint: fleet.fingerprint,
      image: fleet.image,
      toHash: resolved.desired.specHash,
      change: change ? { fromHash: change.specHash as string, image: change.image } : undefined,
      now: this.#deps.now(),
    });
  }

  /** A fleet-wide change about to recreate the customer's container waits for a backup of its state. */
  async #backupBeforeUpdate(view: ReconcileView, resolved: ResolvedCustomer, observed: Observed): Promise<string | undefined> {
    const { rollouts, backups } = this.#deps;
    const { customer } = view;
    if (!rollouts || !backups || !resolved.fleet || !isUpdatable(customer)) return undefined;
    const change = fleetChangeOf(resolved.desired, observed);
    if (!change?.specHash) return undefined;
    return backups.beforeUpdate(customer.name, change.specHash, resolved.desired.specHash);
  }

  /** Whether an update leaves the old container serving until the new one is healthy. */
  #keptServing(resolved: ResolvedCustomer): boolean {
    const { runtime } = this.#deps;
    return resolved.desired.updateStrategy === 'blueGreen' && (runtime.sideBySide === true || runtime.updatesInPlace === true);
  }

  /** A failed update: the state from before it comes back (a rollback restore of its pre-update backup). */
  async #restoreBeforeUpdate(name: string, admission: Admission): Promise<void> {
    const entry = admission.entry;
    if (!entry?.fromHash || !this.#deps.backups) return;
    await this.#deps.backups
      .restoreBeforeUpdate(name, entry.fromHash, entry.toHash)
      .catch((error: unknown) =>
        this.#deps.logger.warn({ customer: name, err: error }, 'could not ask for the pre-update state back'),
      );
  }

  /** Gone, or not active (any more), while a rollout was updating it. */
  async #releaseIfInactive(name: string, customer: Customer | undefined): Promise<void> {
    const { rollouts } = this.#deps;
    if (!rollouts || (customer && isUpdatable(customer))) return;
    if (await rollouts.release(name)) this.#deps.onRolloutProgress?.();
  }
}

/** Only an active customer the controller does not leave alone takes part in a fleet update. */
function isUpdatable(customer: Customer): boolean {
  return customer.spec.state === 'active' && !customer.spec.paused;
}
