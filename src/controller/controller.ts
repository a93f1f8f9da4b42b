import { createLogger, type Logger } from '../observability/logger.js';
import { Metrics } from '../observability/metrics.js';
import type { EventSource, WorldEventSink } from './event-source.js';
import type { Leadership } from './leadership.js';
import { WorkQueue, type Priority, type QueueItem, type WorkQueueOptions } from './queue.js';

/**
 * A level-triggered controller in the style of controller-runtime: sources say only *which*
 * key to look at; N workers take keys from a WorkQueue and call `reconcile(key, signal)`,
 * which reads desired and observed state again every time.
 *
 * Three outcomes (controller-runtime's reconcile.Result and TerminalError):
 * - done: return nothing; the key's backoff is reset.
 * - look again: `{ requeueAfterMs }` (timed) or `{ requeue: true }` (with backoff).
 * - failed: throw; the key is retried with per-key exponential backoff, unless the error is
 *   (or wraps, via `cause`) a TerminalError, which is not retried until the key changes again.
 */

export interface ReconcileResult {
  /** Look at the key again after this many ms (takes precedence over `requeue`). */
  requeueAfterMs?: number;
  /** Look at the key again after its backoff, without counting an error. */
  requeue?: boolean;
}

/**
 * What the controller drives, and all it knows of it: reconcile one key, list every key for a
 * full resync, and forget what it cached about a key when a live event names it (the reconcile
 * that event causes must observe the world as it is after the event).
 */
export interface Reconciler {
  reconcile(key: string, signal: AbortSignal): Promise<ReconcileResult | void>;
  /** Every key that may need reconciling (for a full resync). */
  listKeys(): Promise<string[]>;
  /** Called for every key a source enqueues and every `reconcileNow`, before it is queued. */
  invalidate?(key: string): void;
}

/** A failure that retrying cannot fix (bad spec, missing template): not requeued. */
export class TerminalError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'TerminalError';
  }
}

/** The reason a reconcile's signal is aborted when it ran past `reconcileTimeoutMs`. */
export class ReconcileTimeoutError extends Error {
  constructor(
    readonly key: string,
    readonly timeoutMs: number,
  ) {
    super(`reconcile of ${key} did not finish within ${timeoutMs} ms`);
    this.name = 'ReconcileTimeoutError';
  }
}

/** This process does not reconcile now (a standby, or stopped): the leader does. */
export class NotLeaderError extends Error {
  constructor(message = 'this replica is not the leader; the leader reconciles') {
    super(message);
    this.name = 'NotLeaderError';
  }
}

export interface ControllerOptions {
  /** The `controller` metric label and the queue's `name` label. */
  name: string;
  reconciler: Reconciler;
  /** Concurrent reconciles (default 4). */
  workers?: number;
  /** Full resync period; 0 turns it off (default 300). */
  resyncSeconds?: number;
  /** A reconcile running longer is aborted and counts as an error (default 120 s). */
  reconcileTimeoutMs?: number;
  /** How long `stop()` lets in-flight reconciles finish before aborting them (default 10 s). */
  drainTimeoutMs?: number;
  /** Started and stopped with the controller; they call `enqueue` (which invalidates) and `resync`. */
  sources?: EventSource[];
  /** Workers run only while this says so; without it they run from `start()`. */
  leadership?: Leadership;
  metrics?: Metrics;
  logger?: Logger;
  /** Backoff, bucket and aging settings for the queue. */
  queue?: Omit<WorkQueueOptions, 'name' | 'metrics'>;
}

/** One period of leading: its own queue, and one signal that aborts everything it started. */
interface Term {
  queue: WorkQueue;
  abort: AbortController;
  workers: Array<Promise<void>>;
  listing: boolean;
  listAgain: boolean;
  listFailures: number;
  listRetry: NodeJS.Timeout | undefined;
}

interface Waiter {
  resolve: (at: Date) => void;
  reject: (error: Error) => void;
}

const MAX_LIST_RETRY_MS = 60_000;

export class Controller implements WorldEventSink {
  readonly name: string;
  readonly #reconciler: Reconciler;
  readonly #workers: number;
  readonly #resyncMs: number;
  readonly #timeoutMs: number;
  readonly #drainMs: number;
  readonly #sources: EventSource[];
  readonly #leadership: Leadership | undefined;
  readonly #metrics: Metrics;
  readonly #logger: Logger;
  readonly #queueOptions: Omit<WorkQueueOptions, 'name' | 'metrics'>;

