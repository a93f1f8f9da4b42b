import type { ObservedRoute } from '../../proxy/route-table.js';
import type { ObservedContainer } from '../../runtime/runtime.js';
import type { ReconcileView } from '../../store/store.js';

/** What a full pass read about one customer, used once by that customer's next reconcile. */
export interface CachedCustomer {
  view: ReconcileView | undefined;
  containers: ObservedContainer[];
  route: ObservedRoute | undefined;
  port: number | undefined;
  nextPort?: number | undefined;
}

export interface WorldListing {
  views: Map<string, ReconcileView>;
  containers: ObservedContainer[];
  routes: ObservedRoute[];
  ports: Map<string, number>;
  /** Blue-green updates' second ports (slot `next`). */
  nextPorts?: Map<string, number>;
}

/**
 * A full resync lists each world once (one store query, one Docker list, one Caddy GET, one
 * port query) instead of once per customer, like controller-runtime's informer cache. Each
 * entry is used by one reconcile and then dropped; any live event for a customer invalidates
 * its entry first, so a reconcile never acts on a listing older than the event that woke it.
 */
export class WorldCache {
  readonly #entries = new Map<string, CachedCustomer>();
  #refreshing = 0;
  readonly #invalidatedDuringRefresh = new Set<string>();

  /** Lists the world through `load` and caches it per customer; returns every name seen. */
  async refresh(load: () => Promise<WorldListing>): Promise<string[]> {
    this.#refreshing++;
    try {
      const listing = await load();
      const byCustomer = new Map<string, CachedCustomer>();
      const entry = (name: string) => {
        let e = byCustomer.get(name);
        if (!e) {
          e = {
            view: listing.views.get(name),
            containers: [],
            route: undefined,
            port: listing.ports.get(name),
            nextPort: listing.nextPorts?.get(name),
          };
          byCustomer.set(name, e);
        }
        return e;
      };
      for (const name of listing.views.keys()) entry(name);
      for (const c of listing.containers) entry(c.customer).containers.push(c);
      for (const r of listing.routes) entry(r.customer).route = r;
      for (const name of listing.ports.keys()) entry(name);
      for (const name of listing.nextPorts?.keys() ?? []) entry(name);
      for (const [name, e] of byCustomer) {
        // An event that arrived while we were listing may be newer than the listing.
        if (!this.#invalidatedDuringRefresh.has(name)) this.#entries.set(name, e);
      }
      return [...byCustomer.keys()].sort();
    } finally {
      this.#refreshing--;
      if (this.#refreshing === 0) this.#invalidatedDuringRefresh.clear();
    }
  }

  invalidate(name: string): void {
    this.#entries.delete(name);
    if (this.#refreshing > 0) this.#invalidatedDuringRefresh.add(name);
  }

  take(name: string): CachedCustomer | undefined {
    const entry = this.#entries.get(name);
    this.#entries.delete(name);
    return entry;
  }

  get size(): number {
    return this.#entries.size;
  }
}
