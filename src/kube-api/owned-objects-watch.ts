import type { KubeConfig } from '@kubernetes/client-node';
import { CUSTOMER_LABEL } from '../domain/naming.js';
import type { Logger } from '../observability/logger.js';
import type { EventSource, WorldEventSink } from '../controller/event-source.js';
import type { KubeObject } from './client.js';
import { ListWatch } from './list-watch.js';

/**
 * The world events of what the controller writes to Kubernetes, as the Docker event stream is
 * Docker's: a list/watch loop (`ListWatch`) on each kind written (the runtime's Deployments,
 * Services, Secrets, PVCs, NetworkPolicies; the Ingress table's Ingresses), filtered by our
 * labels, turning any change into "look at customer X again". A Service deleted or a Deployment
 * scaled behind the controller's back is repaired within a reconcile, not at the next resync.
 *
 * Events are hints, never state: the lists only fetch a resourceVersion (one item), and a 410
 * relist asks the sink for a resync. Our own writes come back as events too; reconciling them
 * finds nothing to do.
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
  /** Server-side watch timeout; the watch is simply reopened after it (default 25 s, see ListWatch). */
  watchTimeoutSeconds?: number;
}

export class OwnedObjectsWatch implements EventSource {
  readonly #options: OwnedObjectsWatchOptions;
  #loops: Array<ListWatch<KubeObject>> = [];

  constructor(options: OwnedObjectsWatchOptions) {
    this.#options = options;
  }

  /** Open watch connections (for tests and diagnostics). */
  get open(): number {
    return this.#loops.filter((loop) => loop.watching).length;
  }

  /** Returns at once: each kind lists and watches in the background (the controller's first pass covers the start). */
  start(sink: WorldEventSink): Promise<void> {
    if (this.#loops.length > 0) return Promise.resolve();
    this.#loops = this.#options.kinds.map(
      (kind) =>
        new ListWatch<KubeObject>({
          kubeConfig: this.#options.kubeConfig,
          what: kind.plural,
          path: kind.path,
          labelSelector: this.#options.labelSelector,
          list: async () => ({ metadata: (await kind.list()).metadata ?? {}, items: [] }),
          handler: {
            replace: () => {},
            event: (_type, object) => {
              const customer = object.metadata?.labels?.[CUSTOMER_LABEL];
              if (customer) sink.enqueue(customer);
            },
            resync: (reason) => sink.resync(reason),
          },
          logger: this.#options.logger,
          minBackoffMs: this.#options.minBackoffMs,
          maxBackoffMs: this.#options.maxBackoffMs,
          watchTimeoutSeconds: this.#options.watchTimeoutSeconds,
        }),
    );
    for (const loop of this.#loops) void loop.start();
    return Promise.resolve();
  }

  async stop(): Promise<void> {
    const loops = this.#loops;
    this.#loops = [];
    await Promise.all(loops.map((loop) => loop.stop()));
  }
}