  #term: Term | undefined;
  /** Whether start() or stop() was called last. */
  #wanted = false;
  #lifecycle: Promise<void> = Promise.resolve();
  #resyncTimer: NodeJS.Timeout | undefined;
  #unsubscribe: (() => void) | undefined;
  /** reconcileNow callers waiting for a key's next reconcile to start. */
  readonly #pending = new Map<string, Waiter[]>();
  /** Reconciles still running (also ones abandoned after a timeout), by key. */
  readonly #running = new Map<string, Promise<void>>();

  constructor(options: ControllerOptions) {
    this.name = options.name;
    this.#reconciler = options.reconciler;
    this.#workers = Math.max(1, options.workers ?? 4);
    this.#resyncMs = (options.resyncSeconds ?? 300) * 1000;
    this.#timeoutMs = options.reconcileTimeoutMs ?? 120_000;
    this.#drainMs = options.drainTimeoutMs ?? 10_000;
    this.#sources = options.sources ?? [];
    this.#leadership = options.leadership;
    this.#metrics = options.metrics ?? new Metrics({ defaultMetrics: false });
    this.#logger = (options.logger ?? createLogger({ level: 'silent' })).child({ controller: options.name });
    this.#queueOptions = options.queue ?? {};
    this.#metrics.maxConcurrentReconciles.set({ controller: this.name }, this.#workers);
    this.#metrics.activeWorkers.set({ controller: this.name }, 0);
  }

  /** True while workers run (this replica leads). */
  get working(): boolean {
    return this.#term !== undefined;
  }

  /** The current term's queue (for metrics, tests and diagnostics). */
  get queue(): WorkQueue | undefined {
    return this.#term?.queue;
  }

