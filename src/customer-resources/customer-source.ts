import { CoreV1Api, CustomObjectsApi, type KubeConfig } from '@kubernetes/client-node';
import { ValidationError } from '../domain/customer.js';
import type { Leadership } from '../controller/leadership.js';
import { apiMessage, isNotFound, type KubeObject } from '../kube-api/client.js';
import { ListWatch } from '../kube-api/list-watch.js';
import type { Logger } from '../observability/logger.js';
import type { Guard } from '../resilience/guard.js';
import type { EventSource, WorldEventSink } from '../controller/event-source.js';
import type { CustomerStore } from '../store/customer-store.js';
import { ConflictError } from '../store/errors.js';
import { CUSTOMER_FINALIZER, CUSTOMER_GROUP, CUSTOMER_PLURAL, CUSTOMER_VERSION } from './crd.js';
import type { GenerationLink, SpecProblem } from './customer-status.js';
import { inlineSecretWarning, manifestOf, resolveSecretRefs } from './resource-spec.js';
import { CustomerResourceWriter } from './status-writer.js';

/**
 * BLYTZ_SOURCE=kubernetes: Customer custom resources as a writer of desired state.
 *
 *   Customer CR ──ListWatch──► resource-spec.ts (secrets from Secrets) ──► CustomerStore.apply
 *   Customer CR ◄──status-writer.ts (status subresource, finalizer)◄── store status
 *
 * The store stays the single place the controller reads: this source only writes specs into it
 * (whose change feed then wakes the controller) and copies status back out, after reconciles
 * of the customer (`syncStatus`) and periodically.
 *
 * Deletion: every mirrored resource carries the finalizer `blytz.cloud/teardown`. A resource
 * being deleted sets the customer's desired state to `cancelled`; the finalizer comes off once
 * the store says the teardown finished, so `kubectl delete` returns only after the assistant is
 * really torn down. A resource that vanished while unwatched (no finalizer yet) is found by the
 * relist and its customer cancelled.
 *
 * With `leadership`, only the leader writes (store, finalizers, status); standbys just watch.
 */

export interface CustomerSourceOptions {
  kubeConfig: KubeConfig;
  namespace: string;
  store: CustomerStore;
  /** The `kubernetes` dependency's guard: list, get, patch go through it (not the long-lived watch). */
  guard: Guard;
  logger: Pick<Logger, 'info' | 'warn' | 'debug' | 'error'>;
  leadership?: Leadership | undefined;
  /** Reconnect backoff: doubles from min to max, jittered ±50%. Defaults 500 ms .. 30 s. */
  minBackoffMs?: number;
  maxBackoffMs?: number;
  /** Server-side watch timeout (default 25 s, see ListWatch). */
  watchTimeoutSeconds?: number;
  /** How often every mirrored resource's status is compared and written (default 10 s; 0 = never). */
  statusIntervalMs?: number;
  /** How often resources that could not be mirrored (missing Secret, invalid spec) are tried again (default 10 s). */
  retryIntervalMs?: number;
}

interface Tracked {
  object: KubeObject;
  /** Mirroring failed for a reason outside the resource (store or API down): try again. */
  failed?: boolean;
  link?: GenerationLink;
  problem?: SpecProblem;
  /**
   * The status last written and the resourceVersion of the object it was written over. Until the
   * watch brings a newer object (another version), that status is what the resource shows.
   * Versions are only ever compared for equality: they are opaque, and the patch's answer may
   * be older than an event the watch already brought, so it never replaces `object`.
   */
  written?: { over: string | undefined; status: unknown };
}

export class CustomerResourceSource implements EventSource {
  readonly #options: CustomerSourceOptions;
  readonly #core: CoreV1Api;
  readonly #writer: CustomerResourceWriter;
  readonly #listWatch: ListWatch<KubeObject>;
  /** The last known object of every resource in the namespace, by name. */
  readonly #tracked = new Map<string, Tracked>();
  /** Names whose customer this source put into the store (a vanished resource cancels only these). */
  readonly #mirrored = new Set<string>();

  #sink: WorldEventSink | undefined;
  #running = false;
  #statusTimer: NodeJS.Timeout | undefined;
  #retryTimer: NodeJS.Timeout | undefined;
  /** Work outside the watch's own order (timers, leadership), one task at a time. */
  #tasks: Promise<void> = Promise.resolve();
  #unsubscribe: (() => void) | undefined;

