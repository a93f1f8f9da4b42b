import { Watch, type KubeConfig } from '@kubernetes/client-node';
import { CUSTOMER_LABEL } from '../../domain/naming.js';
import type { KubeObject } from '../../kubernetes/client.js';
import { httpStatusOf } from '../../resilience/transient.js';
import type { Logger } from '../../observability/logger.js';
import { reconnectDelayMs } from '../../resilience/backoff.js';
import type { EventSource, WorldEventSink } from '../../controller/event-source.js';

/**
 * The Kubernetes runtime's world events, as the Docker event stream is Docker's: a watch on each
 * kind the runtime owns (Deployments, Services, Secrets, PersistentVolumeClaims), filtered by our
 * labels, turning any change into "look at customer X again". A Service deleted or a Deployment
 * scaled behind the controller's back is repaired within a reconcile, not at the next resync.
 *
 * Events are hints, never state. Each kind: one list for a resourceVersion, then a watch from
 * it, reopened from the last version seen whenever it ends (the server closes healthy watches
 * after `timeoutSeconds`); after an error it is reopened with jittered exponential backoff. A
 * 410 Gone (history compacted) means changes may have been missed: relist and ask the sink for
 * a resync. Our own writes come back as events too; reconciling them finds nothing to do.
 */

export interface WatchedKind {
  /** For logs: `deployments`, `services`, ... */
  plural: string;
  /** The collection's path in the namespace, e.g. `/apis/apps/v1/namespaces/ns/deployments`. */
  path: string;
  /** Lists the collection (our labels) for its current resourceVersion. */
  list(): Promise<{ metadata?: { resourceVersion?: string } }>;
}

export interface OwnedObjectsWatchOptions {
  kubeConfig: KubeConfig;
  kinds: WatchedKind[];
  /** Our labels (the runtime's selector): only our objects are watched. */
  labelSelector: string;
  logger?: Pick<Logger, 'warn' | 'info'>;
  /** Reconnect backoff: doubles from min to max, jittered ±50%. Defaults 500 ms .. 30 s. */
  minBackoffMs?: number;
  maxBackoffMs?: number;
  /** Server-side watch timeout; the watch is simply reopened after it (default 25 s: see CustomerSourceOptions). */
  watchTimeoutSeconds?: number;
}

export class OwnedObjectsWatch implements EventSource {
  readonly #o: Required<Omit<OwnedObjectsWatchOptions, 'logger'>> & Pick<OwnedObjectsWatchOptions, 'logger'>;
  readonly #watch: Watch;
  #sink: WorldEventSink | undefined;
  #running = false;
  #loops: Array<Promise<void>> = [];
  readonly #aborts = new Set<AbortController>();
  readonly #sleeps = new Set<{ timer: NodeJS.Timeout | undefined; resolve: () => void }>();
  /** Open watch connections (for tests and diagnostics). */
  open = 0;

  constructor(options: OwnedObjectsWatchOptions) {
    this.#o = { minBackoffMs: 500, maxBackoffMs: 30_000, watchTimeoutSeconds: 25, ...options };
    this.#watch = new Watch(options.kubeConfig);
  }

