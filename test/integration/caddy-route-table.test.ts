import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FALLBACK_ROUTE_ID, fallbackRoute, SUSPENDED_BODY, SUSPENDED_STATUS } from '../../src/proxy/caddy/caddy-json.js';
import { CaddyRouteTable } from '../../src/proxy/caddy/caddy-route-table.js';
import { RouteSweep } from '../../src/proxy/caddy/route-sweep.js';
import type { DesiredRoute } from '../../src/proxy/route-table.js';
import type { WorldEventSink } from '../../src/controller/event-source.js';
import { waitFor } from '../support/wait-for.js';
import { startCaddy, type TestCaddy } from '../support/caddy.js';
import { getWithHost, type HostResponse } from '../support/http-get.js';

const SERVER = 'blytz';
const BASE = 'blytz.test';

let caddy: TestCaddy;
let upstream: http.Server;
let upstreamDial: string;
let otherUpstream: http.Server;
let otherDial: string;

/** Successful config writes (non-GET requests Caddy accepted), recorded as `METHOD path`. */
const writes: string[] = [];
const countingFetch: typeof fetch = async (input, init) => {
  const res = await fetch(input, init);
  const method = init?.method ?? 'GET';
  if (method !== 'GET' && res.ok) writes.push(`${method} ${new URL(String(input)).pathname}`);
  return res;
};

function table(): CaddyRouteTable {
  return new CaddyRouteTable({
    adminUrl: caddy.adminUrl,
    serverName: SERVER,
    listen: `:${caddy.listenPorts[0]}`,
    fetch: countingFetch,
  });
}

function route(customer: string, dial: string = upstreamDial): DesiredRoute {
  return { customer, host: `${customer}.${BASE}`, target: { kind: 'upstream', dial } };
}

function suspended(customer: string): DesiredRoute {
  return { customer, host: `${customer}.${BASE}`, target: { kind: 'suspended' } };
}

const foreignServer = () => ({
  listen: [`:${caddy.listenPorts[1]}`],
  routes: [{ '@id': 'other-route', handle: [{ handler: 'static_response', body: 'other server' }] }],
});
const foreignRoute = {
  match: [{ host: ['foreign.test'] }],
  handle: [{ handler: 'static_response', body: 'foreign' }],
  terminal: true,
};
const catchAll = { '@id': 'fallback', handle: [{ handler: 'static_response', status_code: 404, body: 'fallback' }] };

/** What our 404 fallback answers, spelled out here rather than taken from the code under test. */
const FALLBACK_ANSWER = { status: 404, body: 'No assistant lives at this address.\n' };

/** Our server block as someone else left it: right listen and settings, only foreign routes. */
const ourServerAsFound = () => ({
  listen: [`:${caddy.listenPorts[0]}`],
  automatic_https: { disable: true },
  routes: [foreignRoute, catchAll],
});

/** A known world: a foreign server, and (optionally) our server holding only foreign routes. */
async function resetWorld(ourServer: boolean): Promise<void> {
  const servers: Record<string, unknown> = { other: foreignServer() };
  if (ourServer) servers[SERVER] = ourServerAsFound();
  await caddy.load({ ...caddy.emptyConfig(), apps: { http: { servers } } });
  writes.length = 0;
}

/** The parts of Caddy's config these tests look at. */
interface RouteJson {
  '@id'?: string;
  handle: { upstreams?: { dial: string }[] }[];
  [key: string]: unknown;
}
interface CaddyConfig {
  apps: {
    http: { servers: Record<string, { routes: RouteJson[]; [key: string]: unknown }> };
    tls: { automation: unknown };
  };
}

async function config(): Promise<CaddyConfig> {
  return (await caddy.config()) as CaddyConfig;
}

/** The routes of our server block, without the 404 fallback that always ends it. */
async function ourRoutes(): Promise<RouteJson[]> {
  return (await allRoutes()).filter((r) => r['@id'] !== FALLBACK_ROUTE_ID);
}

async function allRoutes(server = SERVER): Promise<RouteJson[]> {
  return (await config()).apps.http.servers[server]?.routes ?? [];
}

/** The `@id`s of every route of a server, in order (`foreign` for a route without one). */
async function allIds(server = SERVER): Promise<string[]> {
  return (await allRoutes(server)).map((r) => r['@id'] ?? 'foreign');
}

/** Our server ends with the fallback, exactly as the table writes it, and holds it only once. */
async function expectFallbackLastOnce(server = SERVER): Promise<void> {
  const routes = await allRoutes(server);
  expect(routes.at(-1)).toEqual(fallbackRoute());
  expect(routes.filter((r) => r['@id'] === FALLBACK_ROUTE_ID)).toHaveLength(1);
}

/** A request through Caddy's listen port with the given Host header. */
async function request(host: string, port = caddy.listenPorts[0]): Promise<{ status: number; body: string }> {
  const { status, body } = await requestWithHeaders(host, port);
  return { status, body };
}

