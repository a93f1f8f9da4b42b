/**
 * The routes that make customers reachable at `<name>.<base>`. One interface, two real
 * implementations: Caddy's admin API (caddy/) and Kubernetes Ingresses (ingress/, with
 * BLYTZ_ROUTES=ingress); the controller imports only this file.
 */

/** Where a customer's host goes: their container, or the "assistant suspended" page. */
export type RouteTarget = { kind: 'upstream'; dial: string } | { kind: 'suspended' };

export interface DesiredRoute {
  customer: string;
  host: string;
  target: RouteTarget;
}

export interface ObservedRoute {
  customer: string;
  /** `blytz-<customer>`. */
  id: string;
  hosts: string[];
  /** `unknown` when the route's handlers are not a shape this controller writes. */
  target: RouteTarget | { kind: 'unknown' };
}

export interface RouteTable {
  /**
   * Creates the controller's own server block when it is missing, and puts its settings (listen
   * addresses, TLS) back when they differ from the configuration. Ingresses have none.
   */
  ensureServer(): Promise<void>;
  /** Every route with our `@id` prefix, with one read. */
  list(): Promise<ObservedRoute[]>;
  /** The customer's route, with one read (a reconcile of one customer needs no full list). */
  get(customer: string): Promise<ObservedRoute | undefined>;
  /** Creates or replaces in place the customer's route; writes nothing when it already matches. */
  ensure(route: DesiredRoute): Promise<'created' | 'replaced' | 'unchanged'>;
  /** Many routes at once in a single write (restoring an empty Caddy). */
  ensureMany(routes: DesiredRoute[]): Promise<{ written: number }>;
  /** Removes the customer's route; a missing route is not an error. */
  remove(customer: string): Promise<boolean>;
  /** Throws when the proxy's admin API does not answer. */
  ping(): Promise<void>;
}

export function sameTarget(a: RouteTarget | { kind: 'unknown' }, b: RouteTarget): boolean {
  if (a.kind !== b.kind) return false;
  return a.kind !== 'upstream' || (b.kind === 'upstream' && a.dial === b.dial);
}
