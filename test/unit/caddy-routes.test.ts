import { describe, expect, it } from 'vitest';
import {
  buildRoute,
  endsWithFallback,
  FALLBACK_ROUTE_ID,
  fallbackRoute,
  mergeTlsAutomation,
  parseRoute,
  type JsonObject,
} from '../../src/proxy/caddy/caddy-json.js';
import { desiredRoutes } from '../../src/controller/customer/desired-routes.js';
import { mergeRoutes } from '../../src/proxy/caddy/caddy-route-table.js';
import { compareRoutes } from '../../src/proxy/caddy/route-sweep.js';
import type { DesiredRoute } from '../../src/proxy/route-table.js';

const up = (customer: string, port = 30001): DesiredRoute => ({
  customer,
  host: `${customer}.b.test`,
  target: { kind: 'upstream', dial: `127.0.0.1:${port}` },
});
const foreign = { '@id': 'fallback', handle: [{ handler: 'static_response', body: 'x' }] };
const foreignNoId = { match: [{ host: ['f.test'] }], handle: [] };
const fallback = fallbackRoute();
const idsOf = (routes: unknown[]) => routes.map((r) => (r as { '@id'?: string })['@id'] ?? 'no-id');

describe('route JSON', () => {
  it('reads back what it writes, and calls anything else unknown', () => {
    expect(parseRoute(buildRoute(up('a')))).toEqual({
      customer: 'a',
      id: 'blytz-a',
      hosts: ['a.b.test'],
      target: { kind: 'upstream', dial: '127.0.0.1:30001' },
    });
    expect(parseRoute(buildRoute({ customer: 'a', host: 'a.b.test', target: { kind: 'suspended' } }))?.target).toEqual({
      kind: 'suspended',
    });
    const edited = buildRoute(up('a')) as JsonObject & { handle: JsonObject[] };
    edited.handle[0] = { ...edited.handle[0], flush_interval: -1 };
    expect(parseRoute(edited)?.target).toEqual({ kind: 'unknown' });
    expect(parseRoute(foreign)).toBeUndefined();
    expect(parseRoute({ '@id': 'blytz-Not_A_Name' })).toBeUndefined();
  });

  it('puts a host into the JSON as data, whatever it contains', () => {
    const route = buildRoute({ customer: 'a', host: 'a"},{"x', target: { kind: 'suspended' } });
    expect(route['match']).toEqual([{ host: ['a"},{"x'] }]);
  });
});

describe('mergeRoutes', () => {
  it('replaces ours in place, adds new ones in front, keeps foreign ones, drops duplicate ids', () => {
    const current = [buildRoute(up('a')), foreignNoId, buildRoute(up('b')), buildRoute(up('b')), foreign];
    const desired = new Map([
      ['blytz-b', buildRoute(up('b', 30002))],
      ['blytz-c', buildRoute(up('c'))],
    ]);
    const { merged, written } = mergeRoutes(current, desired);
    // The fallback was missing from `current`: it is appended, after the foreign routes.
    expect(merged).toEqual([
      buildRoute(up('c')),
      buildRoute(up('a')),
      foreignNoId,
      buildRoute(up('b', 30002)),
      foreign,
      fallback,
    ]);
    expect(written).toBe(2);
  });

  it('changes nothing when everything already matches', () => {
    const current = [buildRoute(up('a')), foreign, fallback];
    const { merged, written } = mergeRoutes(current, new Map([['blytz-a', buildRoute(up('a'))]]));
    expect(merged).toEqual(current);
    expect(written).toBe(0);
  });

  it('ends with the 404 fallback exactly once: appended, moved from the front, duplicates collapsed', () => {
    const a = buildRoute(up('a'));
    const desired = new Map([['blytz-a', a]]);
    for (const current of [
      [a, foreign], // missing
      [fallback, a, foreign], // moved to the front
      [a, fallback, foreign, fallback], // two copies, one in the middle
      [fallback, foreign, fallback, fallback], // three copies, ours not there yet
    ]) {
      const { merged } = mergeRoutes(current, desired);
      expect(merged.at(-1)).toEqual(fallback);
      expect(merged.filter((r) => (r as JsonObject)['@id'] === FALLBACK_ROUTE_ID)).toHaveLength(1);
      // Everything else keeps its order (ours, then the foreign one).
      expect(idsOf(merged)).toEqual(['blytz-a', 'fallback', FALLBACK_ROUTE_ID]);
      expect(endsWithFallback(merged)).toBe(true);
    }
  });

  it('keeps the fallback last when new routes are added and when nothing is desired', () => {
    const { merged } = mergeRoutes([foreign, fallback], new Map([['blytz-n', buildRoute(up('n'))]]));
    expect(idsOf(merged)).toEqual(['blytz-n', 'fallback', FALLBACK_ROUTE_ID]);
    expect(mergeRoutes([], new Map()).merged).toEqual([fallback]);
    expect(mergeRoutes([fallback, foreignNoId], new Map()).merged).toEqual([foreignNoId, fallback]);
  });

  it('replaces a hand-edited fallback with the one it writes, and is idempotent', () => {
    const edited = { ...fallback, handle: [{ handler: 'static_response', status_code: 200, body: 'edited' }] };
    const { merged } = mergeRoutes([buildRoute(up('a')), edited], new Map());
    expect(merged).toEqual([buildRoute(up('a')), fallback]);
    expect(mergeRoutes(merged, new Map()).merged).toEqual(merged);
  });

  it('never takes a foreign route for the fallback, whatever its content', () => {
    // Same content as ours but a foreign @id, or no @id at all: foreign, kept as it is.
    const lookalike = { ...fallback, '@id': 'fallback-of-someone-else' };
    const { '@id': _id, ...noId } = fallback;
    const { merged } = mergeRoutes([lookalike, noId], new Map());
    expect(merged).toEqual([lookalike, noId, fallback]);
  });
});

