import { canonicalJson } from '../../domain/canonical-json.js';
import { customerFromRouteId } from '../../domain/naming.js';
import type { Logger } from '../../observability/logger.js';
import type { Metrics } from '../../observability/metrics.js';
import type { EventSource, WorldEventSink } from '../../controller/event-source.js';
import type { DesiredRoute } from '../route-table.js';
import type { RouteSnapshot } from './caddy-route-table.js';
import { describeServerDrift, endsWithFallback, routeIdOf, type JsonObject } from './caddy-json.js';

/**
 * Caddy has no event stream (and the Ingress table watches none), so this source looks every
 * `intervalMs` (BLYTZ_ROUTE_SWEEP_SECONDS): one GET of our server's routes (or one list of our
 * Ingresses), compared with the desired routes, and only the customers
 * whose route is missing, wrong or orphaned are enqueued. The controller decides what to do
 * (an orphan's name is enqueued too; the reconciler removes the route when nobody wants it).
 *
 * What belongs to no customer is repaired here directly, and reported in the result:
 * - our server block is gone (Caddy restarted without `--resume`, or someone loaded a new
 *   config). Enqueueing every customer would mean one write per route, each reloading the whole
 *   config; instead every desired route is restored with one write, which also recreates the
 *   server block;
 * - the block's own settings (listen addresses, automatic HTTPS, TLS) differ from what the
 *   controller sets: edited by hand, or BLYTZ_CADDY_LISTEN changed since the block was made;
 * - our 404 fallback route is missing, doubled or not last.
 * The first sweep runs at start, so a changed setting is put right before the first interval.
 */

/**
 * What the sweep needs of the route table (CaddyRouteTable and IngressRouteTable provide it):
 * routes as JSON keyed by `@id`, compared with `routeJson` of the desired ones.
 */
export interface SweepableRouteTable {
  snapshot(): Promise<RouteSnapshot>;
  routeJson(route: DesiredRoute): JsonObject;
  ensureMany(routes: DesiredRoute[]): Promise<{ written: number }>;
  /** Puts the server block's own settings back (RouteTable.ensureServer). */
  ensureServer(): Promise<void>;
  /**
   * Whether the routes need one `ensureMany` write even without drift of any customer's route.
   * Default (Caddy): our 404 fallback is missing or not last. Ingresses: never.
   */
  needsRewrite?(routes: unknown[]): boolean;
}

export type DriftKind = 'route_missing' | 'route_wrong' | 'orphan_route';

/** Drift in what the controller owns beside the customers' routes, repaired by the sweep itself. */
export type ServerDriftKind = 'server_block' | 'fallback_route';

export interface SweepResult {
  /** The server block was missing and has been recreated with every desired route. */
  restored: boolean;
  /** Routes written by this sweep itself: the restore, or collapsing duplicate `@id`s. */
  written: number;
  /** Customers enqueued, with why (the controller corrects and counts them). */
  drift: { customer: string; kind: DriftKind }[];
  /** What this sweep put back itself, and what it found (for the log line). */
  repaired: { kind: ServerDriftKind; detail: string }[];
}

export interface RouteSweepOptions {
  table: SweepableRouteTable;
  /** The routes the store wants right now (active: upstream; suspended: the page). */
  desiredRoutes(): Promise<DesiredRoute[]>;
  intervalMs: number;
  /** A failed sweep (Caddy down, store down); the next one runs on schedule. */
  onError?: (error: unknown) => void;
  /** Called after every sweep that found drift or repaired something itself (logging, metrics). */
  onSweep?: (result: SweepResult) => void;
  /** Called after every sweep that ran to the end (a failure streak is over). */
  onSuccess?: () => void;
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
    this.#schedule(0);
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
      const detail = `the server block was missing; recreated with ${written} route(s) in one write`;
      return this.#report({ restored: true, written, drift: [], repaired: [{ kind: 'server_block', detail }] });
    }

    const repaired: SweepResult['repaired'] = [];
    if (snapshot.serverDrift && snapshot.serverDrift.length > 0) {
      await table.ensureServer();
      repaired.push({ kind: 'server_block', detail: describeServerDrift(snapshot.serverDrift) });
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
      if (rewrite) repaired.push({ kind: 'fallback_route', detail: 'the 404 fallback route was missing, doubled or not last' });
    }
    for (const { customer } of drift) if (!duplicated.has(customer)) sink.enqueue(customer);
    const found = drift.map(({ customer, kind }) => ({ customer, kind }));
    return this.#report({ restored: false, written, drift: found, repaired });
  }

  #report(result: SweepResult): SweepResult {
    if (result.restored || result.drift.length > 0 || result.repaired.length > 0) this.#options.onSweep?.(result);
    this.#options.onSuccess?.();
    return result;
  }

  #schedule(delayMs = this.#options.intervalMs): void {
    if (this.#stopped) return;
    // setTimeout after each sweep, not setInterval: a slow Caddy never gets overlapping sweeps.
    this.#timer = setTimeout(() => {
      this.#running = this.sweepOnce()
        .catch((error: unknown) => this.#options.onError?.(error))
        .finally(() => {
          this.#running = undefined;
          this.#schedule();
        });
    }, delayMs);
    this.#timer.unref();
  }
}

/**
 * What a sweep that found or repaired something leaves in the metrics and the log (the
 * `onSweep` of `blytz serve`). Customers' drift is only enqueued here: the reconciler counts it
 * when it corrects it, so one deleted route counts once. What the sweep repaired itself (the
 * server block, the fallback route, every route of a restored block) is counted and logged here.
 */
export function reportSweep(
  result: SweepResult,
  metrics: Pick<Metrics, 'driftCorrections'>,
  logger: Pick<Logger, 'warn' | 'debug'>,
): void {
  if (result.restored) metrics.driftCorrections.inc({ kind: 'route_missing' }, result.written);
  for (const { kind, detail } of result.repaired) {
    metrics.driftCorrections.inc({ kind });
    logger.warn({ drift: kind }, `caddy: ${detail}; repaired`);
  }
  if (result.drift.length > 0) {
    const found = result.drift.map((d) => `${d.customer} (${d.kind.replace(/_/g, ' ')})`).join(', ');
    logger.debug({ drift: result.drift }, `route sweep found ${found}: enqueued`);
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
