import { canonicalJson } from '../../domain/canonical-json.js';
import { customerFromRouteId, routeId } from '../../domain/naming.js';
import type { DesiredRoute, ObservedRoute, RouteTarget } from '../route-table.js';

/**
 * The Caddy JSON this controller writes, built as data (never by string formatting, so a host
 * or body can never break out of its field), and the reverse: reading a route back into an
 * ObservedRoute. Pure functions, no I/O.
 *
 * Caddy 2.6.2 hands back exactly the JSON it was given (keys re-ordered), so "is the route
 * already right" is `canonicalJson(existing) === canonicalJson(buildRoute(desired))`.
 */

export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
export type JsonObject = { [key: string]: Json };

/**
 * A suspended customer's host answers 503, not 402. 503 says "this site is temporarily
 * unavailable": browsers show the page, crawlers and caches do not keep it, and uptime monitors
 * treat it as an outage rather than a client error. 402 is "reserved for future use" in RFC 9110,
 * has no agreed client behaviour, and would be wrong for suspensions that are not about payment
 * (an operator's `blytz suspend`).
 */
export const SUSPENDED_STATUS = 503;

export const SUSPENDED_BODY = [
  '<!doctype html>',
  '<html lang="en"><head><meta charset="utf-8"><title>Assistant suspended</title>',
  '<meta name="viewport" content="width=device-width, initial-scale=1"></head>',
  '<body style="font-family: system-ui, sans-serif; max-width: 32rem; margin: 4rem auto; padding: 0 1rem">',
  '<h1>Assistant suspended</h1>',
  '<p>This personal assistant is suspended. If it is yours, resume your subscription to bring it back; your workspace is kept.</p>',
  '</body></html>',
  '',
].join('\n');

function handleFor(target: RouteTarget): Json[] {
  if (target.kind === 'upstream') {
    return [{ handler: 'reverse_proxy', upstreams: [{ dial: target.dial }] }];
  }
  return [
    {
      handler: 'static_response',
      status_code: SUSPENDED_STATUS,
      // no-store: once the customer is resumed, nobody should keep seeing a cached "suspended".
      headers: { 'Content-Type': ['text/html; charset=utf-8'], 'Cache-Control': ['no-store'] },
      body: SUSPENDED_BODY,
    },
  ];
}

/**
 * One customer's route. `terminal: true` so no later route (a catch-all) also runs for this
 * host; the route itself is inserted at the front of the server's list (see caddy-route-table).
 */
export function buildRoute(route: DesiredRoute): JsonObject {
  return {
    '@id': routeId(route.customer),
    match: [{ host: [route.host] }],
    handle: handleFor(route.target),
    terminal: true,
  };
}

/**
 * The last route of our server block: a host that matches no customer (never signed up, or
 * cancelled) gets a plain 404 instead of Caddy's default empty 200. `_` cannot occur in a
 * customer name, so no customer route id can clash with it.
 */
export const FALLBACK_ROUTE_ID = 'blytz_fallback';

export function fallbackRoute(): JsonObject {
  return {
    '@id': FALLBACK_ROUTE_ID,
    handle: [
      {
        handler: 'static_response',
        status_code: 404,
        headers: { 'Content-Type': ['text/plain; charset=utf-8'], 'Cache-Control': ['no-store'] },
        body: 'No assistant lives at this address.\n',
      },
    ],
    terminal: true,
  };
}

/** Whether the routes end with our fallback, exactly as we write it, and hold it once. */
export function endsWithFallback(routes: unknown[]): boolean {
  return (
    canonicalJson(routes.at(-1)) === canonicalJson(fallbackRoute()) &&
    routes.filter((r) => routeIdOf(r) === FALLBACK_ROUTE_ID).length === 1
  );
}

export function sameRouteJson(existing: unknown, desired: JsonObject): boolean {
  return canonicalJson(existing) === canonicalJson(desired);
}

export function routeIdOf(route: unknown): string | undefined {
  if (route === null || typeof route !== 'object' || Array.isArray(route)) return undefined;
  const id = (route as Record<string, unknown>)['@id'];
  return typeof id === 'string' ? id : undefined;
}

/** Whether a route's `@id` carries our prefix (`blytz-<valid name>`); anything else is foreign. */
export function isOurRoute(route: unknown): boolean {
  const id = routeIdOf(route);
  return id !== undefined && customerFromRouteId(id) !== undefined;
}

/**
 * Reads one of our routes back. The target is recognised only when the handlers are exactly what
 * `buildRoute` writes for some target; anything else (a hand edit, an older page) is `unknown`,
 * which the controller treats as "wrong, replace it".
 */
export function parseRoute(route: unknown): ObservedRoute | undefined {
  const id = routeIdOf(route);
  const customer = id === undefined ? undefined : customerFromRouteId(id);
  if (id === undefined || customer === undefined) return undefined;
  const r = route as Record<string, unknown>;
  return { customer, id, hosts: hostsOf(r['match']), target: targetOf(r['handle']) };
}

function hostsOf(match: unknown): string[] {
  if (!Array.isArray(match)) return [];
  const hosts: string[] = [];
  for (const set of match) {
    const host = set !== null && typeof set === 'object' ? (set as Record<string, unknown>)['host'] : undefined;
    if (Array.isArray(host)) hosts.push(...host.filter((h): h is string => typeof h === 'string'));
  }
  return hosts;
}

