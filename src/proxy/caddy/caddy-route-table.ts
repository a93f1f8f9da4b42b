import { canonicalJson } from '../../domain/canonical-json.js';
import { routeId } from '../../domain/naming.js';
import type { Guard } from '../../resilience/guard.js';
import type { DesiredRoute, ObservedRoute, RouteTable } from '../route-table.js';
import { CaddyAdminClient, CaddyAdminError, errorText, isMissingPath } from './admin-client.js';
import {
  buildRoute,
  buildServer,
  describeServerDrift,
  endsWithFallback,
  isObject,
  mergeTlsAutomation,
  parseRoute,
  fallbackRoute,
  FALLBACK_ROUTE_ID,
  routeIdOf,
  sameRouteJson,
  serverSettings,
  serverSettingsDrift,
  type ServerSettingDrift,
  type CaddyTlsOptions,
  type Json,
  type JsonObject,
} from './caddy-json.js';
import { Serial } from './serial.js';

/**
 * RouteTable on Caddy's admin API. Facts checked on Debian's Caddy 2.6.2 that shape this code:
 *
 * - `PATCH /id/<id>` replaces the object in place and answers 404 when the id is unknown.
 * - `PUT /id/<id>` *inserts* a second copy next to the first: never used here.
 * - 2.6.2 silently accepts duplicate `@id`s, so nothing here may create one: inserts happen only
 *   after a read said the id is absent, and all writes of one table are serialised.
 * - `PUT .../routes/0` inserts at the front of the array, but fails ("index out of bounds") on an
 *   empty array; `POST` to an array path appends.
 * - A path through a missing key answers "invalid traversal path" (400 on reads, 500 on writes).
 * - Every write reloads the whole config (about 22 ms at 200 routes) and, on 2.6.2, closes every
 *   proxied WebSocket (OpenClaw's UI keeps one open). So: write nothing when the canonical JSON
 *   already matches, and restore many routes with one write, never one request per route.
 * - ETag/If-Match exist since 2.5.2, but 2.6.2 sends the ETag as a trailer fetch cannot read.
 *
 * For production use Caddy >= 2.7: set `stream_close_delay` on reverse_proxy so config reloads
 * do not cut WebSockets at once, and run it with `caddy run --resume` so a restart keeps the
 * routes (the route sweep restores them either way).
 *
 * Routes whose `@id` does not carry our prefix are never modified or removed; customer routes
 * go to the front of the server's list so a foreign catch-all route cannot shadow them.
 */

export interface CaddyRouteTableOptions {
  /** CADDY_ADMIN_URL. */
  adminUrl: string;
  /** BLYTZ_CADDY_SERVER: the server block this controller owns. */
  serverName: string;
  /** BLYTZ_CADDY_LISTEN, e.g. `:80`. */
  listen: string;
  /** Wraps every admin API call (timeout, retries, breaker, metrics). Default: unguarded. */
  guard?: Guard;
  /** On-demand TLS for customer hosts; off when absent. */
  tls?: CaddyTlsOptions;
  /** Injected for tests; defaults to the global fetch. */
  fetch?: typeof fetch;
}

/** What one GET of our server block shows; the route sweep compares it with the desired routes. */
export interface RouteSnapshot {
  /** false when our server block is gone (Caddy restarted empty, or its config was replaced). */
  serverPresent: boolean;
  /** Every route of our server in order, foreign ones included, exactly as Caddy returned them. */
  routes: unknown[];
  /**
   * Settings of our server block (listen, automatic_https, TLS) that differ from what the
   * controller sets; empty when they match or the block is missing. Absent: the table has no
   * server block of its own (Ingresses).
   */
  serverDrift?: ServerSettingDrift[];
}

const CONFIG_ROOT = '/config';

export class CaddyRouteTable implements RouteTable {
  readonly #admin: CaddyAdminClient;
  readonly #serverName: string;
  readonly #listen: string;
  readonly #tls: CaddyTlsOptions | undefined;
  readonly #serial = new Serial();

