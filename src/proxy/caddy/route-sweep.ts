import { canonicalJson } from '../../domain/canonical-json.js';
import { customerFromRouteId } from '../../domain/naming.js';
import type { EventSource, WorldEventSink } from '../../controller/event-source.js';
import type { DesiredRoute } from '../route-table.js';
import type { RouteSnapshot } from './caddy-route-table.js';
import { endsWithFallback, routeIdOf, type JsonObject } from './caddy-json.js';

/**
 * Caddy has no event stream (and the Ingress table watches none), so this source looks every
 * `intervalMs` (BLYTZ_ROUTE_SWEEP_SECONDS): one GET of our server's routes (or one list of our
 * Ingresses), compared with the desired routes, and only the customers
 * whose route is missing, wrong or orphaned are enqueued. The controller decides what to do
 * (an orphan's name is enqueued too; the reconciler removes the route when nobody wants it).
 *
 * One case is repaired here directly: our server block is gone (Caddy restarted without
 * `--resume`, or someone loaded a new config). Enqueueing every customer would mean one write
 * per route, each reloading the whole config; instead every desired route is restored with one
 * write, which also recreates the server block.
 */

/**
 * What the sweep needs of the route table (CaddyRouteTable and IngressRouteTable provide it):
 * routes as JSON keyed by `@id`, compared with `routeJson` of the desired ones.
 */
export interface SweepableRouteTable {
  snapshot(): Promise<RouteSnapshot>;
  routeJson(route: DesiredRoute): JsonObject;
  ensureMany(routes: DesiredRoute[]): Promise<{ written: number }>;
  /**
   * Whether the routes need one `ensureMany` write even without drift of any customer's route.
   * Default (Caddy): our 404 fallback is missing or not last. Ingresses: never.
   */
  needsRewrite?(routes: unknown[]): boolean;
}

export type DriftKind = 'route_missing' | 'route_wrong' | 'orphan_route';

export interface SweepResult {
  /** The server block was missing and has been recreated with every desired route. */
  restored: boolean;
  /** Routes written by this sweep itself: the restore, or collapsing duplicate `@id`s. */
  written: number;
  /** Customers enqueued, with why. */
  drift: { customer: string; kind: DriftKind }[];
}

export interface RouteSweepOptions {
  table: SweepableRouteTable;
  /** The routes the store wants right now (active: upstream; suspended: the page). */
  desiredRoutes(): Promise<DesiredRoute[]>;
  intervalMs: number;
  /** A failed sweep (Caddy down, store down); the next one runs on schedule. */
  onError?: (error: unknown) => void;
  /** Called after every sweep that found drift or restored routes (logging, metrics). */
  onSweep?: (result: SweepResult) => void;
}

export class RouteSweep implements EventSource {
  readonly #options: RouteSweepOptions;
  #sink: WorldEventSink | undefined;
  #timer: NodeJS.Timeout | undefined;
  #running: Promise<unknown> | undefined;
  #stopped = true;

  constructor(options: RouteSweepOptions) {
    this.#options = options;
  }

  async start(sink: WorldEventSink): Promise<void> {
    this.#sink = sink;
    this.#stopped = false;
    this.#schedule();
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
    await this.#running;
  }

  /** One comparison (and, for a missing server block, the restore). */
  async sweepOnce(sink: WorldEventSink | undefined = this.#sink): Promise<SweepResult> {
    if (!sink) throw new Error('RouteSweep.sweepOnce: no sink (call start, or pass one)');
    const { table } = this.#options;
    // Read the world first, then the desired state: a route the controller adds in between is
    // then at worst reported missing once more, never reported as an orphan.
    const snapshot = await table.snapshot();
    const desired = await this.#options.desiredRoutes();

    if (!snapshot.serverPresent) {
      const { written } = await table.ensureMany(desired);
      return this.#report({ restored: true, written, drift: [] });
    }

    const drift = compareRoutes(snapshot.routes, desired, (route) => table.routeJson(route));
    // Duplicate @ids (2.6.2 accepts them; only a hand edit or another writer makes them) cannot
    // be fixed by the controller's per-route ensure, which addresses one copy by id: collapse
    // them here, all in one write. Everything else is the controller's to decide.
    const duplicated = new Set(drift.filter((d) => d.duplicate).map((d) => d.customer));
    let written = 0;
    const rewrite = table.needsRewrite ? table.needsRewrite(snapshot.routes) : !endsWithFallback(snapshot.routes);
    if (duplicated.size > 0 || rewrite) {
      // One write also puts the 404 fallback back at the end when it went missing or moved.
      ({ written } = await table.ensureMany(desired.filter((route) => duplicated.has(route.customer))));
    }
    for (const { customer } of drift) if (!duplicated.has(customer)) sink.enqueue(customer);
    return this.#report({ restored: false, written, drift: drift.map(({ customer, kind }) => ({ customer, kind })) });
  }

  #report(result: SweepResult): SweepResult {
    if (result.restored || result.drift.length > 0) this.#options.onSweep?.(result);
    return result;
  }

  #schedule(): void {
    if (this.#stopped) return;
    // setTimeout after each sweep, not setInterval: a slow Caddy never gets overlapping sweeps.
    this.#timer = setTimeout(() => {
      this.#running = this.sweepOnce()
        .catch((error: unknown) => this.#options.onError?.(error))
        .finally(() => {
          this.#running = undefined;
          this.#schedule();
        });
    }, this.#options.intervalMs);
    this.#timer.unref();
  }
}

/**
 * Pure comparison of our routes in Caddy with the desired ones. A route is wrong when its JSON
 * differs in any way from what the table would write (target, host, a hand edit), or when its
 * `@id` occurs more than once.
 */
export function compareRoutes(
  routes: unknown[],
  desired: DesiredRoute[],
  routeJson: (route: DesiredRoute) => JsonObject,
): { customer: string; kind: DriftKind; duplicate: boolean }[] {
  const observed = new Map<string, unknown[]>();
  for (const route of routes) {
    const id = routeIdOf(route);
    const customer = id === undefined ? undefined : customerFromRouteId(id);
    if (customer === undefined) continue; // not ours
    observed.set(customer, [...(observed.get(customer) ?? []), route]);
  }
  const drift: { customer: string; kind: DriftKind; duplicate: boolean }[] = [];
  const wanted = new Set<string>();
  for (const route of desired) {
    wanted.add(route.customer);
    const found = observed.get(route.customer);
    if (!found) drift.push({ customer: route.customer, kind: 'route_missing', duplicate: false });
    else if (found.length > 1 || canonicalJson(found[0]) !== canonicalJson(routeJson(route))) {
      drift.push({ customer: route.customer, kind: 'route_wrong', duplicate: found.length > 1 });
    }
  }
  for (const customer of observed.keys()) {
    // Orphans with duplicates are fine to enqueue: remove() deletes every copy.
    if (!wanted.has(customer)) drift.push({ customer, kind: 'orphan_route', duplicate: false });
  }
  return drift;
}