function targetOf(handle: unknown): ObservedRoute['target'] {
  const canonical = canonicalJson(handle);
  if (canonical === canonicalJson(handleFor({ kind: 'suspended' }))) return { kind: 'suspended' };
  if (Array.isArray(handle) && handle.length === 1) {
    const upstreams = (handle[0] as Record<string, unknown> | null)?.['upstreams'];
    const dial = Array.isArray(upstreams) ? (upstreams[0] as Record<string, unknown> | undefined)?.['dial'] : undefined;
    if (typeof dial === 'string' && canonical === canonicalJson(handleFor({ kind: 'upstream', dial }))) {
      return { kind: 'upstream', dial };
    }
  }
  return { kind: 'unknown' };
}

/**
 * On-demand TLS for customer hosts (optional). Caddy asks `askUrl?domain=HOST` before it requests
 * a certificate during a TLS handshake, and only proceeds on 200 (src/http/caddy-ask.ts).
 */
export interface CaddyTlsOptions {
  /** e.g. `http://127.0.0.1:8080/api/caddy/ask`; must be reachable from Caddy. */
  askUrl: string;
  /**
   * Customer hosts are `<name>.<baseDomain>`. The on-demand automation policy covers only
   * `*.<baseDomain>`, so other servers' sites in a shared Caddy keep their own certificate
   * management (a catch-all on-demand policy would put them behind our ask endpoint, which
   * says no to them). Checked on 2.6.2: a host covered by an on-demand policy is not obtained
   * at load; an uncovered one is obtained eagerly, for every route, on every load.
   */
  baseDomain: string;
}

/** `@id` of our TLS automation policy. `_` cannot occur in a customer name, so no route id can clash. */
export const TLS_POLICY_ID = 'blytz_tls_on_demand';

/**
 * The settings of our server block that ensureServer owns (everything but `routes`).
 *
 * Without TLS, automatic HTTPS is disabled outright: Caddy otherwise turns any server that has
 * host matchers and does not listen on its http_port (80) into an HTTPS server ("Client sent an
 * HTTP request to an HTTPS server" on `:8081`), and starts obtaining a certificate for every
 * customer host at every config load (for `*.localhost` names even installing its local CA
 * into the system trust store). Checked on 2.6.2.
 *
 * With TLS: `tls_connection_policies: [{}]` turns TLS on for the listen address whatever its
 * port; `disable_redirects` because automatic HTTPS would otherwise also bind the http_port for
 * redirects, which in a shared Caddy belongs to whoever configured it. Add an HTTP->HTTPS
 * redirect server by hand if you want one.
 */
export function serverSettings(listen: string, tls: CaddyTlsOptions | undefined): JsonObject {
  if (!tls) return { listen: [listen], automatic_https: { disable: true } };
  return { listen: [listen], automatic_https: { disable_redirects: true }, tls_connection_policies: [{}] };
}

/** Keys of our server block that `serverSettings` may set; other keys there are left alone. */
export const SERVER_SETTING_KEYS = ['listen', 'automatic_https', 'tls_connection_policies'] as const;

/** One setting of our server block that differs from what the controller sets (`want` undefined: should be absent). */
export interface ServerSettingDrift {
  key: (typeof SERVER_SETTING_KEYS)[number];
  found: unknown;
  want: Json | undefined;
}

/**
 * The settings of our server block as Caddy has it that differ from `want` (serverSettings):
 * desired state like every route, so a listen address changed by hand (or a BLYTZ_CADDY_LISTEN
 * changed between two starts) is found and put back. Keys we do not set are not compared.
 */
export function serverSettingsDrift(server: Record<string, unknown>, want: JsonObject): ServerSettingDrift[] {
  return SERVER_SETTING_KEYS.filter((key) => canonicalJson(server[key]) !== canonicalJson(want[key])).map((key) => ({
    key,
    found: server[key],
    want: want[key],
  }));
}

/** `listen [":80"] (want [":8081"])`: a drift as one phrase for logs and `blytz doctor`. */
export function describeServerDrift(drift: ServerSettingDrift[]): string {
  const show = (value: unknown) => (value === undefined ? 'unset' : JSON.stringify(value));
  return drift.map((d) => `${d.key} ${show(d.found)} (want ${show(d.want)})`).join(', ');
}

export function buildServer(listen: string, tls: CaddyTlsOptions | undefined, routes: Json[]): JsonObject {
  return { ...serverSettings(listen, tls), routes: [...routes, fallbackRoute()] };
}

/**
 * `apps.tls.automation` with our on-demand policy first and the global ask set, keeping every
 * other policy as it was. In 2.6 the ask URL is global (`automation.on_demand.ask`): with TLS on,
 * Blytz owns it.
 */
export function mergeTlsAutomation(existing: unknown, tls: CaddyTlsOptions): JsonObject {
  const base = isObject(existing) ? (existing as JsonObject) : {};
  const policies = Array.isArray(base['policies']) ? base['policies'].filter((p) => routeIdOf(p) !== TLS_POLICY_ID) : [];
  const ours: JsonObject = { '@id': TLS_POLICY_ID, subjects: [`*.${tls.baseDomain}`], on_demand: true };
  const onDemand = isObject(base['on_demand']) ? (base['on_demand'] as JsonObject) : {};
  return { ...base, on_demand: { ...onDemand, ask: tls.askUrl }, policies: [ours, ...policies] };
}

export function isObject(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}