  /** Starts sources and the periodic resync, then workers (now, or once leading). Idempotent. */
  start(): Promise<void> {
    if (this.#wanted) return this.#lifecycle;
    this.#wanted = true;
    // start and stop run one after another, so racing calls never interleave their steps.
    this.#lifecycle = this.#lifecycle
      .catch(() => {})
      .then(() => this.#start())
      .catch((error: unknown) => {
        this.#wanted = false;
        throw error;
      });
    return this.#lifecycle;
  }

  /** Stops everything; in-flight reconciles get `drainTimeoutMs` to finish. Idempotent. */
  stop(): Promise<void> {
    if (!this.#wanted) return this.#lifecycle.catch(() => {});
    this.#wanted = false;
    this.#lifecycle = this.#lifecycle.catch(() => {}).then(() => this.#stop());
    return this.#lifecycle;
  }

  async #start(): Promise<void> {
    // Sources first: a change between the first resync's listing and a source starting would be lost.
    const started: EventSource[] = [];
    try {
      for (const source of this.#sources) {
        await source.start(this);
        started.push(source);
      }
    } catch (error) {
      await Promise.allSettled(started.map((source) => source.stop()));
      throw error;
    }
    if (this.#resyncMs > 0) {
      this.#resyncTimer = setInterval(() => this.resync('periodic resync'), this.#resyncMs);
    }
    if (this.#leadership) {
      this.#unsubscribe = this.#leadership.onChange((leading) => this.#onLeadership(leading));
      if (this.#leadership.isLeader()) this.startWorkers();
    } else {
      this.startWorkers();
    }
  }

  async #stop(): Promise<void> {
    this.#unsubscribe?.();
    this.#unsubscribe = undefined;
    clearInterval(this.#resyncTimer);
    this.#resyncTimer = undefined;
    await this.stopWorkers({ drainMs: this.#drainMs, reason: 'controller stopped' });
    await Promise.allSettled(this.#sources.map((source) => source.stop()));
  }

  /** Begins a term: a fresh queue, N workers and a full resync. A no-op while working. */
  startWorkers(): void {
    if (this.#term) return;
    const queue = new WorkQueue({ ...this.#queueOptions, name: this.name, metrics: this.#metrics });
    const term: Term = {
      queue,
      abort: new AbortController(),
      workers: [],
      listing: false,
      listAgain: false,
      listFailures: 0,
      listRetry: undefined,
    };
    this.#term = term;
    for (let i = 0; i < this.#workers; i++) term.workers.push(this.#work(term));
    this.#logger.info({ workers: this.#workers }, 'workers started');
    this.resync('workers started');
  }

  /**
   * Ends the term. With `drainMs` 0 (leadership lost) every in-flight reconcile's signal is
   * aborted synchronously, before this returns its promise; otherwise they get `drainMs` first.
   * Queued keys are dropped: the next term starts with a full resync.
   */
  async stopWorkers(options: { drainMs?: number; reason?: string } = {}): Promise<void> {
    const term = this.#term;
    if (!term) return;
    this.#term = undefined;
    const reason = options.reason ?? 'workers stopped';
    clearTimeout(term.listRetry);
    if ((options.drainMs ?? 0) > 0) await term.queue.shutDown(options.drainMs);
    term.abort.abort(new NotLeaderError(reason));
    void term.queue.shutDown(0);
    this.#rejectPending(new NotLeaderError(reason));
    this.#logger.info({ reason }, 'workers stopped');
    await Promise.all(term.workers);
  }

  /**
   * WorldEventSink: a change to this key; served before resync keys. The reconciler forgets what
   * it cached about the key first (also while not leading); the key is dropped while not leading.
   */
  enqueue(key: string): void {
    this.#reconciler.invalidate?.(key);
    this.#term?.queue.add(key, 'live');
  }

  /** WorldEventSink: events may have been missed; queue every key at resync priority. */
  resync(reason: string): void {
    const term = this.#term;
    if (!term) return;
    if (term.listing) {
      term.listAgain = true; // one more listing after the current one covers this request
      return;
    }
    term.listing = true;
    void this.#list(term, reason);
  }

  /**
   * Queues the key at live priority and resolves when a reconcile of it that started after this
   * call has finished (whatever its outcome: status says why). Rejects with NotLeaderError
   * when this replica does not reconcile, or stops doing so before that.
   */
  reconcileNow(key: string): Promise<Date> {
    this.#reconciler.invalidate?.(key);
    const term = this.#term;
    if (!term) return Promise.reject(new NotLeaderError());
    return new Promise<Date>((resolve, reject) => {
      const waiters = this.#pending.get(key) ?? [];
      waiters.push({ resolve, reject });
      this.#pending.set(key, waiters);
      term.queue.add(key, 'live');
    });
  }

  #onLeadership(leading: boolean): void {
    if (leading) {
      this.startWorkers();
    } else {
      // Synchronous up to the abort: nothing this replica started may act after this line.
      void this.stopWorkers({ drainMs: 0, reason: 'leadership lost' });
    }
  }

  async #list(term: Term, reason: string): Promise<void> {
    for (;;) {
      term.listAgain = false;
      try {
        const keys = await this.#reconciler.listKeys();
        if (term.abort.signal.aborted) break;
        for (const key of keys) term.queue.add(key, 'resync');
        term.listFailures = 0;
        this.#logger.debug({ reason, keys: keys.length }, 'resync queued');
      } catch (error) {
        if (term.abort.signal.aborted) break;
        // A failed listing after a gap would leave missed changes until the next periodic resync.
        const delay = Math.min(MAX_LIST_RETRY_MS, 1000 * 2 ** term.listFailures++);
        this.#logger.warn({ err: error, reason, retryInMs: delay }, 'resync could not list keys');
        clearTimeout(term.listRetry);
        term.listRetry = setTimeout(() => this.resync(`retry: ${reason}`), delay);
        term.listRetry.unref();
      }
      if (!term.listAgain) break;
    }
    term.listing = false;
  }

  async #work(term: Term): Promise<void> {
    for (;;) {
      const item = await term.queue.get();
      if (!item) return;
      try {
        await this.#process(term, item);
      } catch (error) {
        // #process handles reconcile errors itself; this is a bug in the bookkeeping. Keep the worker.
        this.#logger.error({ err: error, key: item.key }, 'worker bookkeeping failed');
        term.queue.done(item.key);
      }
    }
  }

  async #process(term: Term, { key, priority }: QueueItem): Promise<void> {
    // A reconcile abandoned in an earlier term may still run (it ignored its signal). Never
    // overlap it on the same key, and never block this worker on it: look again once it settles.
    const earlier = this.#running.get(key);
    if (earlier) {
      term.queue.done(key);
      void earlier.then(() => term.queue.add(key, priority));
      return;
    }

    const abort = new AbortController();
    const onTermEnd = (): void => abort.abort(term.abort.signal.reason);
    term.abort.signal.addEventListener('abort', onTermEnd, { once: true });
    const timer = setTimeout(() => abort.abort(new ReconcileTimeoutError(key, this.#timeoutMs)), this.#timeoutMs);
    const waiters = this.#takePending(key);
    const labels = { controller: this.name };
    const startedAt = performance.now();
    this.#metrics.activeWorkers.inc(labels);

    // The key stays in the queue's processing set until the reconcile really settles, even if
    // the worker stops waiting for it (timeout): two reconciles of one key never overlap.
    const running = Promise.resolve().then(() => this.#reconciler.reconcile(key, abort.signal));
    const settled = running.then(
      () => undefined,
      () => undefined,
    );
    this.#running.set(key, settled);
    void settled.then(() => {
      clearTimeout(timer);
      term.abort.signal.removeEventListener('abort', onTermEnd);
      if (this.#running.get(key) === settled) this.#running.delete(key);
      term.queue.done(key);
    });

    try {
      const result = await raceAbort(running, abort.signal);
      this.#succeeded(term.queue, key, priority, result ?? undefined);
    } catch (error) {
      if (!term.abort.signal.aborted) this.#failed(term.queue, key, priority, error);
    } finally {
      clearTimeout(timer);
      this.#metrics.activeWorkers.dec(labels);
      this.#metrics.reconcileTime.observe(labels, (performance.now() - startedAt) / 1000);
    }
    if (term.abort.signal.aborted) {
      // Abandoned: workers stopped mid-reconcile, so it did not finish for reconcileNow callers.
      this.#logger.debug({ key }, 'reconcile abandoned: workers stopped');
      for (const waiter of waiters) waiter.reject(term.abort.signal.reason as Error);
    } else {
      const at = new Date();
      for (const waiter of waiters) waiter.resolve(at);
    }
  }

  #succeeded(queue: WorkQueue, key: string, priority: Priority, result: ReconcileResult | undefined): void {
    const labels = { controller: this.name };
    if (result?.requeueAfterMs !== undefined && result.requeueAfterMs > 0) {
      queue.forget(key);
      queue.addAfter(key, result.requeueAfterMs, priority);
      this.#metrics.reconcileTotal.inc({ ...labels, result: 'requeue_after' });
    } else if (result?.requeue) {
      queue.addRateLimited(key, priority);
      this.#metrics.reconcileTotal.inc({ ...labels, result: 'requeue' });
    } else {
      queue.forget(key);
      this.#metrics.reconcileTotal.inc({ ...labels, result: 'success' });
    }
  }

  #failed(queue: WorkQueue, key: string, priority: Priority, error: unknown): void {
    const labels = { controller: this.name };
    this.#metrics.reconcileTotal.inc({ ...labels, result: 'error' });
    this.#metrics.reconcileErrors.inc(labels);
    if (isTerminal(error)) {
      // Retrying cannot help; the next change to the key (or a resync) looks again.
      queue.forget(key);
      this.#logger.error({ err: error, key }, 'reconcile failed terminally; not retrying');
      return;
    }
    queue.addRateLimited(key, priority);
    this.#logger.warn({ err: error, key, retries: queue.numRequeues(key) }, 'reconcile failed; backing off');
  }

  #takePending(key: string): Waiter[] {
    const waiters = this.#pending.get(key) ?? [];
    this.#pending.delete(key);
    return waiters;
  }

  #rejectPending(error: Error): void {
    for (const waiters of this.#pending.values()) for (const waiter of waiters) waiter.reject(error);
    this.#pending.clear();
  }
}

/** True when the error or any error in its `cause` chain is a TerminalError. */
export function isTerminal(error: unknown): boolean {
  for (let current = error, depth = 0; current instanceof Error && depth < 10; current = current.cause, depth++) {
    if (current instanceof TerminalError) return true;
  }
  return false;
}

/** Settles like `promise`, or rejects with the signal's reason as soon as it aborts. */
function raceAbort<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason as Error);
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(signal.reason as Error);
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(
      (value) => {
        signal.removeEventListener('abort', onAbort);
        resolve(value);
      },
      (error: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(error as Error);
      },
    );
  });
}