function requestWithHeaders(host: string, port = caddy.listenPorts[0]): Promise<HostResponse> {
  if (port === undefined) throw new Error('the test Caddy listens on no port');
  return getWithHost(port, host, '/hello');
}

function startUpstream(name: string): Promise<http.Server> {
  const server = http.createServer((req, res) => {
    res.setHeader('Content-Type', 'text/plain');
    res.end(`${name} saw ${req.headers.host} ${req.url}`);
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

function recordingSink(): WorldEventSink & { enqueued: string[]; resyncs: string[] } {
  const sink = {
    enqueued: [] as string[],
    resyncs: [] as string[],
    enqueue: (customer: string) => void sink.enqueued.push(customer),
    resync: (reason: string) => void sink.resyncs.push(reason),
  };
  return sink;
}

/** What the controller would do for each enqueued name: ensure the desired route, or remove it. */
async function actAsController(t: CaddyRouteTable, desired: DesiredRoute[], names: string[]): Promise<void> {
  for (const name of names) {
    const want = desired.find((r) => r.customer === name);
    if (want) await t.ensure(want);
    else await t.remove(name);
  }
}

beforeAll(async () => {
  caddy = await startCaddy();
  upstream = await startUpstream('upstream-a');
  upstreamDial = `127.0.0.1:${(upstream.address() as AddressInfo).port}`;
  otherUpstream = await startUpstream('upstream-b');
  otherDial = `127.0.0.1:${(otherUpstream.address() as AddressInfo).port}`;
});

afterAll(async () => {
  await caddy?.stop();
  upstream?.close();
  otherUpstream?.close();
});

describe('CaddyRouteTable', () => {
  it('creates its server block on an empty Caddy, and writes nothing the second time', async () => {
    await caddy.load(caddy.emptyConfig());
    writes.length = 0;
    const t = table();
    await t.ensureServer();
    expect((await config()).apps.http.servers[SERVER]).toEqual({
      listen: [`:${caddy.listenPorts[0]}`],
      automatic_https: { disable: true },
      routes: [fallbackRoute()],
    });
    expect(writes).toHaveLength(1);

    await t.ensureServer();
    expect(writes).toHaveLength(1);
    expect(await t.list()).toEqual([]);
    expect(await allRoutes()).toEqual([fallbackRoute()]);
  });

  it('creates its server block beside a foreign one without touching it', async () => {
    await resetWorld(false);
    await table().ensureServer();
    const servers = (await config()).apps.http.servers;
    expect(servers.other).toEqual(foreignServer());
    expect(servers[SERVER]?.routes).toEqual([fallbackRoute()]);
    expect(await ourRoutes()).toEqual([]);
    expect(writes).toHaveLength(1);
  });

  it('puts a route into an empty routes array (where index 0 does not exist yet)', async () => {
    // ensureServer never leaves the array empty any more (the fallback is in it), so the empty
    // array is made by hand: our server as someone else left it, with no routes at all.
    const asFound = { listen: [`:${caddy.listenPorts[0]}`], automatic_https: { disable: true }, routes: [] };
    await caddy.load({ ...caddy.emptyConfig(), apps: { http: { servers: { [SERVER]: asFound } } } });
    const t = table();
    await t.ensureServer();
    expect(await allRoutes()).toEqual([]);
    writes.length = 0;
    expect(await t.ensure(route('empty-a'))).toBe('created');
    // Appended to the empty array with one POST (PUT routes/0 would fail there).
    expect(writes).toEqual([`POST /config/apps/http/servers/${SERVER}/routes`]);
    expect((await ourRoutes()).map((r) => r['@id'])).toEqual(['blytz-empty-a']);
    expect((await request(`empty-a.${BASE}`)).body).toContain('upstream-a');
  });

  it('creates the server block and the route when ensure runs on an empty Caddy', async () => {
    await caddy.load(caddy.emptyConfig());
    expect(await table().ensure(route('first'))).toBe('created');
    expect((await ourRoutes()).map((r) => r['@id'])).toEqual(['blytz-first']);
    expect(await allIds()).toEqual(['blytz-first', FALLBACK_ROUTE_ID]);
    await expectFallbackLastOnce();
  });

  it('ends its server block with the 404 fallback, exactly once, through ensureServer, ensure, ensureMany and remove', async () => {
    await caddy.load(caddy.emptyConfig());
    const t = table();
    await t.ensureServer();
    expect(await allIds()).toEqual([FALLBACK_ROUTE_ID]);
    await expectFallbackLastOnce();

    expect(await t.ensure(route('fb-a'))).toBe('created');
    expect(await t.ensure(route('fb-b'))).toBe('created');
    expect(await allIds()).toEqual(['blytz-fb-b', 'blytz-fb-a', FALLBACK_ROUTE_ID]);
    expect(await t.ensure(suspended('fb-a'))).toBe('replaced');
    expect(await t.ensure(suspended('fb-a'))).toBe('unchanged');
    await t.ensureServer();
    expect(await allIds()).toEqual(['blytz-fb-b', 'blytz-fb-a', FALLBACK_ROUTE_ID]);
    await expectFallbackLastOnce();

    writes.length = 0;
    expect(await t.ensureMany([route('fb-a'), route('fb-c')])).toEqual({ written: 2 });
    expect(writes).toHaveLength(1);
    expect(await allIds()).toEqual(['blytz-fb-c', 'blytz-fb-b', 'blytz-fb-a', FALLBACK_ROUTE_ID]);
    await expectFallbackLastOnce();

    expect(await t.remove('fb-b')).toBe(true);
    expect(await t.remove('fb-a')).toBe(true);
    expect(await t.remove('fb-c')).toBe(true);
    expect(await allIds()).toEqual([FALLBACK_ROUTE_ID]);
    expect(await t.list()).toEqual([]);
  });

  it('answers 404 with the fallback page for a host that matches no customer', async () => {
    await resetWorld(false);
    const t = table();
    await t.ensureServer();
    const unknown = await requestWithHeaders(`nobody.${BASE}`);
    expect({ status: unknown.status, body: unknown.body }).toEqual(FALLBACK_ANSWER);
    expect(unknown.headers['content-type']).toBe('text/plain; charset=utf-8');
    expect(unknown.headers['cache-control']).toBe('no-store');
    expect(await request('not-even-our-domain.test')).toEqual(FALLBACK_ANSWER);

    // A customer is served; once cancelled (route removed) its host gets the fallback too.
    await t.ensure(route('leaving'));
    expect(await request(`leaving.${BASE}`)).toEqual({ status: 200, body: `upstream-a saw leaving.${BASE} /hello` });
    expect(await request(`nobody.${BASE}`)).toEqual(FALLBACK_ANSWER);
    expect(await t.remove('leaving')).toBe(true);
    expect(await request(`leaving.${BASE}`)).toEqual(FALLBACK_ANSWER);
    // The foreign server on its own port is not ours: no fallback there.
    expect(await request(`nobody.${BASE}`, caddy.listenPorts[1])).toEqual({ status: 200, body: 'other server' });
  });

  it('ensures, replaces in place and removes by id, never duplicating an @id, foreign routes untouched', async () => {
    await resetWorld(true);
    const t = table();

    expect(await t.ensure(route('alice'))).toBe('created');
    expect(await t.ensure(route('bob'))).toBe('created');
    // Ours go in front of the foreign routes, so the catch-all cannot shadow them.
    expect((await ourRoutes()).map((r) => r['@id'] ?? 'foreign')).toEqual(['blytz-bob', 'blytz-alice', 'foreign', 'fallback']);
    expect(await t.list()).toEqual([
      { customer: 'bob', id: 'blytz-bob', hosts: [`bob.${BASE}`], target: { kind: 'upstream', dial: upstreamDial } },
      { customer: 'alice', id: 'blytz-alice', hosts: [`alice.${BASE}`], target: { kind: 'upstream', dial: upstreamDial } },
    ]);

    writes.length = 0;
    expect(await t.ensure(route('alice'))).toBe('unchanged');
    expect(writes).toEqual([]);

    expect(await t.ensure(route('alice', otherDial))).toBe('replaced');
    expect(writes).toEqual(['PATCH /id/blytz-alice']);
    const after = await ourRoutes();
    expect(after.map((r) => r['@id'] ?? 'foreign')).toEqual(['blytz-bob', 'blytz-alice', 'foreign', 'fallback']);
    expect(after[1]?.handle[0]?.upstreams).toEqual([{ dial: otherDial }]);

    expect(await t.ensure(suspended('alice'))).toBe('replaced');
    expect((await t.list()).find((r) => r.customer === 'alice')?.target).toEqual({ kind: 'suspended' });
    // One customer's route by its @id, as list shows it; none for a customer without one.
    expect(await t.get('alice')).toEqual((await t.list()).find((r) => r.customer === 'alice'));
    expect(await t.get('bob')).toEqual({ customer: 'bob', id: 'blytz-bob', hosts: [`bob.${BASE}`], target: { kind: 'upstream', dial: upstreamDial } });
    expect(await t.get('never-existed')).toBeUndefined();

    expect(await t.remove('alice')).toBe(true);
    expect(await t.remove('alice')).toBe(false);
    expect(await t.remove('never-existed')).toBe(false);
    expect((await ourRoutes()).map((r) => r['@id'] ?? 'foreign')).toEqual(['blytz-bob', 'foreign', 'fallback']);

    const cfg = await config();
    expect(cfg.apps.http.servers.other).toEqual(foreignServer());
    expect(cfg.apps.http.servers[SERVER]?.routes.slice(1)).toEqual([foreignRoute, catchAll]);
  });

  it('never modifies or removes routes without its prefix, even when asked for a name that looks like one', async () => {
    await resetWorld(true);
    const t = table();
    // `fallback` is a foreign @id; remove('fallback') addresses `blytz-fallback` only.
    expect(await t.remove('fallback')).toBe(false);
    expect(await t.list()).toEqual([]);
    expect(await ourRoutes()).toEqual([foreignRoute, catchAll]);
  });

  it('serves the customer through Caddy and the suspended page with its status', async () => {
    await resetWorld(true);
    const t = table();
    await t.ensure(route('carol'));
    const ok = await request(`carol.${BASE}`);
    expect(ok.status).toBe(200);
    expect(ok.body).toBe(`upstream-a saw carol.${BASE} /hello`);

    await t.ensure(suspended('carol'));
    const page = await request(`carol.${BASE}`);
    expect(page.status).toBe(SUSPENDED_STATUS);
    expect(page.body).toBe(SUSPENDED_BODY);
    expect(page.body).toContain('Assistant suspended');

    // Other hosts still reach the foreign routes after ours.
    expect(await request('foreign.test')).toEqual({ status: 200, body: 'foreign' });
    expect(await request('nobody.test')).toEqual({ status: 404, body: 'fallback' });
    expect(await request('anything', caddy.listenPorts[1])).toEqual({ status: 200, body: 'other server' });
  });

  it('ensureMany writes many routes in one request, keeps foreign routes, and writes nothing when all match', async () => {
    await resetWorld(true);
    const t = table();
    await t.ensure(route('dave', otherDial));
    writes.length = 0;

    const many = ['dave', 'erin', 'frank', 'grace'].map((name) => route(name));
    expect(await t.ensureMany(many)).toEqual({ written: 4 });
    expect(writes).toEqual([`PATCH /config/apps/http/servers/${SERVER}/routes`]);
    const ids = (await ourRoutes()).map((r) => r['@id'] ?? 'foreign');
    expect(ids).toEqual(['blytz-erin', 'blytz-frank', 'blytz-grace', 'blytz-dave', 'foreign', 'fallback']);
    // The server as found had no fallback: the same single write appended it, after the foreign routes.
    expect((await allIds()).slice(-3)).toEqual(['foreign', 'fallback', FALLBACK_ROUTE_ID]);
    await expectFallbackLastOnce();
    expect((await t.list()).every((r) => r.target.kind === 'upstream' && r.target.dial === upstreamDial)).toBe(true);

    writes.length = 0;
    expect(await t.ensureMany(many)).toEqual({ written: 0 });
    expect(writes).toEqual([]);
    expect((await ourRoutes()).slice(-2)).toEqual([foreignRoute, catchAll]);
  });
});

describe('CaddyRouteTable plumbing', () => {
  it('makes every admin call through the guard it was given', async () => {
    await resetWorld(true);
    const operations: string[] = [];
    let requests = 0;
    const t = new CaddyRouteTable({
      adminUrl: caddy.adminUrl,
      serverName: SERVER,
      listen: `:${caddy.listenPorts[0]}`,
      guard: (operation, fn) => {
        operations.push(operation);
        return fn(new AbortController().signal);
      },
      fetch: (input, init) => {
        requests++;
        return fetch(input, init);
      },
    });
    await t.ensureServer();
    await t.ensure(route('guarded'));
    await t.ensureMany([route('guarded', otherDial)]);
    await t.list();
    await t.remove('guarded');
    await t.ping();
    expect(requests).toBeGreaterThan(5);
    expect(operations).toHaveLength(requests);
    expect(operations).toContain('insertRoute');
    expect(operations).toContain('replaceRoutes');
    expect(operations).toContain('removeRoute');
  });

  it('ping answers while Caddy does and throws when nothing listens', async () => {
    await table().ping();
    const dead = new CaddyRouteTable({ adminUrl: `http://127.0.0.1:${caddy.listenPorts[2]}`, serverName: SERVER, listen: ':1' });
    await expect(dead.ping()).rejects.toThrow();
  });
});

describe('RouteSweep', () => {
  const names = ['hank', 'iris', 'jack'];

  /**
   * Our routes (hank, iris, jack, and kate suspended) written and swept clean. With
   * `foreignRoutes` (the default) our server block was found holding foreign routes, a foreign
   * catch-all among them; without, ensureMany created the block (the foreign server exists either way).
   */
  async function setUp({ foreignRoutes = true } = {}): Promise<{
    t: CaddyRouteTable;
    desired: DesiredRoute[];
    sweep: RouteSweep;
    sink: ReturnType<typeof recordingSink>;
  }> {
    await resetWorld(foreignRoutes);
    const t = table();
    const desired = names.map((name) => route(name));
    await t.ensureMany(desired);
    desired.push(suspended('kate')); // suspended
    await t.ensure(suspended('kate'));
    const sweep = new RouteSweep({ table: t, desiredRoutes: async () => desired, intervalMs: 60_000 });
    const sink = recordingSink();
    expect((await sweep.sweepOnce(sink)).drift).toEqual([]);
    writes.length = 0;
    return { t, desired, sweep, sink };
  }

  async function expectConverged(t: CaddyRouteTable, desired: DesiredRoute[], sweep: RouteSweep): Promise<void> {
    const observed = await t.list();
    expect(observed.map((r) => r.customer).sort()).toEqual(desired.map((r) => r.customer).sort());
    for (const want of desired) {
      expect(observed.find((r) => r.customer === want.customer)).toMatchObject({ hosts: [want.host], target: want.target });
    }
    const again = recordingSink();
    writes.length = 0;
    expect((await sweep.sweepOnce(again)).drift).toEqual([]);
    expect(again.enqueued).toEqual([]);
    expect(writes).toEqual([]);
    await expectFallbackLastOnce();
    expect((await request(`hank.${BASE}`)).body).toContain('upstream-a');
    expect((await request(`kate.${BASE}`)).status).toBe(SUSPENDED_STATUS);
    const hasForeign = (await allIds()).includes('foreign');
    expect(await request('foreign.test')).toEqual(hasForeign ? { status: 200, body: 'foreign' } : FALLBACK_ANSWER);
  }

  it('finds a route deleted by hand and enqueues only that customer', async () => {
    const { t, desired, sweep, sink } = await setUp();
    const res = await caddy.admin(`/id/blytz-iris`, { method: 'DELETE' });
    expect(res.status).toBe(200);

    const result = await sweep.sweepOnce(sink);
    expect(result.drift).toEqual([{ customer: 'iris', kind: 'route_missing' }]);
    expect(sink.enqueued).toEqual(['iris']);
    await actAsController(t, desired, sink.enqueued);
    await expectConverged(t, desired, sweep);
  });

  it('finds an upstream edited by hand and enqueues only that customer', async () => {
    const { t, desired, sweep, sink } = await setUp();
    const edited = (await ourRoutes()).find((r) => r['@id'] === 'blytz-jack');
    expect(edited?.handle[0]?.upstreams).toEqual([{ dial: upstreamDial }]);
    edited!.handle[0]!.upstreams = [{ dial: otherDial }];
    const res = await caddy.admin(`/id/blytz-jack`, {
      method: 'PATCH',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify(edited),
    });
    expect(res.status).toBe(200);
    expect((await request(`jack.${BASE}`)).body).toContain('upstream-b');

    const result = await sweep.sweepOnce(sink);
    expect(result.drift).toEqual([{ customer: 'jack', kind: 'route_wrong' }]);
    expect(sink.enqueued).toEqual(['jack']);
    await actAsController(t, desired, sink.enqueued);
    await expectConverged(t, desired, sweep);
    expect((await request(`jack.${BASE}`)).body).toContain('upstream-a');
  });

  it('enqueues the customer of an orphaned route, and leaves foreign routes alone', async () => {
    const { t, desired, sweep, sink } = await setUp();
    await t.ensure(route('ghost'));

    const result = await sweep.sweepOnce(sink);
    expect(result.drift).toEqual([{ customer: 'ghost', kind: 'orphan_route' }]);
    expect(sink.enqueued).toEqual(['ghost']);
    await actAsController(t, desired, sink.enqueued);
    await expectConverged(t, desired, sweep);
    expect((await ourRoutes()).slice(-2)).toEqual([foreignRoute, catchAll]);
  });

  it('collapses a duplicate @id (made by hand with PUT /id) in one write', async () => {
    const { t, desired, sweep, sink } = await setUp();
    const copy = (await ourRoutes()).find((r) => r['@id'] === 'blytz-hank');
    // PUT /id/<id> inserts a second copy on 2.6.2: exactly why the table never uses it.
    const res = await caddy.admin(`/id/blytz-hank`, {
      method: 'PUT',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify(copy),
    });
    expect(res.status).toBe(200);
    expect((await ourRoutes()).filter((r) => r['@id'] === 'blytz-hank')).toHaveLength(2);
    writes.length = 0;

    const result = await sweep.sweepOnce(sink);
    expect(result.drift).toEqual([{ customer: 'hank', kind: 'route_wrong' }]);
    expect(writes).toHaveLength(1);
    expect(sink.enqueued).toEqual([]);
    expect((await ourRoutes()).filter((r) => r['@id'] === 'blytz-hank')).toHaveLength(1);
    await expectConverged(t, desired, sweep);
  });

  it('restores every route in one write after the whole config was replaced by POST /load', async () => {
    const { t, desired, sweep, sink } = await setUp();
    await caddy.load(caddy.emptyConfig());
    writes.length = 0;

    const result = await sweep.sweepOnce(sink);
    expect(result).toMatchObject({ restored: true, written: desired.length, drift: [] });
    expect(writes).toHaveLength(1);
    expect(sink.enqueued).toEqual([]);
    // The foreign config went with the /load; ours is back on its own.
    const observed = await t.list();
    expect(observed.map((r) => r.customer).sort()).toEqual(desired.map((r) => r.customer).sort());
    expect((await request(`hank.${BASE}`)).body).toContain('upstream-a');
    expect((await request(`kate.${BASE}`)).status).toBe(SUSPENDED_STATUS);
    await expectFallbackLastOnce();
    expect(await request(`nobody.${BASE}`)).toEqual(FALLBACK_ANSWER);
    const again = recordingSink();
    writes.length = 0;
    expect((await sweep.sweepOnce(again)).drift).toEqual([]);
    expect(writes).toEqual([]);
  });

  it('restores every route in one write after Caddy was killed and restarted empty', async () => {
    const { t, desired, sweep, sink } = await setUp();
    await caddy.restartEmpty();
    expect(await caddy.config()).toEqual(caddy.emptyConfig());
    await expect(request(`hank.${BASE}`)).rejects.toThrow();
    writes.length = 0;

    const result = await sweep.sweepOnce(sink);
    expect(result).toMatchObject({ restored: true, written: desired.length, drift: [] });
    expect(writes).toHaveLength(1);
    expect(sink.enqueued).toEqual([]);
    expect((await t.list()).map((r) => r.customer).sort()).toEqual(desired.map((r) => r.customer).sort());
    expect((await request(`hank.${BASE}`)).body).toContain('upstream-a');
    expect((await request(`kate.${BASE}`)).status).toBe(SUSPENDED_STATUS);
    await expectFallbackLastOnce();
    expect(await request(`nobody.${BASE}`)).toEqual(FALLBACK_ANSWER);
  });

  it('adds the fallback to a server block found without one with one write, then writes nothing', async () => {
    await resetWorld(true);
    const t = table();
    const desired = [route('solo')];
    expect(await t.ensure(desired[0]!)).toBe('created');
    // ensure inserts at the front and leaves the rest of a server it did not create alone.
    expect(await allIds()).toEqual(['blytz-solo', 'foreign', 'fallback']);
    const sweep = new RouteSweep({ table: t, desiredRoutes: async () => desired, intervalMs: 60_000 });
    const sink = recordingSink();
    writes.length = 0;

    expect(await sweep.sweepOnce(sink)).toMatchObject({ restored: false, drift: [] });
    expect(writes).toEqual([`PATCH /config/apps/http/servers/${SERVER}/routes`]);
    expect(sink.enqueued).toEqual([]);
    expect(await allIds()).toEqual(['blytz-solo', 'foreign', 'fallback', FALLBACK_ROUTE_ID]);
    expect(await ourRoutes()).toEqual([t.routeJson(desired[0]!), foreignRoute, catchAll]);
    await expectFallbackLastOnce();

    writes.length = 0;
    expect(await sweep.sweepOnce(sink)).toMatchObject({ restored: false, drift: [] });
    expect(writes).toEqual([]);
  });

  it('puts back a fallback deleted by hand, at the end, with one write', async () => {
    const { t, desired, sweep, sink } = await setUp({ foreignRoutes: false });
    const before = await allRoutes();
    expect(before.map((r) => r['@id'])).toEqual(['blytz-kate', 'blytz-hank', 'blytz-iris', 'blytz-jack', FALLBACK_ROUTE_ID]);
    expect(await request(`nobody.${BASE}`)).toEqual(FALLBACK_ANSWER);
    const res = await caddy.admin(`/id/${FALLBACK_ROUTE_ID}`, { method: 'DELETE' });
    expect(res.status).toBe(200);
    expect(await allRoutes()).toEqual(before.slice(0, -1));
    // Without it, an unknown host gets Caddy's default: an empty 200.
    expect(await request(`nobody.${BASE}`)).toEqual({ status: 200, body: '' });
    writes.length = 0;

    const result = await sweep.sweepOnce(sink);
    expect(result).toMatchObject({ restored: false, drift: [] });
    expect(writes).toHaveLength(1);
    expect(sink.enqueued).toEqual([]);
    expect(await allRoutes()).toEqual(before);
    await expectFallbackLastOnce();
    expect(await request(`nobody.${BASE}`)).toEqual(FALLBACK_ANSWER);
    await expectConverged(t, desired, sweep);
  });

  it('moves a fallback put at the front back to the end with one write', async () => {
    const { t, desired, sweep, sink } = await setUp();
    const before = await allRoutes();
    expect(before.map((r) => r['@id'] ?? 'foreign')).toEqual([
      'blytz-kate',
      'blytz-hank',
      'blytz-iris',
      'blytz-jack',
      'foreign',
      'fallback',
      FALLBACK_ROUTE_ID,
    ]);
    const moved = [before.at(-1), ...before.slice(0, -1)];
    const res = await caddy.admin(`/config/apps/http/servers/${SERVER}/routes`, {
      method: 'PATCH',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify(moved),
    });
    expect(res.status).toBe(200);
    expect((await allIds())[0]).toBe(FALLBACK_ROUTE_ID);
    // In front it shadows every customer.
    expect(await request(`hank.${BASE}`)).toEqual(FALLBACK_ANSWER);
    writes.length = 0;

    const result = await sweep.sweepOnce(sink);
    expect(result).toMatchObject({ restored: false, drift: [] });
    expect(writes).toHaveLength(1);
    expect(sink.enqueued).toEqual([]);
    expect(await allRoutes()).toEqual(before);
    await expectFallbackLastOnce();
    await expectConverged(t, desired, sweep);
  });

  it('collapses a second copy of the fallback with one write', async () => {
    const { t, desired, sweep, sink } = await setUp();
    const before = await allRoutes();
    // POST to the routes array appends: a second fallback, after the first.
    const res = await caddy.admin(`/config/apps/http/servers/${SERVER}/routes`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify(before.at(-1)),
    });
    expect(res.status).toBe(200);
    expect((await allIds()).filter((id) => id === FALLBACK_ROUTE_ID)).toHaveLength(2);
    writes.length = 0;

    const result = await sweep.sweepOnce(sink);
    expect(result).toMatchObject({ restored: false, drift: [] });
    expect(writes).toHaveLength(1);
    expect(sink.enqueued).toEqual([]);
    expect(await allRoutes()).toEqual(before);
    await expectConverged(t, desired, sweep);
  });

  it('puts a listen address changed by hand back with one sweep, reports it, and writes nothing the next time', async () => {
    const { t, desired, sweep, sink } = await setUp({ foreignRoutes: false });
    expect(await t.checkServer()).toEqual({
      ok: true,
      message: `server block "${SERVER}" listens on :${caddy.listenPorts[0]} as configured, 404 fallback last`,
    });
    const moved = await caddy.admin(`/config/apps/http/servers/${SERVER}/listen`, {
      method: 'PATCH',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify([`:${caddy.listenPorts[2]}`]),
    });
    expect(moved.status).toBe(200);
    await expect(request(`hank.${BASE}`)).rejects.toThrow(); // nothing listens on the configured port now
    const check = await t.checkServer();
    expect(check.ok).toBe(false);
    expect(check.message).toBe(
      `server block "${SERVER}" differs from the configuration: listen [":${caddy.listenPorts[2]}"] (want [":${caddy.listenPorts[0]}"]); ` +
        'the route sweep puts it back (BLYTZ_ROUTE_SWEEP_SECONDS)',
    );
    writes.length = 0;

    const result = await sweep.sweepOnce(sink);
    expect(result).toMatchObject({
      restored: false,
      drift: [],
      repaired: [{ kind: 'server_block', detail: `listen [":${caddy.listenPorts[2]}"] (want [":${caddy.listenPorts[0]}"])` }],
    });
    expect(writes).toEqual([`PATCH /config/apps/http/servers/${SERVER}/listen`]);
    expect(sink.enqueued).toEqual([]);
    expect((await request(`hank.${BASE}`)).body).toContain('upstream-a');
    expect((await t.checkServer()).ok).toBe(true);
    await expectConverged(t, desired, sweep);
  });

  it('moves the block when the configured listen address changes between two starts', async () => {
    await resetWorld(false);
    const desired = [route('lena')];
    // First start: BLYTZ_CADDY_LISTEN is the first port.
    const before = table();
    await before.ensureMany(desired);
    expect((await request(`lena.${BASE}`, caddy.listenPorts[0])).body).toContain('upstream-a');
    // Second start with BLYTZ_CADDY_LISTEN on another port: its first sweep moves the block.
    const after = new CaddyRouteTable({ adminUrl: caddy.adminUrl, serverName: SERVER, listen: `:${caddy.listenPorts[2]}` });
    expect((await after.checkServer()).ok).toBe(false);
    const sweep = new RouteSweep({ table: after, desiredRoutes: async () => desired, intervalMs: 60_000 });
    const result = await sweep.sweepOnce(recordingSink());
    expect(result.repaired.map((r) => r.kind)).toEqual(['server_block']);
    expect((await config()).apps.http.servers[SERVER]?.['listen']).toEqual([`:${caddy.listenPorts[2]}`]);
    expect((await request(`lena.${BASE}`, caddy.listenPorts[2])).body).toContain('upstream-a');
    await expect(request(`lena.${BASE}`, caddy.listenPorts[0])).rejects.toThrow();
    expect((await after.checkServer()).ok).toBe(true);
  });

  it('reports a missing or misplaced fallback as repaired', async () => {
    const { sweep, sink } = await setUp({ foreignRoutes: false });
    await caddy.admin(`/id/${FALLBACK_ROUTE_ID}`, { method: 'DELETE' });
    expect((await table().checkServer()).message).toMatch(/the 404 fallback route is missing, doubled or not last/);
    expect((await sweep.sweepOnce(sink)).repaired.map((r) => r.kind)).toEqual(['fallback_route']);
    expect((await sweep.sweepOnce(sink)).repaired).toEqual([]);
  });

  it('sweeps once at start, then on its own schedule, and stops', async () => {
    const { desired, sink } = await setUp();
    const t = table();
    const sweep = new RouteSweep({ table: t, desiredRoutes: async () => desired, intervalMs: 3_600_000 });
    await caddy.admin(`/id/blytz-iris`, { method: 'DELETE' });
    await sweep.start(sink);
    try {
      // An hour's interval: only the sweep at start can have found it.
      await waitFor(() => sink.enqueued.includes('iris'));
    } finally {
      await sweep.stop();
    }
    expect(sink.enqueued).toEqual(['iris']);
  });

  it('sweeps on its own schedule once started, and stops', async () => {
    const { desired, sink } = await setUp();
    const t = table();
    const sweep = new RouteSweep({ table: t, desiredRoutes: async () => desired, intervalMs: 20 });
    await caddy.admin(`/id/blytz-hank`, { method: 'DELETE' });
    await sweep.start(sink);
    try {
      await waitFor(() => sink.enqueued.includes('hank'));
    } finally {
      await sweep.stop();
    }
    expect(new Set(sink.enqueued)).toEqual(new Set(['hank']));
  });
});

describe('CaddyRouteTable with on-demand TLS', () => {
  it('writes a server and TLS automation that Caddy 2.6.2 accepts, leaving other servers alone, idempotently', async () => {
    await resetWorld(true);
    const before = await config();
    const t = new CaddyRouteTable({
      adminUrl: caddy.adminUrl,
      serverName: 'blytz-tls',
      listen: `:${caddy.listenPorts[2]}`,
      tls: { askUrl: 'http://127.0.0.1:8080/api/caddy/ask', baseDomain: 'example.com' },
      fetch: countingFetch,
    });
    await t.ensureServer();
    // A public-looking host covered by the on-demand policy: Caddy defers it to the first
    // handshake (which this test never makes), so no certificate is requested.
    const tlsRoute: DesiredRoute = {
      customer: 'tls-user',
      host: 'tls-user.example.com',
      target: { kind: 'upstream', dial: upstreamDial },
    };
    expect(await t.ensure(tlsRoute)).toBe('created');

    const cfg = await config();
    expect(cfg.apps.http.servers['blytz-tls']).toMatchObject({
      listen: [`:${caddy.listenPorts[2]}`],
      automatic_https: { disable_redirects: true },
      tls_connection_policies: [{}],
    });
    expect(await allIds('blytz-tls')).toEqual(['blytz-tls-user', FALLBACK_ROUTE_ID]);
    await expectFallbackLastOnce('blytz-tls');
    expect(cfg.apps.tls.automation).toEqual({
      on_demand: { ask: 'http://127.0.0.1:8080/api/caddy/ask' },
      policies: [{ '@id': 'blytz_tls_on_demand', subjects: ['*.example.com'], on_demand: true }],
    });
    expect(cfg.apps.http.servers.other).toEqual(before.apps.http.servers.other);
    expect(cfg.apps.http.servers[SERVER]).toEqual(before.apps.http.servers[SERVER]);

    // The whole config, loaded afresh, is accepted as it stands.
    await caddy.load(cfg);
    writes.length = 0;
    await t.ensureServer();
    expect(await t.ensure(tlsRoute)).toBe('unchanged');
    expect(writes).toEqual([]);
  });

  it('turns TLS settings on for an existing server block, and off again, keeping its routes', async () => {
    // Only the catch-all: a foreign host matcher in a TLS server would make Caddy go for a certificate.
    const asFound = { listen: [`:${caddy.listenPorts[0]}`], automatic_https: { disable: true }, routes: [catchAll] };
    await caddy.load({ ...caddy.emptyConfig(), apps: { http: { servers: { [SERVER]: asFound } } } });
    const t = new CaddyRouteTable({
      adminUrl: caddy.adminUrl,
      serverName: SERVER,
      listen: `:${caddy.listenPorts[0]}`,
      tls: { askUrl: 'http://127.0.0.1:8080/api/caddy/ask', baseDomain: 'example.com' },
      fetch: countingFetch,
    });
    await t.ensureServer();
    const server = (await config()).apps.http.servers[SERVER];
    expect(server).toMatchObject({ automatic_https: { disable_redirects: true }, tls_connection_policies: [{}] });
    expect(server?.routes).toEqual([catchAll]);
    // And back off again with a table without TLS.
    await table().ensureServer();
    expect((await config()).apps.http.servers[SERVER]).toEqual(asFound);
  });
});
