import type { Metrics } from '../observability/metrics.js';

/**
 * A work queue of keys in the style of client-go's `util/workqueue`, with no knowledge of what
 * a key means. Glossary:
 *
 * - dirty: keys that need processing. A key is in it at most once, so a burst of changes to
 *   one key costs one reconcile, not one per change.
 * - processing: keys a worker holds. A key is never handed to two workers at once; a key added
 *   while it is processed stays dirty and is handed out again after `done(key)`, so the change
 *   that arrived mid-reconcile is not lost.
 * - waiting: keys scheduled by `addAfter`, added when their time comes.
 * - priority: `live` (a change happened) is served before `resync` (the periodic safety net).
 */

export type Priority = 'live' | 'resync';

export interface QueueItem {
  key: string;
  /** The priority the key was queued with; a retry keeps it. */
  priority: Priority;
}

/** How long to wait before a key that failed is tried again. */
export interface RateLimiter {
  /** The delay for this key's next retry; counts one more failure. */
  when(key: string): number;
  /** The key succeeded: its next failure starts from the base delay again. */
  forget(key: string): void;
  /** Failures counted since the last `forget`. */
  retries(key: string): number;
}

/** Per-key exponential backoff: base, 2 x base, 4 x base ... capped at max. */
export class ExponentialBackoff implements RateLimiter {
  readonly #failures = new Map<string, number>();

  constructor(
    private readonly baseMs = 5,
    private readonly maxMs = 1_000_000,
  ) {}

  when(key: string): number {
    const failures = this.#failures.get(key) ?? 0;
    this.#failures.set(key, failures + 1);
    // 2 ** 1024 is Infinity; past ~60 doublings every sane base is over the cap anyway.
    if (failures > 60) return this.maxMs;
    return Math.min(this.maxMs, this.baseMs * 2 ** failures);
  }

  forget(key: string): void {
    this.#failures.delete(key);
  }

  retries(key: string): number {
    return this.#failures.get(key) ?? 0;
  }
}

/**
 * An overall token bucket shared by all keys: `burst` retries at once, then `qps` per second.
 * Like golang.org/x/time/rate's Reserve, a reservation may drive the balance negative and is
 * told how long until its token exists, so callers are spaced out rather than refused.
 */
export class TokenBucket {
  #tokens: number;
  #updatedAt: number;

  constructor(
    private readonly qps = 10,
    private readonly burst = 100,
    private readonly now: () => number = () => performance.now(),
  ) {
    this.#tokens = burst;
    this.#updatedAt = now();
  }

  /** Takes one token; returns how many ms until it is actually available (0 if now). */
  reserve(): number {
    const now = this.now();
    this.#tokens = Math.min(this.burst, this.#tokens + ((now - this.#updatedAt) / 1000) * this.qps);
    this.#updatedAt = now;
    this.#tokens -= 1;
    return this.#tokens >= 0 ? 0 : (-this.#tokens / this.qps) * 1000;
  }
}

/** controller-runtime's default: the larger of the per-key backoff and the overall bucket. */
export class DefaultRateLimiter implements RateLimiter {
  readonly #backoff: ExponentialBackoff;
  readonly #bucket: TokenBucket;

  constructor(options: RateLimiterOptions = {}, now: () => number = () => performance.now()) {
    this.#backoff = new ExponentialBackoff(options.baseDelayMs ?? 5, options.maxDelayMs ?? 1_000_000);
    this.#bucket = new TokenBucket(options.qps ?? 10, options.burst ?? 100, now);
  }

  when(key: string): number {
    // Both are asked, as client-go's MaxOfRateLimiter does: a retry always takes a token.
    const perKey = this.#backoff.when(key);
    return Math.max(perKey, this.#bucket.reserve());
  }

  forget(key: string): void {
    this.#backoff.forget(key);
  }

  retries(key: string): number {
    return this.#backoff.retries(key);
  }
}

export interface RateLimiterOptions {
  /** First retry delay (default 5 ms, controller-runtime's). */
  baseDelayMs?: number;
  /** Longest retry delay (default 1000 s). */
  maxDelayMs?: number;
  /** Overall retries per second once the burst is spent (default 10). */
  qps?: number;
  /** Retries allowed at once (default 100). */
  burst?: number;
}

export interface WorkQueueOptions extends RateLimiterOptions {
  /** The `name` label of the workqueue_* metrics. */
  name: string;
  metrics?: Metrics | undefined;
  /** Replaces the default backoff + bucket (the options above are then ignored). */
  rateLimiter?: RateLimiter;
  /**
   * A resync key that has waited this long is served in turn with live keys (default 5 s).
   * controller-runtime's priority queue always serves higher priorities first, so steady live
   * traffic starves low-priority keys forever (kubernetes-sigs/controller-runtime#3496); aging
   * bounds how long the safety net can be put off.
   */
  resyncAgingMs?: number;
  /** Monotonic clock in ms (tests with fake timers need nothing: performance.now is faked). */
  now?: () => number;
}

interface DirtyEntry {
  priority: Priority;
  /** When the key became dirty: queue latency and resync aging are measured from here. */
  addedAt: number;
}

interface Waiting {
  at: number;
  priority: Priority;
  timer: NodeJS.Timeout;
}

/** How often in-flight work is reported (client-go's unfinished-work period). */
const UNFINISHED_WORK_PERIOD_MS = 500;

export class WorkQueue {
  readonly name: string;
  readonly #metrics: Metrics | undefined;
  readonly #limiter: RateLimiter;
  readonly #agingMs: number;
  readonly #now: () => number;