  /** Returns at once: each kind lists and watches in the background (the controller's first pass covers the start). */
  start(sink: WorldEventSink): Promise<void> {
    if (this.#running) return Promise.resolve();
    this.#running = true;
    this.#sink = sink;
    this.#loops = this.#o.kinds.map((kind) => this.#watchKind(kind));
    return Promise.resolve();
  }

  async stop(): Promise<void> {
    this.#running = false;
    for (const controller of this.#aborts) controller.abort();
    for (const sleep of [...this.#sleeps]) sleep.resolve();
    await Promise.all(this.#loops);
  }

  async #watchKind(kind: WatchedKind): Promise<void> {
    let resourceVersion: string | undefined;
    let failures = 0;
    let gap: string | undefined;
    while (this.#running) {
      try {
        if (resourceVersion === undefined) {
          resourceVersion = (await kind.list()).metadata?.resourceVersion ?? '';
          if (gap) this.#sink?.resync(gap);
          gap = undefined;
        }
        const openedAt = Date.now();
        const outcome = await this.#watchOnce(kind, resourceVersion, (rv) => (resourceVersion = rv));
        if (outcome === 'expired') {
          resourceVersion = undefined;
          gap = `the ${kind.plural} watch expired (410 Gone)`;
          this.#o.logger?.info({ kind: kind.plural }, 'watch expired (410 Gone); relisting');
        } else if (outcome === 'empty' && Date.now() - openedAt < 1000) {
          // A server that ends every watch at once would otherwise make this a busy loop.
          await this.#backoff(failures++);
        } else {
          failures = 0;
        }
      } catch (error) {
        if (!this.#running) return;
        if (httpStatusOf(error) === 410) {
          // Some servers refuse an expired version with an HTTP 410 instead of an ERROR event.
          resourceVersion = undefined;
          gap = `the ${kind.plural} watch expired (410 Gone)`;
          continue;
        }
        // Reopening from the last version seen replays what happened meanwhile; only a 410
        // (handled above) loses events.
        this.#o.logger?.warn({ err: error, kind: kind.plural }, 'watching our objects failed; retrying with backoff');
        await this.#backoff(failures++);
      }
    }
  }

  /**
   * One watch connection until it ends: whether it delivered anything, expired, or gave
   * nothing. client-node aborts a watch after 30 s without data; on an open watch that is just a
   * quiet end (reopened from the last version), not a failure.
   */
  async #watchOnce(kind: WatchedKind, from: string, seen: (rv: string) => void): Promise<'events' | 'expired' | 'empty'> {
    let received = false;
    let expired = false;
    let controller: AbortController | undefined;
    let finished = false;
    try {
      await new Promise<void>((resolve, reject) => {
        const done = (error: unknown) => {
          finished = true;
          const quiet = controller !== undefined && (error as { name?: unknown } | null)?.name === 'TimeoutError';
          if (error && this.#running && !expired && !quiet) reject(error instanceof Error ? error : new Error(String(error)));
          else resolve();
        };
        const onEvent = (type: string, object: KubeObject & { code?: number }) => {
          if (type === 'ERROR') {
            if (object.code === 410) expired = true;
            else this.#o.logger?.warn({ status: object, kind: kind.plural }, 'watch reported an error');
            return;
          }
          received = true;
          const rv = object.metadata?.resourceVersion;
          if (rv) seen(rv);
          if (type === 'BOOKMARK') return;
          const customer = object.metadata?.labels?.[CUSTOMER_LABEL];
          if (customer) this.#sink?.enqueue(customer);
        };
        this.#watch
          .watch(
            kind.path,
            {
              labelSelector: this.#o.labelSelector,
              allowWatchBookmarks: true,
              timeoutSeconds: this.#o.watchTimeoutSeconds,
              ...(from ? { resourceVersion: from } : {}),
            },
            onEvent,
            done,
          )
          .then((c) => {
            if (finished) return;
            controller = c;
            this.#aborts.add(c);
            this.open += 1;
            if (!this.#running) c.abort();
          })
          .catch(done);
      });
    } finally {
      if (controller) {
        this.#aborts.delete(controller);
        this.open -= 1;
      }
    }
    if (expired) return 'expired';
    return received ? 'events' : 'empty';
  }

  async #backoff(failures: number): Promise<void> {
    if (!this.#running) return;
    const delay = reconnectDelayMs(failures, this.#o.minBackoffMs, this.#o.maxBackoffMs);
    await new Promise<void>((resolve) => {
      const sleep = {
        timer: undefined as NodeJS.Timeout | undefined,
        resolve: () => {
          clearTimeout(sleep.timer);
          this.#sleeps.delete(sleep);
          resolve();
        },
      };
      sleep.timer = setTimeout(sleep.resolve, delay);
      this.#sleeps.add(sleep);
    });
  }
}