  constructor(options: CustomerSourceOptions) {
    this.#options = options;
    this.#core = options.kubeConfig.makeApiClient(CoreV1Api);
    this.#writer = new CustomerResourceWriter(options);
    const custom = options.kubeConfig.makeApiClient(CustomObjectsApi);
    const ref = { group: CUSTOMER_GROUP, version: CUSTOMER_VERSION, namespace: options.namespace, plural: CUSTOMER_PLURAL };
    this.#listWatch = new ListWatch<KubeObject>({
      kubeConfig: options.kubeConfig,
      what: 'customers',
      path: `/apis/${CUSTOMER_GROUP}/${CUSTOMER_VERSION}/namespaces/${encodeURIComponent(options.namespace)}/${CUSTOMER_PLURAL}`,
      list: async () =>
        (await options.guard('listCustomers', () => custom.listNamespacedCustomObject(ref))) as {
          metadata?: { resourceVersion?: string };
          items?: KubeObject[];
        },
      handler: {
        replace: (items) => this.#serialized(() => this.#replace(items)),
        event: (type, object) => this.#serialized(() => this.#onEvent(type, object)),
        resync: (reason) => {
          options.logger.info({ reason }, 'Customer resources relisted; resyncing');
          this.#sink?.resync(`Customer resources resynced after ${reason}`);
        },
      },
      logger: options.logger,
      minBackoffMs: options.minBackoffMs,
      maxBackoffMs: options.maxBackoffMs,
      watchTimeoutSeconds: options.watchTimeoutSeconds,
    });
  }

  /** True once the first list was mirrored. */
  get synced(): boolean {
    return this.#listWatch.synced;
  }

  /** True while a watch connection is open. */
  get watching(): boolean {
    return this.#listWatch.watching;
  }

  /** Lists done so far (for tests and diagnostics). */
  get lists(): number {
    return this.#listWatch.lists;
  }

  /** Names of the resources seen in the namespace (for tests and diagnostics). */
  known(): string[] {
    return [...this.#tracked.keys()];
  }

  /** Resolves after the first list attempt; watching goes on in the background. */
  async start(sink: WorldEventSink): Promise<void> {
    if (this.#running) return;
    this.#running = true;
    this.#sink = sink;
    this.#unsubscribe = this.#options.leadership?.onChange((leading) => {
      // A new leader mirrors everything it knows: the old one may have left work half done.
      if (leading) void this.#serialized(() => this.#mirrorAll());
    });
    await this.#listWatch.start();
    const statusIntervalMs = this.#options.statusIntervalMs ?? 10_000;
    if (statusIntervalMs > 0) {
      this.#statusTimer = setInterval(() => void this.syncAllStatus().catch(() => {}), statusIntervalMs);
    }
    this.#retryTimer = setInterval(() => void this.#retryProblems(), this.#options.retryIntervalMs ?? 10_000);
  }

  async stop(): Promise<void> {
    this.#running = false;
    this.#unsubscribe?.();
    clearInterval(this.#statusTimer);
    clearInterval(this.#retryTimer);
    await this.#listWatch.stop();
    await this.#tasks;
  }

  /** One task at a time, in order; a failure is logged and left to the retry timer. */
  #serialized(task: () => Promise<void>): Promise<void> {
    const next = this.#tasks.then(task).catch((error: unknown) => {
      this.#options.logger.warn({ err: error }, 'handling a Customer resource failed; will retry');
    });
    this.#tasks = next;
    return next;
  }

  #leading(): boolean {
    return this.#options.leadership?.isLeader() ?? true;
  }

  // ---- what the list and watch bring ----

  async #replace(items: KubeObject[]): Promise<void> {
    const present = new Set<string>();
    for (const item of items) {
      const name = item.metadata?.name;
      if (!name) continue;
      present.add(name);
      this.#remember(item);
    }
    // Resources deleted while we were not watching (only possible without our finalizer).
    for (const name of [...this.#tracked.keys()]) {
      if (!present.has(name)) await this.#vanished(name);
    }
    await this.#mirrorAll();
  }

  async #onEvent(type: string, object: KubeObject): Promise<void> {
    const name = object.metadata?.name;
    if (!name) return;
    if (type === 'DELETED') {
      await this.#vanished(name);
      return;
    }
    this.#remember(object);
    if (this.#leading()) await this.#mirrorSafely(name);
  }

  #remember(object: KubeObject): void {
    const name = object.metadata?.name ?? '';
    const tracked = this.#tracked.get(name);
    if (tracked) tracked.object = object;
    else this.#tracked.set(name, { object });
  }

  async #mirrorAll(): Promise<void> {
    if (!this.#leading()) return;
    for (const name of [...this.#tracked.keys()]) await this.#mirrorSafely(name);
  }

  async #mirrorSafely(name: string): Promise<void> {
    try {
      await this.#mirror(name);
    } catch (error) {
      const tracked = this.#tracked.get(name);
      if (tracked) tracked.failed = true;
      this.#options.logger.warn({ err: error, customer: name }, 'mirroring a Customer resource failed; will retry');
    }
  }

  async #retryProblems(): Promise<void> {
    if (!this.#leading()) return;
    const names = [...this.#tracked.entries()].filter(([, t]) => t.failed || t.problem?.retry).map(([name]) => name);
    for (const name of names) await this.#serialized(() => this.#mirrorSafely(name));
  }

  /** The resource is gone from the API. Only customers we mirrored are cancelled. */
  async #vanished(name: string): Promise<void> {
    this.#tracked.delete(name);
    if (!this.#mirrored.has(name) || !this.#leading()) return;
    this.#mirrored.delete(name);
    if (await this.#options.store.setState(name, 'cancelled')) this.#sink?.enqueue(name);
  }

  // ---- into the store ----

  /** Brings the store (and finalizer, and status) in line with the resource's current object. */
  async #mirror(name: string): Promise<void> {
    const tracked = this.#tracked.get(name);
    if (!tracked) return;
    const { object } = tracked;
    delete tracked.failed;
    if (object.metadata?.deletionTimestamp) {
      await this.#deleting(name);
      return;
    }
    if (!(object.metadata?.finalizers ?? []).includes(CUSTOMER_FINALIZER)) {
      // Before the store learns of it: a customer is never created that a deletion could skip.
      const patched = await this.#writer.addFinalizer(name, object);
      if (!patched) return; // changed meanwhile: its next event comes
      this.#remember(patched);
    }
    const resolved = await resolveSecretRefs(tracked.object, (secret, key) => this.#readSecretKey(secret, key));
    if ('problem' in resolved) {
      tracked.problem = resolved.problem;
      await this.syncStatus(name);
      return;
    }
    try {
      const manifest = manifestOf(name, tracked.object, resolved.spec);
      const result = await this.#options.store.apply({ name, labels: manifest.metadata.labels ?? {}, spec: manifest.spec });
      this.#mirrored.add(name);
      const crGeneration = Number(tracked.object.metadata?.generation ?? 1);
      // Once per spec change (and once per controller start), not on every event of the resource.
      if (tracked.link?.crGeneration !== crGeneration) await this.#warnOfInlineSecrets(name, tracked.object);
      tracked.link = { crGeneration, storeGeneration: result.customer.generation };
      delete tracked.problem;
      if (result.changed) this.#sink?.enqueue(name);
    } catch (error) {
      if (error instanceof ValidationError) {
        tracked.problem = { reason: 'InvalidSpec', message: error.message, retry: false };
      } else if (error instanceof ConflictError) {
        tracked.problem = { reason: 'Conflict', message: error.message, retry: true };
      } else {
        throw error;
      }
      this.#options.logger.warn({ customer: name, reason: tracked.problem.reason }, 'Customer resource not accepted');
    }
    await this.syncStatus(name);
  }

  /** Said where operators look (`blytz describe`, the events API), once per generation of the resource. */
  async #warnOfInlineSecrets(name: string, object: KubeObject): Promise<void> {
    const message = inlineSecretWarning(object);
    if (message === undefined) return;
    // A warning only: failing to record it must not stop the mirroring.
    await this.#options.store.recordEvent(name, { type: 'Warning', reason: 'InlineSecret', message }).catch(() => {});
  }

  async #readSecretKey(secret: string, key: string): Promise<{ value?: string; problem: string }> {
    const namespace = this.#options.namespace;
    try {
      const found = await this.#options.guard('readSecret', () => this.#core.readNamespacedSecret({ name: secret, namespace }));
      const encoded = found.data?.[key];
      if (encoded === undefined) return { problem: `Secret ${secret} has no key ${key}` };
      // `echo token | kubectl create secret` leaves a newline: a token never contains whitespace.
      return { value: Buffer.from(encoded, 'base64').toString('utf8').trim(), problem: '' };
    } catch (error) {
      if (isNotFound(error)) return { problem: `Secret ${secret} not found in namespace ${namespace}` };
      throw new Error(`reading Secret ${secret}: ${apiMessage(error)}`, { cause: error });
    }
  }

  async #deleting(name: string): Promise<void> {
    const tracked = this.#tracked.get(name);
    if (!(tracked?.object.metadata?.finalizers ?? []).includes(CUSTOMER_FINALIZER)) return; // not ours to hold
    const customer = await this.#options.store.get(name);
    if (customer && customer.spec.state !== 'cancelled') {
      await this.#options.store.setState(name, 'cancelled');
      this.#sink?.enqueue(name);
    }
    await this.syncStatus(name);
  }

  // ---- status ----

  /**
   * Copies the store's status of `name` to its resource's status subresource when it differs from
   * what the resource shows; also lets a finished teardown release the finalizer. Returns true
   * when a status write was made. Call it after a reconcile of `name`; a timer calls it for all.
   */
  async syncStatus(name: string): Promise<boolean> {
    if (!this.#leading()) return false;
    const tracked = this.#tracked.get(name);
    if (!tracked) return false;
    const customer = tracked.problem && !this.#mirrored.has(name) ? undefined : await this.#options.store.get(name);
    const version = tracked.object.metadata?.resourceVersion;
    const shown = tracked.written && tracked.written.over === version ? tracked.written.status : tracked.object.status;
    const status = this.#writer.desiredStatus(tracked, customer, shown);
    const written = await this.#writer.syncStatus(name, shown, status);
    if (written) tracked.written = { over: version, status };
    if (await this.#writer.releaseIfTornDown(name, tracked.object, customer)) {
      this.#mirrored.delete(name);
      this.#options.logger.info({ customer: name }, 'teardown finished: finalizer removed');
    }
    return written;
  }

  /** syncStatus for every known resource (the periodic pass). */
  async syncAllStatus(): Promise<void> {
    for (const name of [...this.#tracked.keys()]) {
      await this.#serialized(async () => {
        await this.syncStatus(name);
      });
    }
  }
}