  constructor(options: CaddyRouteTableOptions) {
    this.#admin = new CaddyAdminClient({
      adminUrl: options.adminUrl,
      ...(options.guard ? { guard: options.guard } : {}),
      ...(options.fetch ? { fetch: options.fetch } : {}),
    });
    this.#serverName = options.serverName;
    this.#listen = options.listen;
    this.#tls = options.tls;
  }

  /** The route JSON `ensure` writes for a desired route (exposed for the sweep's comparison). */
  routeJson(route: DesiredRoute): JsonObject {
    return buildRoute(route);
  }

  ensureServer(): Promise<void> {
    return this.#serial.run(async () => {
      await this.#ensureServerLocked([]);
    });
  }

  /** One GET of our server block. */
  async snapshot(): Promise<RouteSnapshot> {
    const server = await this.#readServer();
    if (!server) return { serverPresent: false, routes: [], serverDrift: [] };
    const routes = server['routes'];
    return {
      serverPresent: true,
      routes: Array.isArray(routes) ? (routes as unknown[]) : [],
      serverDrift: serverSettingsDrift(server, serverSettings(this.#listen, this.#tls)),
    };
  }

  /** Our server block as Caddy has it, or undefined when it (or the config above it) is missing. */
  async #readServer(): Promise<Record<string, unknown> | undefined> {
    const res = await this.#admin.request({ operation: 'getServer', method: 'GET', path: this.#serverPath(), accept: [400] });
    if (res.status !== 200) {
      if (isMissingPath(res)) return undefined;
      throw new CaddyAdminError('GET', this.#serverPath(), res.status, errorText(res.body));
    }
    return isObject(res.body) ? res.body : undefined;
  }

  /**
   * Whether Caddy holds our server block as configured (`blytz doctor`): present, its settings
   * as the controller sets them, the 404 fallback last. Never throws: an unreachable Caddy is
   * a failed check with the reason.
   */
  async checkServer(): Promise<{ ok: boolean; message: string }> {
    const name = `server block "${this.#serverName}"`;
    let snap: RouteSnapshot;
    try {
      snap = await this.snapshot();
    } catch (error) {
      return { ok: false, message: `${name} could not be read: ${(error as Error).message}` };
    }
    const repair = 'the route sweep puts it back (BLYTZ_ROUTE_SWEEP_SECONDS)';
    if (!snap.serverPresent) return { ok: false, message: `${name} is missing in Caddy; ${repair}` };
    if (snap.serverDrift && snap.serverDrift.length > 0) {
      return {
        ok: false,
        message: `${name} differs from the configuration: ${describeServerDrift(snap.serverDrift)}; ${repair}`,
      };
    }
    if (!endsWithFallback(snap.routes)) {
      return { ok: false, message: `${name}: the 404 fallback route is missing, doubled or not last; ${repair}` };
    }
    return { ok: true, message: `${name} listens on ${this.#listen} as configured, 404 fallback last` };
  }

  async list(): Promise<ObservedRoute[]> {
    const { routes } = await this.snapshot();
    return routes.map(parseRoute).filter((r): r is ObservedRoute => r !== undefined);
  }

  /** One GET of the route by its `@id` (Caddy indexes them), not of the whole server block. */
  async get(customer: string): Promise<ObservedRoute | undefined> {
    const path = `/id/${encodeURIComponent(routeId(customer))}`;
    const res = await this.#admin.request({ operation: 'getRoute', method: 'GET', path, accept: [404] });
    if (res.status !== 200) return undefined;
    const route = parseRoute(res.body);
    return route?.customer === customer ? route : undefined;
  }

  ensure(route: DesiredRoute): Promise<'created' | 'replaced' | 'unchanged'> {
    return this.#serial.run(async () => {
      const desired = buildRoute(route);
      const path = `/id/${encodeURIComponent(routeId(route.customer))}`;
      const current = await this.#admin.request({ operation: 'getRoute', method: 'GET', path, accept: [404] });
      if (current.status === 200) {
        if (sameRouteJson(current.body, desired)) return 'unchanged';
        const patched = await this.#admin.request({
          operation: 'replaceRoute',
          method: 'PATCH',
          path,
          body: desired,
          accept: [404],
        });
        if (patched.status === 200) return 'replaced';
        // Removed between our read and our write (by hand): insert it afresh.
      }
      await this.#insertLocked(desired);
      return 'created';
    });
  }

  /**
   * Creates or replaces many routes with one write (one PATCH of the routes array, or, when our
   * server block is missing, one write creating it with the routes inside). Foreign routes keep
   * their content and order; our routes not named here are kept; duplicates of a named `@id` are
   * dropped. `written` counts routes created or replaced; 0 means nothing was written.
   */
  ensureMany(routes: DesiredRoute[]): Promise<{ written: number }> {
    return this.#serial.run(async () => {
      const desired = new Map<string, JsonObject>();
      for (const route of routes) {
        const id = routeId(route.customer);
        if (desired.has(id)) throw new Error(`ensureMany: customer ${route.customer} is listed twice`);
        desired.set(id, buildRoute(route));
      }
      let snap = await this.snapshot();
      if (!snap.serverPresent) {
        if (await this.#ensureServerLocked([...desired.values()])) return { written: desired.size };
        snap = await this.snapshot(); // someone else created it meanwhile: merge into it
      }
      const { merged, written } = mergeRoutes(snap.routes, desired);
      if (canonicalJson(merged) === canonicalJson(snap.routes)) return { written: 0 };
      const routesPath = `${this.#serverPath()}/routes`;
      const res = await this.#admin.request({
        operation: 'replaceRoutes',
        method: 'PATCH',
        path: routesPath,
        body: merged,
        accept: [400, 500],
      });
      if (res.status !== 200) {
        // Our server has no `routes` key at all (made by hand): create it.
        if (!isMissingPath(res)) throw new CaddyAdminError('PATCH', routesPath, res.status, errorText(res.body));
        await this.#admin.request({ operation: 'replaceRoutes', method: 'PUT', path: routesPath, body: merged });
      }
      return { written };
    });
  }

  remove(customer: string): Promise<boolean> {
    return this.#serial.run(async () => {
      const path = `/id/${encodeURIComponent(routeId(customer))}`;
      let removed = 0;
      // More than one pass only when duplicates exist (made outside this table): each DELETE
      // removes one copy; a 404 is no write, so the common case costs one extra cheap request.
      for (let i = 0; i < 100; i++) {
        const res = await this.#admin.request({ operation: 'removeRoute', method: 'DELETE', path, accept: [404] });
        if (res.status === 404) break;
        removed++;
      }
      return removed > 0;
    });
  }

  async ping(): Promise<void> {
    // Any answer from the admin API will do; a null config answers 400 for this path.
    await this.#admin.request({ operation: 'ping', method: 'GET', path: `${CONFIG_ROOT}/admin`, accept: [400] });
  }

  #serverPath(): string {
    return `${CONFIG_ROOT}/apps/http/servers/${encodeURIComponent(this.#serverName)}`;
  }

  /**
   * Inserts a route we just saw absent, at the front of the list. Not retried by the guard: a
   * retried insert whose first answer was lost would create a duplicate `@id`.
   *
   * `PUT .../routes/0` only works when the array has an element 0, and on a config without our
   * server 2.6.2 even creates the missing parents and then fails to decode them; so a cheap read
   * of element 0 decides first, and only the rare cases (empty array, no server) read more.
   */
  async #insertLocked(route: JsonObject): Promise<void> {
    const routesPath = `${this.#serverPath()}/routes`;
    const first = await this.#admin.request({ operation: 'getRoute', method: 'GET', path: `${routesPath}/0`, accept: [400] });
    if (first.status === 200) {
      await this.#admin.request({ operation: 'insertRoute', method: 'PUT', path: `${routesPath}/0`, body: route, retry: false });
      return;
    }
    if (!isMissingPath(first)) throw new CaddyAdminError('GET', `${routesPath}/0`, first.status, errorText(first.body));
    const server = await this.#readServer();
    if (!server) {
      if (await this.#ensureServerLocked([route])) return;
      // Created by someone else between our reads: it exists now, so this recursion ends.
      return this.#insertLocked(route);
    }
    await this.#admin.request(
      Array.isArray(server['routes'])
        ? { operation: 'insertRoute', method: 'POST', path: routesPath, body: route, retry: false } // appends to the empty array
        : { operation: 'insertRoute', method: 'PUT', path: routesPath, body: [route], retry: false }, // no routes key at all
    );
  }

  /**
   * Creates our server block (with `initialRoutes`) when missing, else brings its own settings
   * (listen, TLS) back to what they should be; then the TLS automation when TLS is on. Other
   * servers and apps are never written. Returns whether the server was created.
   */
  async #ensureServerLocked(initialRoutes: Json[]): Promise<boolean> {
    const appsRes = await this.#admin.request({
      operation: 'getApps',
      method: 'GET',
      path: `${CONFIG_ROOT}/apps`,
      accept: [400],
    });
    if (appsRes.status !== 200 && !isMissingPath(appsRes)) {
      throw new CaddyAdminError('GET', `${CONFIG_ROOT}/apps`, appsRes.status, errorText(appsRes.body));
    }
    // A traversal error here means Caddy's whole config is null (`caddy run` with no config).
    const root: Record<string, unknown> | null = appsRes.status === 200 ? { apps: appsRes.body } : null;
    const apps = isObject(root?.['apps']) ? (root['apps'] as Record<string, unknown>) : undefined;
    const servers = dig(apps, ['http', 'servers']);
    const existing = isObject(servers) ? servers[this.#serverName] : undefined;

    let created = false;
    if (!isObject(existing)) {
      await this.#writeAt(
        root,
        ['apps', 'http', 'servers', this.#serverName],
        buildServer(this.#listen, this.#tls, initialRoutes),
      );
      created = true;
    } else {
      for (const { key, found, want } of serverSettingsDrift(existing, serverSettings(this.#listen, this.#tls))) {
        const path = `${this.#serverPath()}/${key}`;
        // PATCH replaces what is there; PUT creates what is not. Not POST: on an array (listen)
        // it appends, which Caddy then refuses as a config ("cannot unmarshal array").
        const method = want === undefined ? 'DELETE' : found === undefined ? 'PUT' : 'PATCH';
        await this.#admin.request({ operation: 'updateServer', method, path, ...(want === undefined ? {} : { body: want }) });
      }
    }

    if (this.#tls) {
      const automation = dig(apps, ['tls', 'automation']);
      const merged = mergeTlsAutomation(automation, this.#tls);
      if (canonicalJson(automation) !== canonicalJson(merged)) {
        // Creating the server may just have created `apps` itself; `apps.tls` is untouched by it.
        const now = apps ? root : { apps: { http: {} } };
        await this.#writeAt(now, ['apps', 'tls', 'automation'], merged);
      }
    }
    return created;
  }

  /**
   * Sets `value` at `path` under /config, creating missing parents in the same single write:
   * PUT (create; fails if it exists) at the first missing key, with the rest nested inside.
   * `root` is what Caddy's config looked like (null: the whole config is null).
   */
  async #writeAt(root: Record<string, unknown> | null, path: string[], value: Json): Promise<void> {
    if (root === null) {
      await this.#admin.request({ operation: 'writeConfig', method: 'POST', path: `${CONFIG_ROOT}/`, body: nest(path, value) });
      return;
    }
    let node: unknown = root;
    for (let i = 0; i < path.length; i++) {
      const key = path[i] as string;
      const child = isObject(node) ? node[key] : undefined;
      const last = i === path.length - 1;
      if (last || !isObject(child)) {
        const at = `${CONFIG_ROOT}/${path
          .slice(0, i + 1)
          .map(encodeURIComponent)
          .join('/')}`;
        // A key present with a null value must be replaced (POST); an absent one is created
        // (PUT), which fails instead of clobbering what a concurrent writer just made.
        const method = isObject(node) && key in node ? 'POST' : 'PUT';
        await this.#admin.request({ operation: 'writeConfig', method, path: at, body: nest(path.slice(i + 1), value) });
        return;
      }
      node = child;
    }
  }
}

/**
 * Our desired routes merged into the current list: replaced in place, new ones at the front,
 * our 404 fallback last (exactly once).
 */
export function mergeRoutes(current: unknown[], desired: Map<string, JsonObject>): { merged: Json[]; written: number } {
  const seen = new Set<string>();
  const kept: Json[] = [];
  let written = 0;
  for (const route of current) {
    const id = routeIdOf(route);
    if (id === FALLBACK_ROUTE_ID) continue;
    const want = id === undefined ? undefined : desired.get(id);
    if (id === undefined || want === undefined) {
      kept.push(route as Json);
      continue;
    }
    if (seen.has(id)) continue; // a duplicate @id: drop it
    seen.add(id);
    if (!sameRouteJson(route, want)) written++;
    kept.push(want);
  }
  const added = [...desired].filter(([id]) => !seen.has(id)).map(([, route]) => route);
  return { merged: [...added, ...kept, fallbackRoute()], written: written + added.length };
}

function dig(value: unknown, path: string[]): unknown {
  let node = value;
  for (const key of path) node = isObject(node) ? node[key] : undefined;
  return node;
}

function nest(path: string[], value: Json): Json {
  return path.reduceRight<Json>((inner, key) => ({ [key]: inner }), value);
}
