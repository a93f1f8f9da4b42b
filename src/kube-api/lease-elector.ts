import { CoordinationV1Api, V1MicroTime, type KubeConfig, type V1Lease } from '@kubernetes/client-node';
import type { Leadership } from '../controller/leadership.js';
import type { Logger } from '../observability/logger.js';
import type { Metrics } from '../observability/metrics.js';
import { isConflict, isNotFound, withSignal } from './client.js';

/**
 * Leader election on a coordination.k8s.io/v1 Lease, as client-go's leaderelection does it, for
 * replicas running in Kubernetes without Postgres-side election.
 *
 * - Every retryPeriod a candidate reads the Lease. It takes it when it is free (no holder) or
 *   expired: the record has not changed for leaseDuration *by the candidate's own clock* (the
 *   time it last saw the record change, never the holder's timestamps, so clock skew between
 *   nodes does not matter). Writes are replaces at the read resourceVersion: of two candidates
 *   only one wins, the other gets 409.
 * - The leader renews every retryPeriod. When no renewal succeeded within renewDeadline it stops
 *   leading at once (listeners hear it synchronously), before the lease can expire and a standby
 *   take over: renewDeadline < leaseDuration is the fencing margin. That deadline is kept by a
 *   timer, not by the next call's answer, and every call is aborted when its round's time is up:
 *   a wedged connection to the API server cannot keep a replica leading.
 * - stop() releases the Lease (empty holder, 1 s duration), so a standby takes over within its
 *   retryPeriod instead of waiting out leaseDuration.
 *
 * Defaults are client-go's: 15 s lease, 10 s renew deadline, 2 s retry.
 */

export interface LeaseElectorOptions {
  kubeConfig: KubeConfig;
  namespace: string;
  /** Lease name, also the `name` label of leader_election_master_status. */
  name: string;
  /** This replica's identity (the pod name is the usual choice). */
  identity: string;
  logger: Pick<Logger, 'info' | 'warn' | 'error'>;
  metrics?: Pick<Metrics, 'leaderStatus'> | undefined;
  leaseDurationMs?: number;
  renewDeadlineMs?: number;
  retryPeriodMs?: number;
  /**
   * The clock the lease's expiry and the renew deadline are judged by (default `Date.now`).
   * Tests move one by hand, so who steps down and who takes over is decided by the test, not by
   * how busy the machine is; the timers only decide when the elector looks again.
   */
  now?: () => number;
}

export class LeaseElector implements Leadership {
  readonly name: string;
  readonly identity: string;
  readonly #options: LeaseElectorOptions;
  readonly #api: CoordinationV1Api;
  readonly #leaseDurationMs: number;
  readonly #renewDeadlineMs: number;
  readonly #retryPeriodMs: number;
  readonly #now: () => number;
  readonly #listeners = new Set<(leading: boolean) => void>();
  #running = false;
  #leading = false;
  #timer: NodeJS.Timeout | undefined;
  #cycle: Promise<void> | undefined;
  /** The last record seen (holder + renewTime + resourceVersion) and when, by our clock. */
  #observed: { key: string; at: number } | undefined;
  #lastRenew = 0;
  /** The round in flight, aborted when its time is up. */
  #attempt: AbortController | undefined;
  /** Fires at the renew deadline of the last successful renewal. */
  #deadline: NodeJS.Timeout | undefined;

