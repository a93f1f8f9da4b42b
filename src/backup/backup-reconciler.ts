import { mkdir, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { Customer } from '../domain/customer.js';
import type { Logger } from '../observability/logger.js';
import type { Metrics } from '../observability/metrics.js';
import type { CustomerRuntime } from '../runtime/runtime.js';
import type { BackupReason, BackupRecord, BackupRecords, RestoreRecord } from '../store/backup-records.js';
import type { CustomerStore } from '../store/customer-store.js';
import { ARCHIVE_SUFFIX, deferred } from './archive.js';
import { nextScheduledAt, policyFor, retentionVictims, type BackupPolicy } from './policy.js';
import type { CustomerStateSource } from './state-source.js';
import type { ArchiveStorage } from './storage.js';

/**
 * The backup controller: reconciles one customer's backups and restores, keyed by customer name
 * like the customer controller, on its own queue (an upload of a large archive never holds up a
 * customer's reconcile), leader-elected with it.
 *
 * Desired state is the records: a `pending` backup is taken; a restore row is driven through its
 * steps; the schedule asks for backups when due; retention removes old ones. Nothing is kept in
 * memory but which backups this process is running: a `running` row that no worker here runs
 * was left by a controller that died, and is taken again (its archive is written anew under the
 * same key, and only a complete one is ever recorded as good).
 */

export interface BackupReconcilerDeps {
  records: BackupRecords;
  store: Pick<CustomerStore, 'get' | 'recordEvent'>;
  storage: ArchiveStorage;
  state: CustomerStateSource;
  runtime: Pick<CustomerRuntime, 'listFor' | 'stop' | 'seesHostFile'>;
  /** The current key seals; all of them (current first, then rotated-out ones) open. */
  keys: { current: Buffer; all: readonly Buffer[] };
  /** A folder of the controller's own for archives being written. */
  workDir: string;
  policyOverrides?: { scheduleSeconds?: number | undefined; keep?: number | undefined };
  metrics: Metrics;
  logger: Logger;
  /** Tell the customer controller to look at this customer again (a restore's hold changed, a backup it waits for is done). */
  wakeCustomer: (name: string) => void;
  now?: () => number;
}

/** Attempts of one backup before it is failed (a schedule or a rollout then asks for a new one). */
export const MAX_ATTEMPTS = 3;
/** After a failed attempt (a store that is down): look again after this, while the breaker decides. */
const RETRY_AFTER_MS = 30_000;
/** How long a restore waits for the container to stop before saying so (it keeps waiting). */
const STOP_LOOK_MS = 1_000;
/** How long the restored assistant may take to be Ready before the restore is reported done anyway. */
const READY_WAIT_MS = 10 * 60_000;
const MAX_LOOK_MS = 3_600_000;
/**
 * A backup due while the customer's state cannot be read (a new customer's workspace not written
 * yet; on Kubernetes, a suspended customer's claim, which is not read) is looked at again this
 * late: the customer controller wakes this one when the assistant becomes Ready (BackupGate
 * stateReadable). Looking every second instead cost Postgres five reads per such customer per
 * second, and halved the webhooks `blytz serve` took beside 200 of them.
 */
const STATE_WAIT_LOOK_MS = 60_000;
/** A customer's backup records one pass reads (newest first): far more than retention keeps. */
const BACKUPS_READ = 500;
/** How often a rollback restore looks whether the rollout sends its customer back yet. */
const ROLLBACK_LOOK_MS = 5_000;

export type BackupOutcome = { requeueAfterMs?: number };

/** The context sealed into an archive: a restore checks the archive is the backup it was asked for. */
export function archiveContext(backup: Pick<BackupRecord, 'customer' | 'id'>): string {
  return `blytz backup customer=${backup.customer} id=${backup.id}`;
}

export function archiveKey(backup: Pick<BackupRecord, 'customer' | 'id'>): string {
  return `${backup.customer}/${backup.id}${ARCHIVE_SUFFIX}`;
}

/** `ghcr.io/openclaw/openclaw:2026.9.6` -> `2026.9.6`; an image without a tag as it is. */
export function versionOfImage(image: string | undefined): string | null {
  if (!image) return null;
  const at = image.lastIndexOf(':');
  return at > image.lastIndexOf('/') ? image.slice(at + 1) : image;
}

export class BackupReconciler {
  readonly #deps: BackupReconcilerDeps;
  readonly #now: () => number;
  /** Backups this process is taking right now (a `running` row not here was abandoned). */
  readonly #running = new Set<number>();
  /** Whether the work folder was cleared of what a killed process left in it. */
  #swept = false;

  constructor(deps: BackupReconcilerDeps) {
    this.#deps = deps;
    this.#now = deps.now ?? Date.now;
  }

  /** Every customer the store knows, plus any with open backup work (a deleted customer's restore). */
  async listKeys(live: () => Promise<string[]>): Promise<string[]> {
    const [names, open] = await Promise.all([live(), this.#deps.records.customersWithOpenWork()]);
    return [...new Set([...names, ...open])];
  }

  policyOf(customer: Pick<Customer, 'spec'>): BackupPolicy {
    return policyFor(customer.spec.plan, this.#deps.policyOverrides);
  }

  async reconcile(name: string, signal: AbortSignal): Promise<BackupOutcome> {
    const { records } = this.#deps;
    if (!this.#swept) {
      this.#swept = true;
      await this.#sweepWorkDir();
    }
    const customer = await this.#deps.store.get(name);
    // The customer's backups, read again only after this pass changed them: a pass that finds
    // nothing to do reads them once.
    let backups = await records.list(name, BACKUPS_READ);
    let changed = false;
    const current = async () => {
      if (changed) backups = await records.list(name, BACKUPS_READ);
      changed = false;
      return backups;
    };
    for (const abandoned of backups.filter((b) => b.state === 'running' && !this.#running.has(b.id))) {
      await records.requeueAbandoned(abandoned.id, MAX_ATTEMPTS, 'the controller stopped while taking it; taken again');
      changed = true;
    }

    // A restore goes step by step, each recorded before the next; straight on while they are quick.
    // Once the assistant is starting on the restored state the customer is no longer held, and
    // backups go on meanwhile (a rollout may wait for one before it restarts the customer).
    let restoreLook: number | undefined;
    for (let restore = await records.activeRestore(name); restore; restore = await records.activeRestore(name)) {
      if (signal.aborted) throw abortReason(signal);
      changed = true;
      const outcome = await this.#restore(restore, customer, signal);
      if (outcome.requeueAfterMs === 0) continue;
      if (restore.step !== 'starting') return outcome;
      restoreLook = outcome.requeueAfterMs;
      break;
    }

    // Due on schedule: asked for like any other backup, then taken below.
    const policy = customer ? this.policyOf(customer) : undefined;
    const live = customer && (customer.spec.state === 'active' || customer.spec.state === 'suspended');
    let waitingForState = false;
    if (policy && live) {
      const due = nextScheduledAt(policy, await current(), customer.createdAt.getTime());
      // Only a state that can be read now (on Kubernetes: through a running pod; a suspended
      // customer's claim is not read, its newest backup stays the last one).
      if (due !== undefined && due <= this.#now()) {
        if (await this.#deps.state.exists(name)) {
          await records.request(name, 'scheduled', undefined, this.#now());
          changed = true;
        } else {
          waitingForState = true;
        }
      }
    }

    let failedAttempt = false;
    for (const pending of (await current()).filter((b) => b.state === 'pending').reverse()) {
      if (signal.aborted) throw abortReason(signal);
      changed = true;
      const ok = await this.#take(pending, customer);
      if (!ok) {
        failedAttempt = true;
        break; // the store is likely down: the others wait for the retry
      }
    }

    if (policy) await this.#prune(policy, await current());
    this.#updateMetrics(name, customer, policy, await current());

    const look = (ms: number | undefined): BackupOutcome =>
      ms === undefined && restoreLook === undefined ? {} : { requeueAfterMs: Math.min(ms ?? Infinity, restoreLook ?? Infinity) };
    if (failedAttempt) return look(RETRY_AFTER_MS);
    if (!policy || !live) return look(undefined);
    if (waitingForState) return look(STATE_WAIT_LOOK_MS);
    const due = nextScheduledAt(policy, backups, customer.createdAt.getTime());
    if (due === undefined) return look(RETRY_AFTER_MS);
    return look(Math.min(Math.max(due - this.#now(), 1000), MAX_LOOK_MS));
  }

  /** Takes one pending backup; false when the attempt failed (it is retried or failed for good). */
  async #take(backup: BackupRecord, customer: Customer | undefined): Promise<boolean> {
    const { records, storage, state, metrics, logger } = this.#deps;
    if (!(await records.claim(backup.id, this.#now()))) return true; // another worker has it
    this.#running.add(backup.id);
    const started = this.#now();
    const file = join(this.#deps.workDir, `upload-${backup.id}-${process.pid}${ARCHIVE_SUFFIX}`);
    try {
      if (!(await state.exists(backup.customer))) {
        await records.fail(backup.id, 'the customer has no state folder to back up', 0, this.#now());
        return true;
      }
      const containers = await this.#deps.runtime.listFor(backup.customer).catch(() => []);
      const image = containers.find((c) => c.state === 'running')?.image ?? containers[0]?.image;
      const openclawVersion = versionOfImage(image);
      await mkdir(this.#deps.workDir, { recursive: true, mode: 0o700 });
      const written = await state.archive(backup.customer, {
        key: this.#deps.keys.current,
        context: archiveContext(backup),
        outFile: file,
        meta: {
          customer: backup.customer,
          backup: String(backup.id),
          reason: backup.reason,
          ...(customer ? { plan: customer.spec.plan, template: customer.spec.template } : {}),
          ...(image ? { image } : {}),
        },
      });
      const key = archiveKey(backup);
      await storage.put(key, file, written.sizeBytes);
      const durationMs = this.#now() - started;
      const recorded = await records.succeed(backup.id, {
        storage: storage.description,
        location: key,
        sizeBytes: written.sizeBytes,
        sha256: written.sha256,
        openclawVersion,
        runtime: state.runtime,
        files: written.manifest.files,
        durationMs,
        now: this.#now(),
      });
      metrics.backupDuration.observe({ operation: 'backup', outcome: 'success' }, durationMs / 1000);
      metrics.backupBytes.observe(written.sizeBytes);
      if (recorded) {
        await this.#event(
          backup.customer,
          'Normal',
          'BackedUp',
          `backup ${backup.id} (${backup.reason}) stored: ${formatBytes(written.sizeBytes)} in ${storage.description}`,
        );
        logger.info(
          { customer: backup.customer, backup: backup.id, reason: backup.reason, bytes: written.sizeBytes, ms: durationMs },
          'backup stored',
        );
        // Files that turned into links (or vanished) while they were read: left out, never followed.
        if (written.skipped.length > 0)
          logger.warn(
            {
              customer: backup.customer,
              backup: backup.id,
              skipped: written.skipped.slice(0, 20),
              count: written.skipped.length,
            },
            'backup left out files that changed while it read them',
          );
      }
      this.#deps.wakeCustomer(backup.customer);
      return true;
    } catch (error) {
      const message = (error as Error).message ?? String(error);
      const after = await records.fail(backup.id, message, MAX_ATTEMPTS, this.#now());
      metrics.backupDuration.observe({ operation: 'backup', outcome: 'failure' }, (this.#now() - started) / 1000);
      logger.warn({ customer: backup.customer, backup: backup.id, err: error, state: after }, 'backup attempt failed');
      await this.#event(
        backup.customer,
        'Warning',
        'BackupFailed',
        `backup ${backup.id} (${backup.reason}) ${after === 'failed' ? 'failed' : 'attempt failed, retrying'}: ${message}`,
      );
      // A customer waiting for this backup hears of it once it failed for good (its status says
      // why it waits meanwhile); not on every attempt, which would only wake the backup again.
      if (after === 'failed') this.#deps.wakeCustomer(backup.customer);
      return false;
    } finally {
      this.#running.delete(backup.id);
      await rm(file, { force: true });
    }
  }

  /**
   * Archives and snapshot copies a killed process was writing (`upload-*`, `staging-*` of other
   * processes). Restore folders are left alone: their restore's steps own them.
   */
  async #sweepWorkDir(): Promise<void> {
    const names = await readdir(this.#deps.workDir).catch(() => [] as string[]);
    const mine = (entry: string) =>
      entry.startsWith(`staging-${process.pid}-`) || entry.endsWith(`-${process.pid}${ARCHIVE_SUFFIX}`);
    for (const entry of names) {
      if ((entry.startsWith('upload-') || entry.startsWith('staging-')) && !mine(entry))
        await rm(join(this.#deps.workDir, entry), { recursive: true, force: true });
    }
  }

  async #prune(policy: BackupPolicy, backups: BackupRecord[]): Promise<void> {
    for (const victim of retentionVictims(policy, backups)) {
      try {
        if (victim.location) await this.#deps.storage.delete(victim.location);
        await this.#deps.records.remove(victim.id);
      } catch (error) {
        this.#deps.logger.warn(
          { customer: victim.customer, backup: victim.id, err: error },
          'could not remove an expired backup',
        );
        return; // the store is likely down: the next pass tries again
      }
    }
  }

  #updateMetrics(name: string, customer: Customer | undefined, policy: BackupPolicy | undefined, backups: BackupRecord[]): void {
    const { metrics } = this.#deps;
    const newest = backups.find((b) => b.state === 'succeeded' && b.finishedAt);
    const live = customer && (customer.spec.state === 'active' || customer.spec.state === 'suspended');
    if (!live || !policy) {
      metrics.backupLastSuccess.remove({ customer: name });
      metrics.backupScheduleSeconds.remove({ customer: name });
      return;
    }
    metrics.backupScheduleSeconds.set({ customer: name }, policy.scheduleSeconds);
    if (newest?.finishedAt) metrics.backupLastSuccess.set({ customer: name }, newest.finishedAt.getTime() / 1000);
  }

  /**
   * Drives a restore one step further; each step is recorded before the next, so a crash
   * resumes at the step it was in. While a restore is before `starting` the customer controller
   * holds the customer (container stopped, the suspended page served).
   */
  async #restore(restore: RestoreRecord, customer: Customer | undefined, signal: AbortSignal): Promise<BackupOutcome> {
    const { records, state, storage, runtime } = this.#deps;
    const name = restore.customer;
    const started = restore.startedAt?.getTime() ?? this.#now();
    const fail = async (message: string): Promise<BackupOutcome> => {
      await state.discard(restore.id, name).catch(() => {});
      await records.advanceRestore(restore.id, restore.step, 'failed', message, this.#now());
      this.#deps.metrics.backupDuration.observe({ operation: 'restore', outcome: 'failure' }, (this.#now() - started) / 1000);
      await this.#event(
        name,
        'Warning',
        'RestoreFailed',
        `restore ${restore.id} from backup ${restore.backupId} failed: ${message}; the state was left as it was`,
      );
      this.#deps.wakeCustomer(name);
      return {};
    };
    const backup = await records.get(restore.backupId);
    switch (restore.step) {
      case 'pending': {
        if (!backup || backup.state !== 'succeeded' || !backup.location)
          return fail(`backup ${restore.backupId} is not a good backup`);
        if (!customer) return fail(`customer ${name} does not exist; create it first (blytz apply), then restore into it`);
        if (!state.restorable) return fail(`restoring into a customer on ${state.runtime} is not supported yet`);
        // The state from before an update goes back together with the image: once the rollout
        // sends the customer back (undo, or a failed update), not while the new version runs.
        if (restore.reason === 'rollback' && customer.spec.state === 'active' && (await records.waitingToGoBack(name))) {
          if (!restore.message) await records.noteRestore(restore.id, 'waiting for the rollout to send the customer back');
          return { requeueAfterMs: ROLLBACK_LOOK_MS };
        }
        await records.advanceRestore(restore.id, 'pending', 'stopping', 'stopping the assistant', this.#now());
        await this.#event(
          name,
          'Normal',
          'Restoring',
          `restoring backup ${backup.id} (${backup.customer}, ${backup.finishedAt?.toISOString() ?? ''}): stopping the assistant`,
        );
        this.#deps.wakeCustomer(name);
        return { requeueAfterMs: 0 };
      }
      case 'stopping': {
        // The customer controller stops it (the restore holds the customer); stopping here too
        // makes it quicker and does not depend on the other queue.
        const running = (await runtime.listFor(name)).filter(
          (c) => c.state === 'running' || c.state === 'restarting' || c.state === 'paused',
        );
        for (const container of running) await runtime.stop(container.id);
        const still = (await runtime.listFor(name)).some((c) => c.state === 'running' || c.state === 'restarting');
        if (still) {
          this.#deps.wakeCustomer(name);
          return { requeueAfterMs: STOP_LOOK_MS };
        }
        await records.advanceRestore(restore.id, 'stopping', 'fetching', 'fetching and checking the archive', this.#now());
        return { requeueAfterMs: 0 };
      }
      case 'fetching': {
        if (!backup?.location) return fail(`backup ${restore.backupId} has no archive`);
        try {
          await state.stage(restore.id, name, deferred(storage.get(backup.location)), {
            keys: this.#deps.keys.all,
            expectContext: archiveContext(backup),
            sha256: backup.sha256 ?? undefined,
          });
        } catch (error) {
          const message = (error as Error).message ?? String(error);
          if (isRetryable(error)) {
            await records.noteRestore(restore.id, `fetching: ${message}; retrying`);
            return { requeueAfterMs: RETRY_AFTER_MS };
          }
          return fail(message);
        }
        if (signal.aborted) throw abortReason(signal);
        await records.advanceRestore(restore.id, 'fetching', 'swapping', 'replacing the state', this.#now());
        return { requeueAfterMs: 0 };
      }
      case 'swapping': {
        // A reconcile that began before the hold may have started a container meanwhile (it
        // would keep the old folder mounted across the swap): stop it first.
        const runningNow = (await runtime.listFor(name)).filter((c) => c.state === 'running' || c.state === 'restarting');
        if (runningNow.length > 0) {
          for (const container of runningNow) await runtime.stop(container.id);
          this.#deps.wakeCustomer(name);
          return { requeueAfterMs: STOP_LOOK_MS };
        }
        await state.swap(restore.id, name);
        // The same reconcile may have started one between that look and the swap: a container
        // keeps the folder it was started on mounted, the old one now moved aside, and would serve
        // it (the files gone) until restarted. The customer is still held, so whatever runs now
        // is stopped; the customer controller starts it again on the restored folder.
        for (const late of (await runtime.listFor(name)).filter((c) => c.state === 'running' || c.state === 'restarting')) {
          await runtime.stop(late.id);
        }
        await records.advanceRestore(
          restore.id,
          'swapping',
          'starting',
          'starting the assistant on the restored state',
          this.#now(),
        );
        await state.discard(restore.id, name).catch(() => {});
        this.#deps.wakeCustomer(name);
        return { requeueAfterMs: 0 };
      }
      case 'starting': {
        // The hold is gone: the customer controller renders its files into the restored folder and
        // starts the assistant. Done once it is Ready (or at once for a customer that is not active).
        // Every container was stopped before the swap and held stopped until now, so one running
        // and healthy was started on the restored state.
        // A start in flight across the swap mounted the folder it replaced (moved aside, then
        // deleted): that assistant would serve, and write into, a folder nobody keeps. It does not
        // see the mark the restore left in the restored folder; stopped, the customer controller
        // starts it again on the restored one.
        const mark = state.restoredMark?.(restore.id, name);
        const running = (await runtime.listFor(name)).filter((c) => c.state === 'running');
        if (mark && runtime.seesHostFile) {
          const stale = [];
          for (const c of running) if (!(await runtime.seesHostFile(c.id, mark))) stale.push(c);
          if (stale.length > 0) {
            for (const c of stale) await runtime.stop(c.id);
            await records.noteRestore(restore.id, 'starting: a container started on the replaced state; restarting it');
            this.#deps.wakeCustomer(name);
            return { requeueAfterMs: STOP_LOOK_MS };
          }
        }
        const serving = running.some((c) => c.health === 'healthy');
        const ready = !customer || customer.spec.state !== 'active' || (serving && customer.status.phase === 'Ready');
        const waited = this.#now() - (restore.startedAt?.getTime() ?? this.#now());
        if (!ready && waited < READY_WAIT_MS) {
          this.#deps.wakeCustomer(name);
          return { requeueAfterMs: 1000 };
        }
        const message = ready ? 'restored' : `restored; the assistant is not Ready yet (${customer?.status.phase ?? 'unknown'})`;
        await records.advanceRestore(restore.id, 'starting', 'succeeded', message, this.#now());
        await state.forgetRestoredMark?.(restore.id, name).catch(() => {});
        this.#deps.metrics.backupDuration.observe({ operation: 'restore', outcome: 'success' }, (this.#now() - started) / 1000);
        await this.#event(name, 'Normal', 'Restored', `restore ${restore.id} from backup ${restore.backupId} done: ${message}`);
        return {};
      }
      default:
        return {};
    }
  }

  async #event(name: string, type: 'Normal' | 'Warning', reason: string, message: string): Promise<void> {
    await this.#deps.store.recordEvent(name, { type, reason, message }).catch(() => {});
  }

  /** Asks for a backup (the admin API, a rollout, the purge); idempotent with a ref. */
  request(customer: string, reason: BackupReason, ref?: string): Promise<BackupRecord> {
    return this.#deps.records.request(customer, reason, ref, this.#now());
  }
}

/** A restore's fetch that may work next time: the store is down, not the archive bad. */
function isRetryable(error: unknown): boolean {
  const name = (error as { name?: string }).name;
  return name === 'DependencyError' || name === 'CircuitOpenError';
}

function formatBytes(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KiB`;
  if (bytes < 1024 ** 3) return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
  return `${(bytes / 1024 ** 3).toFixed(2)} GiB`;
}

function abortReason(signal: AbortSignal): Error {
  return signal.reason instanceof Error ? signal.reason : new Error('reconcile aborted');
}
