import { Watch, type KubeConfig } from '@kubernetes/client-node';
import type { Logger } from '../observability/logger.js';
import { reconnectDelayMs } from '../resilience/backoff.js';
import { httpStatusOf } from '../resilience/transient.js';
import type { KubeObject } from './client.js';

/**
 * One list/watch loop over a Kubernetes collection, as client-go's Reflector runs it; the
 * Customer source and the owned-objects watch both stand on it.
 *
 *   list ──► replace(items) ──► watch from the list's resourceVersion ──► event(type, object) ...
 *     ▲                               │ ends (server timeout, dropped connection, error)
 *     │                               ▼
 *     └── 410 Gone: relist, then resync   reopen from the last resourceVersion seen (events and
 *                                          bookmarks both move it), after a backoff on errors
 *
 * - Reopening from the last version replays everything that happened meanwhile, so a dropped
 *   connection loses nothing and needs no resync. Only a 410 Gone (the server compacted its
 *   history past our version: as an ERROR event in a 200 stream, or as the HTTP status) forces a
 *   fresh list, and after such a relist the handler is told to resync: changes may have been
 *   missed, and deletions in between are only seen by comparing the new list with the old.
 * - Failures (list or watch) back off with jittered exponential delays, reset by the next
 *   success. A watch that ends at once with nothing in it backs off too (no busy loop).
 * - Bookmarks (allowWatchBookmarks) keep the version fresh on a quiet collection. The watch asks
 *   the server to end it after `watchTimeoutSeconds` (default 25 s): client-node aborts a watch
 *   silent for 30 s, and kube-apiserver sends a bookmark just before its timeout.
 * - Handler calls run one at a time, in order; a handler that throws is logged and the loop goes
 *   on (handlers own their retries).
 */

export type WatchEventType = 'ADDED' | 'MODIFIED' | 'DELETED';

export interface ListWatchHandler<T extends KubeObject> {
  /** The complete current collection: after the first list and after every relist. */
  replace(items: T[]): Promise<void> | void;
  /** One change from the watch, in the order the server sent them. */
  event(type: WatchEventType, object: T): Promise<void> | void;
  /** Changes may have been missed (a relist after a 410): look at everything again. */
  resync(reason: string): void;
}

export interface ListWatchOptions<T extends KubeObject> {
  kubeConfig: KubeConfig;
  /** For logs: `customers`, `deployments`, ... */
  what: string;
  /** The collection's path, e.g. `/apis/apps/v1/namespaces/ns/deployments`. */
  path: string;
  /** Only objects with these labels are watched (the list must use the same selector). */
  labelSelector?: string | undefined;
  /** Lists the collection: its items and the list's resourceVersion. */
  list(): Promise<{ metadata?: { resourceVersion?: string }; items?: T[] }>;
  handler: ListWatchHandler<T>;
  logger?: Pick<Logger, 'info' | 'warn'> | undefined;
  /** Reconnect backoff: doubles from min to max, jittered ±50%. Defaults 500 ms .. 30 s. */
  minBackoffMs?: number | undefined;
  maxBackoffMs?: number | undefined;
  /** Server-side watch timeout (default 25 s, see above). */
  watchTimeoutSeconds?: number | undefined;
}

type Outcome = 'events' | 'empty' | 'expired';

export class ListWatch<T extends KubeObject> {
  readonly #options: ListWatchOptions<T>;
  readonly #watch: Watch;
  #running = false;
  #loop: Promise<void> | undefined;
  #abort: AbortController | undefined;
  #sleep: (() => void) | undefined;
  #resourceVersion: string | undefined;
  #failures = 0;
  /** Why the next successful list must be followed by a resync (a 410 lost our place). */
  #gap: string | undefined;
  #handled: Promise<void> = Promise.resolve();
  #synced = false;
  #watching = false;
  /** Lists done so far (for tests and diagnostics). */
  lists = 0;

  constructor(options: ListWatchOptions<T>) {
    this.#options = options;
    this.#watch = new Watch(options.kubeConfig);
  }

  /** True once a list has been handed to the handler. */
  get synced(): boolean {
    return this.#synced;
  }

  /** True while a watch connection is open. */
  get watching(): boolean {
    return this.#watching;
  }

  /** Resolves after the first list attempt (handled, or failed and left to the loop's retries). */
  async start(): Promise<void> {
    if (this.#running) return;
    this.#running = true;
    const first = await this.#list().then(
      () => true,
      (error: unknown) => {
        this.#failed('listing', error);
        return false;
      },
    );
    this.#loop = this.#run(first);
  }

  async stop(): Promise<void> {
    this.#running = false;
    this.#abort?.abort();
    this.#sleep?.();
    await this.#loop;
    await this.#handled;
  }