  constructor(options: LeaseElectorOptions) {
    this.#options = options;
    this.name = options.name;
    this.identity = options.identity;
    this.#api = options.kubeConfig.makeApiClient(CoordinationV1Api);
    this.#leaseDurationMs = options.leaseDurationMs ?? 15_000;
    this.#renewDeadlineMs = options.renewDeadlineMs ?? 10_000;
    this.#retryPeriodMs = options.retryPeriodMs ?? 2_000;
    this.#now = options.now ?? Date.now;
    if (!(this.#renewDeadlineMs < this.#leaseDurationMs)) throw new Error('renewDeadline must be shorter than leaseDuration');
    if (!(this.#retryPeriodMs < this.#renewDeadlineMs)) throw new Error('retryPeriod must be shorter than renewDeadline');
    options.metrics?.leaderStatus.set({ name: this.name }, 0);
  }

  isLeader(): boolean {
    return this.#leading;
  }

  onChange(listener: (leading: boolean) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** Starts campaigning; resolves after the first attempt (so `isLeader()` is meaningful). */
  async start(): Promise<void> {
    if (this.#running) return;
    this.#running = true;
    await this.#tick();
  }

  /** Stops; with `release` (default) a held Lease is handed back so a standby need not wait for expiry. */
  async stop(options: { release?: boolean } = {}): Promise<void> {
    if (!this.#running) return;
    this.#running = false;
    clearTimeout(this.#timer);
    clearTimeout(this.#deadline);
    this.#attempt?.abort(new Error('stopping'));
    await this.#cycle;
    const wasLeading = this.#leading;
    this.#setLeading(false);
    if (wasLeading && options.release !== false)
      await this.#release().catch((error: unknown) => this.#options.logger.warn({ err: error }, 'releasing the lease failed'));
  }

  async #tick(): Promise<void> {
    if (!this.#running) return;
    // Every round is cut off: a leader's at its renew deadline (it must have stopped leading
    // before the lease can expire for the others), a candidate's after a renew deadline too.
    const attempt = new AbortController();
    this.#attempt = attempt;
    const limit = this.#leading ? Math.max(1, this.#lastRenew + this.#renewDeadlineMs - this.#now()) : this.#renewDeadlineMs;
    const cutoff = setTimeout(() => attempt.abort(new Error(`no answer within ${limit} ms`)), limit);
    this.#cycle = this.#tryAcquireOrRenew(attempt.signal)
      .then((held) => {
        if (!this.#running) return;
        if (held) {
          this.#lastRenew = this.#now();
          this.#setLeading(true);
          this.#armDeadline();
        } else if (this.#leading && this.#now() - this.#lastRenew >= this.#renewDeadlineMs) {
          this.#stepDown();
        }
      })
      .finally(() => {
        clearTimeout(cutoff);
        this.#attempt = undefined;
        if (this.#running) this.#timer = setTimeout(() => void this.#tick(), this.#retryPeriodMs);
      });
    await this.#cycle;
  }

  /**
   * Leadership ends at the renew deadline by the clock, whatever a call in flight is doing: a
   * renewal that answers later (or never) cannot keep this replica leading past it.
   */
  #armDeadline(): void {
    clearTimeout(this.#deadline);
    this.#deadline = setTimeout(() => {
      if (this.#leading && this.#now() - this.#lastRenew >= this.#renewDeadlineMs) this.#stepDown();
    }, this.#renewDeadlineMs);
  }

  #stepDown(): void {
    clearTimeout(this.#deadline);
    this.#options.logger.warn(
      { lease: this.name },
      `could not renew the lease within ${this.#renewDeadlineMs} ms: stepping down`,
    );
    this.#setLeading(false);
    this.#attempt?.abort(new Error('stepped down'));
  }

  /** One round; true when we hold the lease afterwards. Errors count as "not renewed". */
  async #tryAcquireOrRenew(signal: AbortSignal): Promise<boolean> {
    const options = withSignal(signal);
    const namespace = this.#options.namespace;
    const now = new Date();
    let lease: V1Lease;
    try {
      lease = await this.#api.readNamespacedLease({ name: this.name, namespace }, options);
    } catch (error) {
      if (!isNotFound(error)) {
        this.#options.logger.warn({ err: error, lease: this.name }, 'reading the lease failed');
        return false;
      }
      try {
        await this.#api.createNamespacedLease(
          { namespace, body: { metadata: { name: this.name, namespace }, spec: this.#spec(now, now, 0) } },
          options,
        );
        return true;
      } catch (createError) {
        if (!isConflict(createError))
          this.#options.logger.warn({ err: createError, lease: this.name }, 'creating the lease failed');
        return false;
      }
    }
    const spec = lease.spec ?? {};
    const holder = spec.holderIdentity ?? '';
    const key = `${holder}|${String(spec.renewTime ?? '')}|${lease.metadata?.resourceVersion ?? ''}`;
    if (this.#observed?.key !== key) this.#observed = { key, at: this.#now() };
    const durationMs = (spec.leaseDurationSeconds ?? this.#leaseDurationMs / 1000) * 1000;
    const expired = this.#observed.at + durationMs <= this.#now();
    if (holder !== '' && holder !== this.identity && !expired) return false;
    const transitions = (spec.leaseTransitions ?? 0) + (holder === this.identity ? 0 : 1);
    const acquired = holder === this.identity && spec.acquireTime ? new Date(spec.acquireTime) : now;
    try {
      const updated = await this.#api.replaceNamespacedLease(
        { name: this.name, namespace, body: { ...lease, spec: this.#spec(acquired, now, transitions) } },
        options,
      );
      this.#observed = {
        key: `${this.identity}|${String(updated.spec?.renewTime ?? '')}|${updated.metadata?.resourceVersion ?? ''}`,
        at: this.#now(),
      };
      if (holder !== this.identity)
        this.#options.logger.info({ lease: this.name, previous: holder || undefined }, 'acquired the lease');
      return true;
    } catch (error) {
      if (!isConflict(error)) this.#options.logger.warn({ err: error, lease: this.name }, 'updating the lease failed');
      return false;
    }
  }

  /**
   * acquireTime and renewTime are MicroTime: kube-apiserver parses them with exactly six
   * fractional digits and refuses a Date's three with a 400, so they go as V1MicroTime.
   */
  #spec(acquireTime: Date, renewTime: Date, leaseTransitions: number): NonNullable<V1Lease['spec']> {
    return {
      holderIdentity: this.identity,
      leaseDurationSeconds: Math.ceil(this.#leaseDurationMs / 1000),
      acquireTime: new V1MicroTime(acquireTime.getTime()),
      renewTime: new V1MicroTime(renewTime.getTime()),
      leaseTransitions,
    };
  }

  async #release(): Promise<void> {
    const options = withSignal(AbortSignal.timeout(this.#renewDeadlineMs));
    const lease = await this.#api.readNamespacedLease({ name: this.name, namespace: this.#options.namespace }, options);
    if (lease.spec?.holderIdentity !== this.identity) return;
    await this.#api.replaceNamespacedLease(
      {
        name: this.name,
        namespace: this.#options.namespace,
        body: { ...lease, spec: { ...lease.spec, holderIdentity: '', leaseDurationSeconds: 1, renewTime: new V1MicroTime() } },
      },
      options,
    );
    this.#options.logger.info({ lease: this.name }, 'released the lease');
  }

  #setLeading(leading: boolean): void {
    if (this.#leading === leading) return;
    this.#leading = leading;
    this.#options.metrics?.leaderStatus.set({ name: this.name }, leading ? 1 : 0);
    this.#options.logger.info(
      { lease: this.name, identity: this.identity, leading },
      leading ? 'became leader' : 'stopped leading',
    );
    for (const listener of this.#listeners) {
      try {
        listener(leading);
      } catch (error) {
        this.#options.logger.error({ err: error }, 'leadership listener threw');
      }
    }
  }
}
