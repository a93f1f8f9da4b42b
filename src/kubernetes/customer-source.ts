import { CoreV1Api, CustomObjectsApi, Watch, type KubeConfig } from '@kubernetes/client-node';
import { canonicalJson } from '../domain/canonical-json.js';
import { botTokenSchema, modelApiKeySchema, parseManifest, ValidationError, type CustomerSpecInput } from '../domain/customer.js';
import type { Leadership } from '../controller/leadership.js';
import type { Logger } from '../observability/logger.js';
import type { Guard } from '../resilience/guard.js';
import { reconnectDelayMs } from '../resilience/backoff.js';
import type { EventSource, WorldEventSink } from '../controller/event-source.js';
import type { CustomerStore } from '../store/customer-store.js';
import { ConflictError } from '../store/errors.js';
import { apiMessage, isConflict, isNotFound, JSON_PATCH, MERGE_PATCH, type KubeObject } from './client.js';
import { CUSTOMER_FINALIZER, CUSTOMER_GROUP, CUSTOMER_PLURAL, CUSTOMER_VERSION } from './crd.js';
import { crStatus, specProblemStatus, type CrStatus, type GenerationLink, type SpecProblem } from './customer-status.js';

/**
 * BLYTZ_SOURCE=kubernetes: Customer custom resources as a writer of desired state.
 *
 *   Customer CR ──list/watch──► CustomerStore.apply (spec; bot token from the referenced Secret)
 *   Customer CR ◄──status subresource── store status (syncStatus, after reconciles and periodically)
 *
 * The store stays the single place the controller reads: this source only writes specs into it
 * (whose change feed then wakes the controller) and copies status back out.
 *
 * Watching: one list, then a watch from the list's resourceVersion, with bookmarks. The watch is
 * restarted from the last version seen whenever it ends; after any error it is restarted with
 * jittered exponential backoff (client-node's informer stops for good on non-410 errors, so it
 * is not used); a 410 Gone (history compacted) means a fresh list. After every gap the sink is
 * asked to resync, since changes may have been missed.
 *
 * Deletion: every mirrored resource carries the finalizer `blytz.cloud/teardown`. A resource
 * being deleted sets the customer's desired state to `cancelled`; the finalizer comes off once
 * the store says the teardown finished (status phase Terminated, or the customer is gone), so
 * `kubectl delete` returns only after the assistant is really torn down.
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
  /**
   * Server-side watch timeout; the watch is simply reopened after it. Default 25 s: client-node
   * aborts a watch that receives nothing for 30 s, and kube-apiserver sends bookmarks only about
   * once a minute (and just before the timeout), so a quiet watch must end on the server's terms
   * first, with a bookmark that keeps its resourceVersion fresh.
   */
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
}

/** The secrets a Customer resource may reference instead of holding: `spec.<section>.<ref>` fills `<field>`. */
const SECRET_REFERENCES = [
  { section: 'telegram', ref: 'botTokenSecretRef', field: 'botToken', schema: botTokenSchema, holds: 'a Telegram bot token' },
  { section: 'model', ref: 'apiKeySecretRef', field: 'apiKey', schema: modelApiKeySchema, holds: 'a model API key' },
] as const;

export class CustomerResourceSource implements EventSource {
  readonly #o: Required<
    Pick<CustomerSourceOptions, 'minBackoffMs' | 'maxBackoffMs' | 'watchTimeoutSeconds' | 'statusIntervalMs' | 'retryIntervalMs'>
  > &
    CustomerSourceOptions;
  readonly #custom: CustomObjectsApi;
  readonly #core: CoreV1Api;
  readonly #watch: Watch;
  /** The last known object of every resource in the namespace, by name. */
  readonly #tracked = new Map<string, Tracked>();
  /** Names whose customer this source put into the store (a vanished resource cancels only these). */
  readonly #mirrored = new Set<string>();

  #sink: WorldEventSink | undefined;
  #running = false;
  #loop: Promise<void> | undefined;
  #abortWatch: AbortController | undefined;
  #sleep: { timer: NodeJS.Timeout; resolve: () => void } | undefined;
  #statusTimer: NodeJS.Timeout | undefined;
  #retryTimer: NodeJS.Timeout | undefined;
  #resourceVersion: string | undefined;
  #needList = true;
  #gap: string | undefined;
  #failures = 0;
  #events: Promise<void> = Promise.resolve();
  #unsubscribe: (() => void) | undefined;
  #synced = false;
  #watching = false;
  /** Lists done so far (for tests and diagnostics). */
  lists = 0;