  readonly #dirty = new Map<string, DirtyEntry>();
  /** Key -> when a worker took it. */
  readonly #processing = new Map<string, number>();
  // Sets keep insertion order, so each is a FIFO with O(1) removal (for priority upgrades).
  readonly #live = new Set<string>();
  readonly #resync = new Set<string>();
  readonly #waiting = new Map<string, Waiting>();
  readonly #getters: Array<(item: QueueItem | undefined) => void> = [];
  readonly #drainListeners = new Set<() => void>();
  #lastServed: Priority = 'live';
  #shuttingDown = false;
  #unfinishedTimer: NodeJS.Timeout | undefined;

  constructor(options: WorkQueueOptions) {
    this.name = options.name;
    this.#metrics = options.metrics;
    this.#now = options.now ?? (() => performance.now());
    this.#limiter = options.rateLimiter ?? new DefaultRateLimiter(options, this.#now);
    this.#agingMs = options.resyncAgingMs ?? 5_000;
    this.#updateDepth();
  }

  /** Keys waiting for a worker (dirty and not being processed). */
  get length(): number {
    return this.#live.size + this.#resync.size;
  }

  get processing(): number {
    return this.#processing.size;
  }

  get shuttingDown(): boolean {
    return this.#shuttingDown;
  }

  /** Marks the key dirty. A key already queued is not queued twice; `live` upgrades a `resync` key. */
  add(key: string, priority: Priority = 'live'): void {
    if (this.#shuttingDown) return;
    const entry = this.#dirty.get(key);
    if (entry) {
      if (priority === 'live' && entry.priority === 'resync') {
        entry.priority = 'live';
        if (this.#resync.delete(key)) this.#live.add(key);
      }
      return;
    }
    this.#metrics?.workqueueAdds.inc({ name: this.name });
    this.#dirty.set(key, { priority, addedAt: this.#now() });
    this.#updateDepth();
    if (this.#processing.has(key)) return; // queued again by done()
    this.#lane(priority).add(key);
    this.#dispatch();
  }

  /** Adds the key once `delayMs` has passed; of two pending delays for one key the earlier wins. */
  addAfter(key: string, delayMs: number, priority: Priority = 'live'): void {
    if (this.#shuttingDown) return;
    if (delayMs <= 0) {
      this.add(key, priority);
      return;
    }
    const at = this.#now() + delayMs;
    const pending = this.#waiting.get(key);
    if (pending && pending.at <= at) {
      if (priority === 'live') pending.priority = 'live';
      return;
    }
    if (pending) clearTimeout(pending.timer);
    const timer = setTimeout(() => {
      const waiting = this.#waiting.get(key);
      this.#waiting.delete(key);
      this.add(key, waiting?.priority ?? priority);
    }, delayMs);
    timer.unref();
    this.#waiting.set(key, { at, priority, timer });
  }

  /** Adds the key after its backoff (and the overall bucket) allow: the key failed. */
  addRateLimited(key: string, priority: Priority = 'live'): void {
    if (this.#shuttingDown) return;
    this.#metrics?.workqueueRetries.inc({ name: this.name });
    this.addAfter(key, this.#limiter.when(key), priority);
  }

  /** The key succeeded: its backoff starts from the base again. */
  forget(key: string): void {
    this.#limiter.forget(key);
  }

  /** Failures counted for the key since it last succeeded. */
  numRequeues(key: string): number {
    return this.#limiter.retries(key);
  }

  /**
   * The next key to process; the caller must call `done(key)` afterwards. Resolves `undefined`
   * once the queue is shut down.
   */
  get(): Promise<QueueItem | undefined> {
    const item = this.#take();
    if (item) return Promise.resolve(item);
    if (this.#shuttingDown) return Promise.resolve(undefined);
    return new Promise((resolve) => this.#getters.push(resolve));
  }

  /** The worker finished the key; if it was added meanwhile it is queued again. */
  done(key: string): void {
    const startedAt = this.#processing.get(key);
    if (startedAt === undefined) return;
    this.#processing.delete(key);
    this.#metrics?.workqueueWorkDuration.observe({ name: this.name }, (this.#now() - startedAt) / 1000);
    const entry = this.#dirty.get(key);
    if (entry && !this.#shuttingDown) {
      this.#lane(entry.priority).add(key);
      this.#dispatch();
    }
    if (this.#processing.size === 0) {
      this.#updateUnfinishedWork();
      for (const listener of this.#drainListeners) listener();
    }
  }

  /**
   * Stops the queue: adds are ignored, queued and delayed keys are dropped, idle `get()` calls
   * resolve `undefined`. Resolves true once in-flight keys are done, false if `drainMs` passes
   * first. Dropping the backlog is safe because the controller is level-triggered: whoever
   * reconciles next starts with a full resync.
   */
  shutDown(drainMs = 0): Promise<boolean> {
    if (!this.#shuttingDown) {
      this.#shuttingDown = true;
      for (const waiting of this.#waiting.values()) clearTimeout(waiting.timer);
      this.#waiting.clear();
      this.#live.clear();
      this.#resync.clear();
      this.#dirty.clear();
      this.#updateDepth();
      for (const resolve of this.#getters.splice(0)) resolve(undefined);
    }
    if (this.#processing.size === 0) return Promise.resolve(true);
    return new Promise((resolve) => {
      const finish = (drained: boolean): void => {
        clearTimeout(deadline);
        this.#drainListeners.delete(onDrained);
        resolve(drained);
      };
      const onDrained = (): void => finish(true);
      const deadline = setTimeout(() => finish(false), drainMs);
      this.#drainListeners.add(onDrained);
    });
  }

  #lane(priority: Priority): Set<string> {
    return priority === 'live' ? this.#live : this.#resync;
  }

  /**
   * Live keys first. Once the oldest resync key has waited `resyncAgingMs`, live and resync
   * keys alternate: live work never waits behind more than one resync key, and the resync
   * backlog still drains under any live load.
   */
  #pick(): string | undefined {
    const live = first(this.#live);
    const resync = first(this.#resync);
    if (resync === undefined) return live;
    if (live === undefined) return resync;
    const addedAt = this.#dirty.get(resync)?.addedAt ?? this.#now();
    const aged = this.#now() - addedAt >= this.#agingMs;
    return aged && this.#lastServed === 'live' ? resync : live;
  }

  #take(): QueueItem | undefined {
    const key = this.#pick();
    if (key === undefined) return undefined;
    const entry = this.#dirty.get(key);
    const priority = entry?.priority ?? 'live';
    this.#lane(priority).delete(key);
    this.#dirty.delete(key);
    this.#lastServed = priority;
    const now = this.#now();
    this.#processing.set(key, now);
    if (entry) this.#metrics?.workqueueQueueDuration.observe({ name: this.name }, (now - entry.addedAt) / 1000);
    this.#updateDepth();
    this.#watchUnfinishedWork();
    return { key, priority };
  }

  /** Hands queued keys to workers blocked in `get()`. */
  #dispatch(): void {
    while (this.#getters.length > 0 && this.length > 0) {
      const item = this.#take();
      const resolve = this.#getters.shift();
      resolve?.(item);
    }
  }

  #updateDepth(): void {
    this.#metrics?.workqueueDepth.set({ name: this.name }, this.#dirty.size);
  }

  /** A hung worker shows up in these gauges before it finishes (work_duration only sees the end). */
  #watchUnfinishedWork(): void {
    if (!this.#metrics || this.#unfinishedTimer) return;
    this.#unfinishedTimer = setInterval(() => this.#updateUnfinishedWork(), UNFINISHED_WORK_PERIOD_MS);
    this.#unfinishedTimer.unref();
  }

  #updateUnfinishedWork(): void {
    if (!this.#metrics) return;
    const now = this.#now();
    let total = 0;
    let longest = 0;
    for (const startedAt of this.#processing.values()) {
      const seconds = (now - startedAt) / 1000;
      total += seconds;
      longest = Math.max(longest, seconds);
    }
    this.#metrics.workqueueUnfinishedWork.set({ name: this.name }, total);
    this.#metrics.workqueueLongestRunning.set({ name: this.name }, longest);
    if (this.#processing.size === 0 && this.#unfinishedTimer) {
      clearInterval(this.#unfinishedTimer);
      this.#unfinishedTimer = undefined;
    }
  }
}

function first(set: Set<string>): string | undefined {
  for (const value of set) return value;
  return undefined;
}
