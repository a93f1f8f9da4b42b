import type { ObservedRoute, RouteTable } from '../../proxy/route-table.js';
import type { CustomerRuntime, ObservedContainer } from '../../runtime/runtime.js';
import type { ControllerStore, HostPorts, PoolBinding, PortSlot, ReconcileView } from '../../store/store.js';
import type { Workspaces } from '../../workspace/workspace.js';
import { boundContainers } from './bound-containers.js';
import type { Observed } from './plan.js';

/**
 * Observe, the first step of a reconcile: what the store wants (the customer's reconcile view)
 * and what the world has (containers by label, the route by `@id`, the port reservations, the
 * workspace marker). One customer is read on its own; a full resync lists each world once into
 * the `WorldCache`, and each reconcile that follows takes its own entry once.
 */

export interface WorldObserverDeps {
  store: Pick<ControllerStore, 'reconcileView' | 'reconcileViews'>;
  ports: Pick<HostPorts, 'find' | 'findNext' | 'all'>;
  runtime: Pick<CustomerRuntime, 'list' | 'listFor'>;
  routes: Pick<RouteTable, 'list' | 'get'>;
  workspaces: Pick<Workspaces, 'observe'>;
  /** When given, full passes list the world once and reconciles read from it. */
  cache?: WorldCache | undefined;
}

/** What a reconcile reads first: the customer from the store, its containers, and the full pass's entry it used (if any). */
export interface DesiredRead {
  view: ReconcileView | undefined;
  /** The customer's containers as the planner sees them (a claimed pool slot's through the binding). */
  containers: ObservedContainer[];
  /** As the runtime listed them: mapped again whenever the binding changes. */
  listed: ObservedContainer[];
  cached: CachedCustomer | undefined;
}

export class WorldObserver {
  readonly #deps: WorldObserverDeps;

  constructor(deps: WorldObserverDeps) {
    this.#deps = deps;
  }

  /** Every name the store or the world knows (orphans too), with the world cached per name. */
  async listKeys(): Promise<string[]> {
    const { store, runtime, routes, ports } = this.#deps;
    const load = async () => {
      const [views, containers, routeList, reservations, nextPorts] = await Promise.all([
        store.reconcileViews(),
        runtime.list(),
        routes.list(),
        ports.all(),
        ports.all('next'),
      ]);
      return { views, containers, routes: routeList, ports: reservations, nextPorts };
    };
    const cache = this.#deps.cache ?? new WorldCache();
    return cache.refresh(load);
  }

  /** A live event for this customer: whatever a full pass cached about it may be older. */
  invalidate(name: string): void {
    this.#deps.cache?.invalidate(name);
  }

  /**
   * The customer as the store wants it and its containers: from the last full pass (once), else
   * both read now, side by side.
   */
  async desiredAndContainers(name: string): Promise<DesiredRead> {
    const cached = this.#deps.cache?.take(name);
    if (cached) {
      const listed = cached.containers;
      return { view: cached.view, listed, containers: boundContainers(listed, cached.view?.binding), cached };
    }
    const [view, listed] = await Promise.all([this.#deps.store.reconcileView(name), this.#deps.runtime.listFor(name)]);
    return { view, listed, containers: boundContainers(listed, view?.binding), cached: undefined };
  }

  /** The customer's containers listed again (after a repair or a claim), seen through its binding as it is now. */
  async relist(name: string, read: DesiredRead): Promise<void> {
    read.listed = await this.#deps.runtime.listFor(name);
    read.containers = boundContainers(read.listed, read.view?.binding);
  }

  /**
   * The rest of the customer's world: the full pass's entry when `desiredAndContainers` used
   * one (the workspace is always read now), else read now (the host ports as the view read them,
   * when it did).
   */
  async world(name: string, read: DesiredRead): Promise<Observed> {
    const { cached, view } = read;
    // Mapped again from the listing: this reconcile's bind step may have changed the binding since.
    const containers = boundContainers(read.listed, view?.binding);
    if (!cached) return this.observe(name, view?.ports, containers, view?.binding);
    const { route, nextPort } = cached;
    const port = view?.ports?.current ?? cached.port;
    return { containers, route, port, nextPort, workspace: await this.#deps.workspaces.observe(name) };
  }

  /**
   * The customer's world, read now; its host ports as `known` says when given (the store's own
   * answers to this reconcile's port writes), else read from the store; its containers as given,
   * else listed.
   */
  async observe(
    name: string,
    known?: Partial<Record<PortSlot, number>>,
    listed?: ObservedContainer[],
    binding?: PoolBinding,
  ): Promise<Observed> {
    const { runtime, routes, ports, workspaces } = this.#deps;
    const [containers, route, port, nextPort, workspace] = await Promise.all([
      listed ?? runtime.listFor(name).then((found) => boundContainers(found, binding)),
      routes.get(name),
      known ? known.current : ports.find(name),
      known ? known.next : ports.findNext(name),
      workspaces.observe(name),
    ]);
    return { containers, route, port, nextPort, workspace };
  }
}

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