describe('the 404 fallback', () => {
  it('answers 404 with a plain-text body for any host, and is terminal', () => {
    expect(fallback).toEqual({
      '@id': 'blytz_fallback',
      handle: [
        {
          handler: 'static_response',
          status_code: 404,
          headers: { 'Content-Type': ['text/plain; charset=utf-8'], 'Cache-Control': ['no-store'] },
          body: 'No assistant lives at this address.\n',
        },
      ],
      terminal: true,
    });
    expect(fallback['match']).toBeUndefined();
  });

  it('is never read as a customer route', () => {
    expect(parseRoute(fallback)).toBeUndefined();
  });

  it('endsWithFallback holds only for exactly one copy, at the end', () => {
    const a = buildRoute(up('a'));
    expect(endsWithFallback([fallback])).toBe(true);
    expect(endsWithFallback([a, foreign, fallback])).toBe(true);
    expect(endsWithFallback([])).toBe(false);
    expect(endsWithFallback([a, foreign])).toBe(false);
    expect(endsWithFallback([fallback, a])).toBe(false);
    expect(endsWithFallback([fallback, a, fallback])).toBe(false);
    expect(endsWithFallback([a, fallback, fallback])).toBe(false);
  });
});

describe('compareRoutes', () => {
  it('names missing, wrong, duplicated and orphaned routes, and ignores foreign ones and the fallback', () => {
    const routes = [
      buildRoute(up('ok')),
      buildRoute(up('wrong', 39999)),
      buildRoute(up('dup')),
      buildRoute(up('dup')),
      buildRoute(up('orphan')),
      foreign,
      fallback,
    ];
    const desired = [up('ok'), up('wrong'), up('dup'), up('missing')];
    expect(compareRoutes(routes, desired, buildRoute)).toEqual([
      { customer: 'wrong', kind: 'route_wrong', duplicate: false },
      { customer: 'dup', kind: 'route_wrong', duplicate: true },
      { customer: 'missing', kind: 'route_missing', duplicate: false },
      { customer: 'orphan', kind: 'orphan_route', duplicate: false },
    ]);
  });
});

describe('mergeTlsAutomation', () => {
  it('sets the ask and puts our policy first, keeping foreign policies, idempotently', () => {
    const existing = { policies: [{ subjects: ['other.test'] }], on_demand: { rate_limit: { interval: '1m', burst: 5 } } };
    const once = mergeTlsAutomation(existing, { askUrl: 'http://x/ask', baseDomain: 'b.test' });
    expect(once).toEqual({
      on_demand: { rate_limit: { interval: '1m', burst: 5 }, ask: 'http://x/ask' },
      policies: [{ '@id': 'blytz_tls_on_demand', subjects: ['*.b.test'], on_demand: true }, { subjects: ['other.test'] }],
    });
    expect(mergeTlsAutomation(once, { askUrl: 'http://x/ask', baseDomain: 'b.test' })).toEqual(once);
  });
});

describe('desiredRoutes', () => {
  it('routes active customers with a port to the runtime upstream, shows suspended ones the page, and skips an active one without a port', () => {
    const routes = desiredRoutes(
      [
        { name: 'alice', state: 'active', port: 30001 },
        { name: 'bob', state: 'suspended', port: 30002 },
        { name: 'carol', state: 'active', port: undefined },
      ],
      'blytz.localhost',
      (customer, port) => `svc-${customer}:${port}`,
    );
    expect(routes).toEqual([
      { customer: 'alice', host: 'alice.blytz.localhost', target: { kind: 'upstream', dial: 'svc-alice:30001' } },
      { customer: 'bob', host: 'bob.blytz.localhost', target: { kind: 'suspended' } },
    ]);
  });
});
