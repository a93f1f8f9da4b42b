import { CoordinationV1Api, type KubeConfig, type V1Lease } from '@kubernetes/client-node';
import type { Leadership } from '../controller/leadership.js';
import type { Logger } from '../observability/logger.js';
import type { Metrics } from '../observability/metrics.js';
import { isConflict, isNotFound } from './client.js';

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
 *   take over: renewDeadline < leaseDuration is the fencing margin.
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
}

export class LeaseElector implements Leadership {
  readonly name: string;
  readonly identity: string;
  readonly #o: LeaseElectorOptions;
  readonly #api: CoordinationV1Api;
  readonly #leaseDurationMs: number;
  readonly #renewDeadlineMs: number;
  readonly #retryPeriodMs: number;
  readonly #listeners = new Set<(leading: boolean) => void>();
  #running = false;
  #leading = false;
  #timer: NodeJS.Timeout | undefined;
  #cycle: Promise<void> | undefined;
  /** The last record seen (holder + renewTime + resourceVersion) and when, by our clock. */
  #observed: { key: string; at: number } | undefined;
  #lastRenew = 0;

  constructor(options: LeaseElectorOptions) {
    this.#o = options;
    this.name = options.name;
    this.identity = options.identity;
    this.#api = options.kubeConfig.makeApiClient(CoordinationV1Api);
    this.#leaseDurationMs = options.leaseDurationMs ?? 15_000;
    this.#renewDeadlineMs = options.renewDeadlineMs ?? 10_000;
    this.#retryPeriodMs = options.retryPeriodMs ?? 2_000;
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
    await this.#cycle;
    const wasLeading = this.#leading;
    this.#setLeading(false);
    if (wasLeading && options.release !== false)
      await this.#release().catch((error: unknown) => this.#o.logger.warn({ err: error }, 'releasing the lease failed'));
  }

  async #tick(): Promise<void> {
    if (!this.#running) return;
    this.#cycle = this.#tryAcquireOrRenew()
      .then((held) => {
        if (!this.#running) return;
        if (held) {
          this.#lastRenew = Date.now();
          this.#setLeading(true);
        } else if (this.#leading && Date.now() - this.#lastRenew >= this.#renewDeadlineMs) {
          this.#o.logger.warn(
            { lease: this.name },
            `could not renew the lease within ${this.#renewDeadlineMs} ms: stepping down`,
          );
          this.#setLeading(false);
        }
      })
      .finally(() => {
        if (this.#running) this.#timer = setTimeout(() => void this.#tick(), this.#retryPeriodMs);
      });
    await this.#cycle;
  }

  /** One round; true when we hold the lease afterwards. Errors count as "not renewed". */
  async #tryAcquireOrRenew(): Promise<boolean> {
    const namespace = this.#o.namespace;
    const now = new Date();
    let lease: V1Lease;
    try {
      lease = await this.#api.readNamespacedLease({ name: this.name, namespace });
    } catch (error) {
      if (!isNotFound(error)) {
        this.#o.logger.warn({ err: error, lease: this.name }, 'reading the lease failed');
        return false;
      }
      try {
        await this.#api.createNamespacedLease({
          namespace,
          body: { metadata: { name: this.name, namespace }, spec: this.#spec(now, now, 0) },
        });
        return true;
      } catch (createError) {
        if (!isConflict(createError)) this.#o.logger.warn({ err: createError, lease: this.name }, 'creating the lease failed');
        return false;
      }
    }
    const spec = lease.spec ?? {};
    const holder = spec.holderIdentity ?? '';
    const key = `${holder}|${String(spec.renewTime ?? '')}|${lease.metadata?.resourceVersion ?? ''}`;
    if (this.#observed?.key !== key) this.#observed = { key, at: Date.now() };
    const durationMs = (spec.leaseDurationSeconds ?? this.#leaseDurationMs / 1000) * 1000;
    const expired = this.#observed.at + durationMs <= Date.now();
    if (holder !== '' && holder !== this.identity && !expired) return false;
    const transitions = (spec.leaseTransitions ?? 0) + (holder === this.identity ? 0 : 1);
    const acquired = holder === this.identity && spec.acquireTime ? new Date(spec.acquireTime) : now;
    try {
      const updated = await this.#api.replaceNamespacedLease({
        name: this.name,
        namespace,
        body: { ...lease, spec: this.#spec(acquired, now, transitions) },
      });
      this.#observed = {
        key: `${this.identity}|${String(updated.spec?.renewTime ?? '')}|${updated.metadata?.resourceVersion ?? ''}`,
        at: Date.now(),
      };
      if (holder !== this.identity)
        this.#o.logger.info({ lease: this.name, previous: holder || undefined }, 'acquired the lease');
      return true;
    } catch (error) {
      if (!isConflict(error)) this.#o.logger.warn({ err: error, lease: this.name }, 'updating the lease failed');
      return false;
    }
  }

  #spec(acquireTime: Date, renewTime: Date, leaseTransitions: number): NonNullable<V1Lease['spec']> {
    return {
      holderIdentity: this.identity,
      leaseDurationSeconds: Math.ceil(this.#leaseDurationMs / 1000),
      acquireTime,
      renewTime,
      leaseTransitions,
    };
  }

  async #release(): Promise<void> {
    const lease = await this.#api.readNamespacedLease({ name: this.name, namespace: this.#o.namespace });
    if (lease.spec?.holderIdentity !== this.identity) return;
    await this.#api.replaceNamespacedLease({
      name: this.name,
      namespace: this.#o.namespace,
      body: { ...lease, spec: { ...lease.spec, holderIdentity: '', leaseDurationSeconds: 1, renewTime: new Date() } },
    });
    this.#o.logger.info({ lease: this.name }, 'released the lease');
  }

  #setLeading(leading: boolean): void {
    if (this.#leading === leading) return;
    this.#leading = leading;
    this.#o.metrics?.leaderStatus.set({ name: this.name }, leading ? 1 : 0);
    this.#o.logger.info({ lease: this.name, identity: this.identity, leading }, leading ? 'became leader' : 'stopped leading');
    for (const listener of this.#listeners) {
      try {
        listener(leading);
      } catch (error) {
        this.#o.logger.error({ err: error }, 'leadership listener threw');
      }
    }
  }
}