  constructor(options: CustomerSourceOptions) {
    this.#o = {
      minBackoffMs: 500,
      maxBackoffMs: 30_000,
      watchTimeoutSeconds: 25,
      statusIntervalMs: 10_000,
      retryIntervalMs: 10_000,
      ...options,
    };
    this.#custom = options.kubeConfig.makeApiClient(CustomObjectsApi);
    this.#core = options.kubeConfig.makeApiClient(CoreV1Api);
    this.#watch = new Watch(options.kubeConfig);
  }

  /** True once the first list was mirrored. */
  get synced(): boolean {
    return this.#synced;
  }

  /** Names of the resources seen in the namespace (for tests and diagnostics). */
  known(): string[] {
    return [...this.#tracked.keys()];
  }

  /** True while a watch connection is open. */
  get watching(): boolean {
    return this.#watching;
  }

  /** Resolves after the first list attempt; watching goes on in the background. */
  async start(sink: WorldEventSink): Promise<void> {
    if (this.#running) return;
    this.#running = true;
    this.#sink = sink;
    this.#unsubscribe = this.#o.leadership?.onChange((leading) => {
      // A new leader mirrors everything it knows: the old one may have left work half done.
      if (leading) void this.#serialized(() => this.#mirrorAll());
    });
    const firstList = this.#listOnce().catch((error: unknown) => {
      this.#noteFailure('listing Customers failed', error);
    });
    await firstList;
    this.#loop = this.#run();
    if (this.#o.statusIntervalMs > 0) {
      this.#statusTimer = setInterval(() => void this.syncAllStatus().catch(() => {}), this.#o.statusIntervalMs);
    }
    this.#retryTimer = setInterval(() => void this.#retryProblems(), this.#o.retryIntervalMs);
  }

  async stop(): Promise<void> {
    this.#running = false;
    this.#unsubscribe?.();
    clearInterval(this.#statusTimer);
    clearInterval(this.#retryTimer);
    this.#abortWatch?.abort();
    if (this.#sleep) {
      clearTimeout(this.#sleep.timer);
      this.#sleep.resolve();
    }
    await this.#loop;
    await this.#events;
  }

  // ---- list and watch ----

  async #run(): Promise<void> {
    while (this.#running) {
      try {
        if (this.#needList) await this.#listOnce();
        await this.#watchOnce();
      } catch (error) {
        if (!this.#running) return;
        this.#noteFailure('watching Customers failed', error);
        await this.#backoff();
      }
    }
  }

  #noteFailure(what: string, error: unknown): void {
    this.#gap ??= `${what}: ${apiMessage(error)}`;
    this.#o.logger.warn({ err: error, namespace: this.#o.namespace }, `${what}; retrying with backoff`);
  }

  async #backoff(): Promise<void> {
    const delay = reconnectDelayMs(this.#failures, this.#o.minBackoffMs, this.#o.maxBackoffMs);
    this.#failures += 1;
    await new Promise<void>((resolve) => {
      this.#sleep = { timer: setTimeout(resolve, delay), resolve };
    });
    this.#sleep = undefined;
  }

  async #listOnce(): Promise<void> {
    const list = (await this.#o.guard('listCustomers', () =>
      this.#custom.listNamespacedCustomObject({
        group: CUSTOMER_GROUP,
        version: CUSTOMER_VERSION,
        namespace: this.#o.namespace,
        plural: CUSTOMER_PLURAL,
      }),
    )) as { metadata?: { resourceVersion?: string }; items?: KubeObject[] };
    this.lists += 1;
    const items = list.items ?? [];
    await this.#serialized(async () => {
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
    });
    this.#resourceVersion = list.metadata?.resourceVersion;
    this.#needList = false;
    this.#synced = true;
    this.#failures = 0;
    this.#closeGap();
  }

  #closeGap(): void {
    if (this.#gap === undefined) return;
    const reason = this.#gap;
    this.#gap = undefined;
    this.#o.logger.info({ reason }, 'Customer resources back in sync; resyncing');
    this.#sink?.resync(`Customer resources resynced after ${reason}`);
  }

  /** One watch connection, from the last resourceVersion; resolves when it ends, rejects on error. */
  async #watchOnce(): Promise<void> {
    const path = `/apis/${CUSTOMER_GROUP}/${CUSTOMER_VERSION}/namespaces/${encodeURIComponent(this.#o.namespace)}/${CUSTOMER_PLURAL}`;
    let expired = false;
    let received = false;
    const openedAt = Date.now();
    const ended = new Promise<void>((resolve, reject) => {
      const done = (error: unknown) => {
        this.#watching = false;
        if (error && this.#running) reject(error instanceof Error ? error : new Error(String(error)));
        else resolve();
      };
      const onEvent = (type: string, object: KubeObject & { code?: number }) => {
        received = true;
        if (type === 'ERROR') {
          // The API server reports an expired resourceVersion inside a 200 stream.
          if (object.code === 410) expired = true;
          else this.#o.logger.warn({ status: object }, 'Customer watch reported an error');
          return;
        }
        const rv = object.metadata?.resourceVersion;
        if (type === 'BOOKMARK') {
          if (rv) this.#resourceVersion = rv;
          return;
        }
        void this.#serialized(async () => {
          await this.#onEvent(type, object);
          if (rv) this.#resourceVersion = rv;
        });
      };
      this.#watch
        .watch(
          path,
          {
            allowWatchBookmarks: true,
            timeoutSeconds: this.#o.watchTimeoutSeconds,
            ...(this.#resourceVersion ? { resourceVersion: this.#resourceVersion } : {}),
          },
          onEvent,
          done,
        )
        .then((controller) => {
          this.#abortWatch = controller;
          if (!this.#running) controller.abort();
          else if (!controller.signal.aborted) {
            this.#watching = true;
            this.#closeGap();
          }
        })
        .catch(done);
    });
    try {
      await ended;
    } finally {
      this.#watching = false;
      await this.#events;
    }
    if (!this.#running) return;
    if (expired) {
      // History was compacted past our version: only a fresh list tells us where we are.
      this.#needList = true;
      this.#gap ??= 'the watch expired (410 Gone)';
      this.#o.logger.info({ namespace: this.#o.namespace }, 'Customer watch expired (410 Gone); relisting');
      return;
    }
    // The server ends a healthy watch after timeoutSeconds; an earlier end is a dropped connection.
    if (Date.now() - openedAt < this.#o.watchTimeoutSeconds * 1000 - 1000) {
      this.#gap ??= 'the watch connection was closed';
      this.#o.logger.info({ namespace: this.#o.namespace }, 'Customer watch closed early; reopening');
    }
    if (received) {
      this.#failures = 0;
    } else {
      // A server ending watches at once would otherwise make this a busy loop.
      await this.#backoff();
    }
  }

  /** Events are handled one at a time, in order; a failure is logged and left to the retry timer. */
  #serialized(task: () => Promise<void>): Promise<void> {
    const next = this.#events.then(task).catch((error: unknown) => {
      this.#o.logger.warn({ err: error }, 'handling a Customer resource failed; will retry');
    });
    this.#events = next;
    return next;
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

  #leading(): boolean {
    return this.#o.leadership?.isLeader() ?? true;
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
      this.#o.logger.warn({ err: error, customer: name }, 'mirroring a Customer resource failed; will retry');
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
    if (await this.#o.store.setState(name, 'cancelled')) this.#sink?.enqueue(name);
  }

  /** Brings the store (and finalizer, and status) in line with the resource's current object. */
  async #mirror(name: string): Promise<void> {
    const tracked = this.#tracked.get(name);
    if (!tracked) return;
    const { object } = tracked;
    delete tracked.failed;
    if (object.metadata?.deletionTimestamp) {
      await this.#deleting(name, tracked);
      return;
    }
    if (!(object.metadata?.finalizers ?? []).includes(CUSTOMER_FINALIZER)) {
      // Before the store learns of it: a customer is never created that a deletion could skip.
      if (!(await this.#addFinalizer(name, object))) return; // changed meanwhile: its next event comes
    }
    const spec = await this.#desiredSpec(name, tracked);
    if (!spec) return;
    try {
      const manifest = parseManifest({
        apiVersion: `${CUSTOMER_GROUP}/${CUSTOMER_VERSION}`,
        kind: 'Customer',
        metadata: { name, ...(object.metadata?.labels ? { labels: object.metadata.labels } : {}) },
        spec,
      });
      const result = await this.#o.store.apply({ name, labels: manifest.metadata.labels ?? {}, spec: manifest.spec });
      this.#mirrored.add(name);
      const crGeneration = Number(object.metadata?.generation ?? 1);
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
      this.#o.logger.warn({ customer: name, reason: tracked.problem.reason }, 'Customer resource not accepted');
    }
    await this.syncStatus(name);
  }

  /**
   * The resource's spec with each referenced secret (bot token, model API key) read from its
   * Secret; undefined (and a problem noted) when one cannot be.
   */
  async #desiredSpec(name: string, tracked: Tracked): Promise<CustomerSpecInput | undefined> {
    const spec = structuredClone((tracked.object.spec ?? {}) as Record<string, unknown>);
    for (const secret of SECRET_REFERENCES) {
      const section = spec[secret.section] as Record<string, unknown> | undefined;
      const ref = section?.[secret.ref] as { name?: unknown; key?: unknown } | undefined;
      if (!section || !ref || typeof ref.name !== 'string' || typeof ref.key !== 'string') continue;
      const found = await this.#readSecretKey(ref.name, ref.key);
      if (found.value === undefined) {
        tracked.problem = { reason: 'SecretNotFound', message: found.problem, retry: true };
        await this.syncStatus(name);
        return undefined;
      }
      // Validated like an inline value; the value itself never reaches a message or a log.
      const checked = secret.schema.safeParse(found.value);
      if (!checked.success) {
        tracked.problem = {
          reason: 'InvalidSecret',
          message: `Secret ${ref.name} key ${ref.key} does not hold ${secret.holds} (${checked.error.issues.map((i) => i.message).join('; ')})`,
          retry: true,
        };
        await this.syncStatus(name);
        return undefined;
      }
      section[secret.field] = found.value;
    }
    return spec as CustomerSpecInput;
  }

  /**
   * A secret written into the resource itself is accepted (the same manifest applies with
   * `blytz apply`), but it sits in etcd unencrypted and in every `kubectl get -o yaml`: say so
   * where operators look (`blytz describe`, the events API), once per generation of the resource.
   */
  async #warnOfInlineSecrets(name: string, object: KubeObject): Promise<void> {
    const spec = (object.spec ?? {}) as Record<string, Record<string, unknown> | undefined>;
    const inline = SECRET_REFERENCES.filter((s) => spec[s.section]?.[s.field] !== undefined);
    if (inline.length === 0) return;
    const fields = inline.map((s) => `spec.${s.section}.${s.field}`).join(' and ');
    const refs = inline.map((s) => `spec.${s.section}.${s.ref}`).join(' and ');
    const them = inline.length > 1 ? 'them' : 'it';
    const message = `the resource holds ${fields} in plain text (unencrypted in etcd, shown by kubectl get -o yaml): put ${them} in a Secret and use ${refs}`;
    // A warning only: failing to record it must not stop the mirroring.
    await this.#o.store.recordEvent(name, { type: 'Warning', reason: 'InlineSecret', message }).catch(() => {});
  }

  async #readSecretKey(secret: string, key: string): Promise<{ value?: string; problem: string }> {
    try {
      const found = await this.#o.guard('readSecret', () =>
        this.#core.readNamespacedSecret({ name: secret, namespace: this.#o.namespace }),
      );
      const encoded = found.data?.[key];
      if (encoded === undefined) return { problem: `Secret ${secret} has no key ${key}` };
      // `echo token | kubectl create secret` leaves a newline: a token never contains whitespace.
      return { value: Buffer.from(encoded, 'base64').toString('utf8').trim(), problem: '' };
    } catch (error) {
      if (isNotFound(error)) return { problem: `Secret ${secret} not found in namespace ${this.#o.namespace}` };
      throw error;
    }
  }

  async #addFinalizer(name: string, object: KubeObject): Promise<boolean> {
    try {
      const patched = (await this.#o.guard('addFinalizer', () =>
        this.#custom.patchNamespacedCustomObject(
          {
            group: CUSTOMER_GROUP,
            version: CUSTOMER_VERSION,
            namespace: this.#o.namespace,
            plural: CUSTOMER_PLURAL,
            name,
            // resourceVersion makes it conditional: a merge patch replaces the whole list.
            body: {
              metadata: {
                resourceVersion: object.metadata?.resourceVersion,
                finalizers: [...(object.metadata?.finalizers ?? []), CUSTOMER_FINALIZER],
              },
            },
          },
          MERGE_PATCH,
        ),
      )) as KubeObject;
      this.#remember(patched);
      return true;
    } catch (error) {
      if (isConflict(error) || isNotFound(error)) return false;
      throw error;
    }
  }

  async #deleting(name: string, tracked: Tracked): Promise<void> {
    const finalizers = tracked.object.metadata?.finalizers ?? [];
    if (!finalizers.includes(CUSTOMER_FINALIZER)) return; // not ours to hold
    const customer = await this.#o.store.get(name);
    if (customer && customer.spec.state !== 'cancelled') {
      await this.#o.store.setState(name, 'cancelled');
      this.#sink?.enqueue(name);
    }
    await this.syncStatus(name);
    await this.#releaseIfTornDown(name);
  }

  /** Removes our finalizer once the store says the teardown finished. */
  async #releaseIfTornDown(name: string): Promise<void> {
    const tracked = this.#tracked.get(name);
    const object = tracked?.object;
    const finalizers = object?.metadata?.finalizers ?? [];
    if (!object?.metadata?.deletionTimestamp || !finalizers.includes(CUSTOMER_FINALIZER)) return;
    const customer = await this.#o.store.get(name);
    // Terminated for the current generation: an older Terminated (a previous cancel) says nothing.
    if (customer && !(customer.status.phase === 'Terminated' && customer.status.observedGeneration === customer.generation))
      return;
    try {
      await this.#o.guard('removeFinalizer', () =>
        this.#custom.patchNamespacedCustomObject(
          {
            group: CUSTOMER_GROUP,
            version: CUSTOMER_VERSION,
            namespace: this.#o.namespace,
            plural: CUSTOMER_PLURAL,
            name,
            // `test` first: another controller's finalizer added meanwhile is never dropped.
            body: [
              { op: 'test', path: '/metadata/finalizers', value: finalizers },
              { op: 'replace', path: '/metadata/finalizers', value: finalizers.filter((f) => f !== CUSTOMER_FINALIZER) },
            ],
          },
          JSON_PATCH,
        ),
      );
      this.#mirrored.delete(name);
      this.#o.logger.info({ customer: name }, 'teardown finished: finalizer removed');
    } catch (error) {
      // 404: already gone; 409/422: changed meanwhile, its next event brings us back here.
      if (isNotFound(error) || isConflict(error) || (error as { code?: unknown }).code === 422) return;
      throw error;
    }
  }

  // ---- status ----

  /**
   * Copies the store's status of `name` to its resource's status subresource when it differs from
   * what the resource shows; also lets a finished teardown release the finalizer. Returns true
   * when a write was made. Call it after a reconcile of `name`; a timer calls it for all.
   */
  async syncStatus(name: string): Promise<boolean> {
    if (!this.#leading()) return false;
    const tracked = this.#tracked.get(name);
    if (!tracked) return false;
    const customer = tracked.problem && !this.#mirrored.has(name) ? undefined : await this.#o.store.get(name);
    const previous = (tracked.object.status ?? {}) as Record<string, unknown>;
    const crGeneration = Number(tracked.object.metadata?.generation ?? 1);
    let status = customer ? crStatus(customer, tracked.link, previous) : undefined;
    if (tracked.problem) status = specProblemStatus(status ?? {}, tracked.problem, crGeneration, previous);
    let wrote = false;
    if (status && canonicalJson(status) !== canonicalJson(previous)) {
      wrote = await this.#writeStatus(name, status);
    }
    await this.#releaseIfTornDown(name);
    return wrote;
  }

  /** syncStatus for every known resource (the periodic pass). */
  async syncAllStatus(): Promise<void> {
    for (const name of [...this.#tracked.keys()]) {
      await this.#serialized(async () => {
        await this.syncStatus(name);
      });
    }
  }

  async #writeStatus(name: string, status: CrStatus): Promise<boolean> {
    try {
      const patched = (await this.#o.guard('writeStatus', () =>
        this.#custom.patchNamespacedCustomObjectStatus(
          {
            group: CUSTOMER_GROUP,
            version: CUSTOMER_VERSION,
            namespace: this.#o.namespace,
            plural: CUSTOMER_PLURAL,
            name,
            // `add` replaces the member when present: stale fields do not linger as with a merge.
            body: [{ op: 'add', path: '/status', value: status }],
          },
          JSON_PATCH,
        ),
      )) as KubeObject;
      // Keep what the watch will confirm, so the next comparison does not write it twice.
      const tracked = this.#tracked.get(name);
      if (tracked && Number(patched.metadata?.resourceVersion ?? 0) >= Number(tracked.object.metadata?.resourceVersion ?? 0)) {
        tracked.object = patched;
      }
      return true;
    } catch (error) {
      if (isNotFound(error)) return false;
      throw error;
    }
  }
}
