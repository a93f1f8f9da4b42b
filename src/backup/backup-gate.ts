import type { BackupRecords } from '../store/backup-records.js';

/**
 * What the customer controller asks of backups before it does something that cannot be undone
 * without one, and what holds a customer while a restore replaces its state. Each answer is
 * `undefined` (go ahead) or why it must wait; asking is idempotent, so the customer controller
 * simply asks on every pass until the answer is go.
 */
export interface BackupGate {
  /** A restore is replacing the customer's state: keep its assistant stopped. */
  holdOf(customer: string): Promise<string | undefined>;
  /** Before a fleet rollout recreates the customer's container (from one spec hash to another). */
  beforeUpdate(customer: string, fromHash: string, toHash: string): Promise<string | undefined>;
  /** Before the retention purge deletes a cancelled customer's folder. */
  beforePurge(customer: string): Promise<string | undefined>;
  /** An update from `fromHash` to `toHash` failed or was undone: put back the state from before it. */
  restoreBeforeUpdate(customer: string, fromHash: string, toHash: string): Promise<boolean>;
  /**
   * The customer's assistant just became Ready: its state can be read now. A backup due while it
   * could not be (a new customer's first) is taken without waiting for the backup controller's
   * next look at it, which is a minute away.
   */
  stateReadable(customer: string): void;
}

export interface RecordsGateDeps {
  records: BackupRecords;
  /** Wakes the backup controller for this customer (a backup was asked for). */
  wakeBackups: (customer: string) => void;
  /** Why backups cannot be taken now, when the store's breaker says so (for the wait message). */
  storeProblem?: () => string | undefined;
  now?: () => number;
  /**
   * Whether the purge waits for a last backup. Only where the state can be read with the
   * assistant gone (Docker: a folder on this host); on Kubernetes the claim is read through the
   * pod, which a cancelled customer no longer has, so its newest scheduled backup is the last copy.
   */
  backupBeforePurge?: boolean;
}

/** A backup a rollout or the purge waits for, failed for good, is asked for again after this. */
const FAILED_REST_MS = 30_000;

const HOLDING_STEPS = new Set(['pending', 'stopping', 'fetching', 'swapping']);

export function updateRef(fromHash: string, toHash: string): string {
  return `${fromHash}>${toHash}`;
}

/** The gate on the backup records (the backup controller does the work). */
export class RecordsBackupGate implements BackupGate {
  readonly #deps: RecordsGateDeps;

  constructor(deps: RecordsGateDeps) {
    this.#deps = deps;
  }

  async holdOf(customer: string): Promise<string | undefined> {
    const restore = await this.#deps.records.activeRestore(customer);
    if (!restore || !HOLDING_STEPS.has(restore.step)) return undefined;
    // A rollback restore waits unheld for the rollout to send the customer back (a held customer
    // is not active, so it would never get the rollout's slot).
    if (restore.reason === 'rollback' && restore.step === 'pending') return undefined;
    return `restoring backup ${restore.backupId} (restore ${restore.id}, step ${restore.step}): the assistant stays stopped until its state is replaced`;
  }

  async beforeUpdate(customer: string, fromHash: string, toHash: string): Promise<string | undefined> {
    // Going back (a failed update rolled back, an undo) to the spec whose state was backed up
    // before it left: that backup is the state to return to, and the way back waits for nothing.
    const reverse = await this.#deps.records.findByRef(customer, 'pre-update', updateRef(toHash, fromHash));
    if (reverse?.state === 'succeeded') return undefined;
    return this.#ensure(
      customer,
      'pre-update',
      updateRef(fromHash, toHash),
      'the fleet rollout waits for a backup of the current state',
    );
  }

  async beforePurge(customer: string): Promise<string | undefined> {
    if (this.#deps.backupBeforePurge === false) return undefined;
    return this.#ensure(customer, 'pre-purge', 'purge', 'the purge waits for a last backup of the workspace');
  }

  async restoreBeforeUpdate(customer: string, fromHash: string, toHash: string): Promise<boolean> {
    const backup = await this.#deps.records.findByRef(customer, 'pre-update', updateRef(fromHash, toHash));
    if (backup?.state !== 'succeeded') return false;
    const active = await this.#deps.records.activeRestore(customer);
    if (active) return active.backupId === backup.id;
    await this.#deps.records.requestRestore(backup.id, customer, 'rollback');
    this.#deps.wakeBackups(customer);
    return true;
  }

  stateReadable(customer: string): void {
    this.#deps.wakeBackups(customer);
  }

  async #ensure(customer: string, reason: 'pre-update' | 'pre-purge', ref: string, what: string): Promise<string | undefined> {
    const now = (this.#deps.now ?? Date.now)();
    let backup = await this.#deps.records.findByRef(customer, reason, ref);
    if (backup?.state === 'succeeded') return undefined;
    // Asked for (again, once one that failed for good has rested): the backup controller takes it.
    const rested = backup?.state === 'failed' && now - (backup.finishedAt?.getTime() ?? 0) >= FAILED_REST_MS;
    if (!backup || rested) {
      backup = await this.#deps.records.request(customer, reason, ref, now);
      this.#deps.wakeBackups(customer);
    }
    const problem = this.#deps.storeProblem?.();
    const last = backup.message ? `; last attempt: ${backup.message}` : '';
    return `${what} (backup ${backup.id}, ${backup.state}${problem ? `; ${problem}` : ''}${last})`;
  }
}