  async #run(listed: boolean): Promise<void> {
    let needList = !listed;
    if (needList) await this.#backoff();
    while (this.#running) {
      try {
        if (needList) {
          await this.#list();
          needList = false;
        }
        const openedAt = Date.now();
        const outcome = await this.#watchOnce();
        if (!this.#running) return;
        if (outcome === 'expired') {
          needList = true;
          this.#gap = `the ${this.#options.what} watch expired (410 Gone)`;
          this.#options.logger?.info({ kind: this.#options.what }, 'watch expired (410 Gone); relisting');
        } else if (outcome === 'empty' && Date.now() - openedAt < 1000) {
          await this.#backoff();
        } else {
          this.#failures = 0;
        }
      } catch (error) {
        if (!this.#running) return;
        if (httpStatusOf(error) === 410) {
          // Some servers refuse an expired version with an HTTP 410 instead of an ERROR event.
          needList = true;
          this.#gap = `the ${this.#options.what} watch expired (410 Gone)`;
          continue;
        }
        this.#failed(needList ? 'listing' : 'watching', error);
        await this.#backoff();
      }
    }
  }

  #failed(doing: string, error: unknown): void {
    this.#options.logger?.warn(
      { err: error, kind: this.#options.what },
      `${doing} ${this.#options.what} failed; retrying with backoff`,
    );
  }

  async #list(): Promise<void> {
    const list = await this.#options.list();
    this.lists += 1;
    await this.#enqueue(() => this.#options.handler.replace(list.items ?? []));
    this.#resourceVersion = list.metadata?.resourceVersion || undefined;
    this.#synced = true;
    this.#failures = 0;
    if (this.#gap !== undefined) {
      const reason = this.#gap;
      this.#gap = undefined;
      this.#options.handler.resync(reason);
    }
  }

  /** One watch connection until it ends; rejects on a failure worth a backoff. */
  async #watchOnce(): Promise<Outcome> {
    let received = false;
    let expired = false;
    let controller: AbortController | undefined;
    let finished = false;
    try {
      await new Promise<void>((resolve, reject) => {
        const done = (error: unknown) => {
          finished = true;
          // client-node aborts a watch after 30 s without data: on an open watch that is a quiet end.
          const quiet = controller !== undefined && (error as { name?: unknown } | null)?.name === 'TimeoutError';
          if (error && this.#running && !expired && !quiet) reject(error instanceof Error ? error : new Error(String(error)));
          else resolve();
        };
        const onEvent = (type: string, object: T & { code?: number }) => {
          if (type === 'ERROR') {
            if (object.code === 410) expired = true;
            else this.#options.logger?.warn({ status: object, kind: this.#options.what }, 'watch reported an error');
            return;
          }
          received = true;
          const rv = object.metadata?.resourceVersion;
          if (rv) this.#resourceVersion = rv;
          if (type === 'ADDED' || type === 'MODIFIED' || type === 'DELETED') {
            void this.#enqueue(() => this.#options.handler.event(type, object));
          }
        };
        const params = {
          allowWatchBookmarks: true,
          timeoutSeconds: this.#options.watchTimeoutSeconds ?? 25,
          ...(this.#options.labelSelector ? { labelSelector: this.#options.labelSelector } : {}),
          ...(this.#resourceVersion ? { resourceVersion: this.#resourceVersion } : {}),
        };
        this.#watch
          .watch(this.#options.path, params, onEvent, done)
          .then((opened) => {
            if (finished) return;
            controller = opened;
            this.#abort = opened;
            this.#watching = true;
            if (!this.#running) opened.abort();
          })
          .catch(done);
      });
    } finally {
      this.#watching = false;
      this.#abort = undefined;
      await this.#handled;
    }
    if (expired) return 'expired';
    return received ? 'events' : 'empty';
  }

  /** Handler calls in order, one at a time; a failure is logged, never stops the loop. */
  #enqueue(task: () => Promise<void> | void): Promise<void> {
    const next = this.#handled.then(task).catch((error: unknown) => {
      this.#options.logger?.warn({ err: error, kind: this.#options.what }, 'handling a watch event failed');
    });
    this.#handled = next;
    return next;
  }

  async #backoff(): Promise<void> {
    if (!this.#running) return;
    const delay = reconnectDelayMs(this.#failures, this.#options.minBackoffMs ?? 500, this.#options.maxBackoffMs ?? 30_000);
    this.#failures += 1;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(done, delay);
      function done(): void {
        clearTimeout(timer);
        resolve();
      }
      this.#sleep = done;
    });
    this.#sleep = undefined;
  }
}
