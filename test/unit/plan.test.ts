import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  fleetChangeOf,
  plan,
  upstreamFor,
  type Action,
  type Desired,
  type Observed,
} from '../../src/controller/customer/plan.js';
import type { ObservedContainer } from '../../src/runtime/runtime.js';
import type { RouteTarget } from '../../src/proxy/route-table.js';
import { container, converged, desired, HOST, route } from '../support/planning.js';

const DAY = 86_400_000;

const types = (actions: Action[]) => actions.map((a) => a.type);
const run = (d: Desired | undefined, o: Observed, now = 0, recreateAllowed = true) =>
  plan({ desired: d, observed: o, now, retentionMs: 30 * DAY, recreateAllowed }).actions;

describe('plan: active', () => {
  it('provisions from nothing in order: workspace, port, container, route', () => {
    const actions = run(desired(), { workspace: { exists: false }, port: undefined, containers: [], route: undefined });
    expect(types(actions)).toEqual(['writeWorkspace', 'reservePort', 'createContainer', 'ensureRoute']);
  });

  it('does nothing on a converged world', () => {
    expect(run(desired(), converged())).toEqual([]);
  });

  it('re-creates a missing container', () => {
    expect(types(run(desired(), converged({ containers: [] })))).toEqual(['createContainer']);
  });

  it('starts a stopped container', () => {
    expect(run(desired(), converged({ containers: [container({ state: 'exited' })] }))).toEqual([
      { type: 'startContainer', id: 'c1', drift: 'container_stopped' },
    ]);
  });

  it('replaces a container with the wrong hash: remove first, then create', () => {
    const actions = run(desired(), converged({ containers: [container({ specHash: 'old' })] }));
    expect(types(actions)).toEqual(['removeContainer', 'createContainer']);
  });

  it('restarts an unhealthy container', () => {
    expect(types(run(desired(), converged({ containers: [container({ health: 'unhealthy' })] })))).toEqual(['restartContainer']);
  });

  it('restarts a crash-looping container that fails its health check (found by the property below)', () => {
    expect(types(run(desired(), converged({ containers: [container({ state: 'restarting', health: 'unhealthy' })] })))).toEqual([
      'restartContainer',
    ]);
  });

  it('waits (no action) while a container is starting', () => {
    expect(run(desired(), converged({ containers: [container({ health: 'starting' })] }))).toEqual([]);
  });

  it('removes duplicates and keeps the running one', () => {
    const actions = run(desired(), converged({ containers: [container({ id: 'c2', state: 'exited' }), container()] }));
    expect(actions).toEqual([{ type: 'removeContainer', id: 'c2', drift: 'container_duplicate' }]);
  });

  it('restores a missing route and fixes a wrong upstream or host', () => {
    expect(run(desired(), converged({ route: undefined }))).toEqual([
      { type: 'ensureRoute', to: 'container', drift: 'route_missing' },
    ]);
    expect(run(desired(), converged({ route: route(upstreamFor(30999)) }))).toEqual([
      { type: 'ensureRoute', to: 'container', drift: 'route_wrong' },
    ]);
    expect(types(run(desired(), converged({ route: route(upstreamFor(30001), ['evil.example']) })))).toEqual(['ensureRoute']);
    expect(types(run(desired(), converged({ route: { ...route(), target: { kind: 'unknown' } } })))).toEqual(['ensureRoute']);
  });

  it('routes to where the runtime says: a Kubernetes Service instead of the loopback', () => {
    const service = (customer: string, port: number) => `blytz-${customer}.ns.svc:${port}`;
    const onKube = (o: Observed) =>
      plan({ desired: desired(), observed: o, now: 0, retentionMs: 30 * DAY, upstreamOf: service }).actions;
    const kubeRoute = route({ kind: 'upstream', dial: 'blytz-alice.ns.svc:30001' });
    expect(upstreamFor(30001, 'alice', service)).toEqual({ kind: 'upstream', dial: 'blytz-alice.ns.svc:30001' });
    expect(onKube(converged({ route: kubeRoute }))).toEqual([]);
    // A loopback route (left by a Docker-runtime control plane) is wrong on Kubernetes, and the other way round.
    expect(onKube(converged())).toEqual([{ type: 'ensureRoute', to: 'container', drift: 'route_wrong' }]);
    expect(run(desired(), converged({ route: kubeRoute }))).toEqual([
      { type: 'ensureRoute', to: 'container', drift: 'route_wrong' },
    ]);
  });

  it('re-reserves a lost port and moves the container to it', () => {
    const actions = run(desired(), converged({ port: undefined }));
    expect(types(actions)).toEqual(['reservePort', 'removeContainer', 'createContainer', 'ensureRoute']);
  });

  it('re-renders a stale workspace without touching the container', () => {
    expect(types(run(desired(), converged({ workspace: { exists: true, contentHash: 'old' } })))).toEqual(['writeWorkspace']);
  });

  it('plans nothing while paused', () => {
    const result = plan({ desired: desired({ paused: true }), observed: converged({ containers: [] }), now: 0, retentionMs: 0 });
    expect(result.actions).toEqual([]);
    expect(result.note).toMatch(/paused/);
  });
});

describe('plan: fleet changes wait for their rollout', () => {
  const fleet = desired({ ownHash: 'own-1' });
  const outdated = (overrides: Partial<ObservedContainer> = {}) => container({ specHash: 'old', ownHash: 'own-1', ...overrides });

  it('a container outdated by a fleet change (same own hash) is kept while the rollout holds it', () => {
    const result = plan({
      desired: fleet,
      observed: converged({ containers: [outdated()] }),
      now: 0,
      retentionMs: 0,
      recreateAllowed: false,
    });
    expect(result.actions).toEqual([]);
    expect(result.waitingForRollout).toEqual({ heldHash: 'old' });
    expect(fleetChangeOf(fleet, converged({ containers: [outdated()] }))?.id).toBe('c1');
  });

  it('is replaced as soon as the rollout allows it', () => {
    expect(types(run(fleet, converged({ containers: [outdated()] }), 0, true))).toEqual(['removeContainer', 'createContainer']);
  });

  it('a held container is still started, restarted and routed to like a current one', () => {
    expect(types(run(fleet, converged({ containers: [outdated({ health: 'unhealthy' })] }), 0, false))).toEqual([
      'restartContainer',
    ]);
    expect(run(fleet, converged({ containers: [outdated()], route: undefined }), 0, false)).toEqual([
      { type: 'ensureRoute', to: 'container', drift: 'route_missing' },
    ]);
    expect(
      types(run(fleet, converged({ containers: [outdated()], workspace: { exists: true, contentHash: 'old' } }), 0, false)),
    ).toEqual(['writeWorkspace']);
  });

  it("the customer's own change (another own hash) is never held back", () => {
    const own = converged({ containers: [outdated({ ownHash: 'own-0' })] });
    expect(fleetChangeOf(fleet, own)).toBeUndefined();
    expect(types(run(fleet, own, 0, false))).toEqual(['removeContainer', 'createContainer']);
  });

  it('a stopped outdated container is held and started on its old hash (the rollout decides when it is recreated)', () => {
    // A customer resumed during a rollout, or every container after an engine restart: recreating
    // them here would skip the rollout's limit, image check and rollback.
    const stopped = converged({ containers: [outdated({ state: 'exited' })] });
    expect(fleetChangeOf(fleet, stopped)?.id).toBe('c1');
    expect(types(run(fleet, stopped, 0, false))).toEqual(['startContainer']);
  });

  it('a dead container, one on another port, or one already replaced is not held', () => {
    expect(types(run(fleet, converged({ containers: [outdated({ state: 'dead' })] }), 0, false))).toEqual([
      'removeContainer',
      'createContainer',
    ]);
    expect(fleetChangeOf(fleet, converged({ containers: [outdated({ hostPort: 30999 })] }))).toBeUndefined();
    const replaced = converged({ containers: [outdated({ id: 'c0' }), container({ id: 'c2', state: 'created' })] });
    expect(fleetChangeOf(fleet, replaced)).toBeUndefined();
    expect(
      fleetChangeOf(desired({ ownHash: 'own-1', state: 'suspended' }), converged({ containers: [outdated()] })),
    ).toBeUndefined();
  });
});

describe('plan: suspended, pending, cancelled, orphans', () => {
  it('suspended: page first, then stop, keeping the container', () => {
    expect(types(run(desired({ state: 'suspended' }), converged()))).toEqual(['ensureRoute', 'stopContainer']);
    const done = converged({ containers: [container({ state: 'exited' })], route: route({ kind: 'suspended' }) });
    expect(run(desired({ state: 'suspended' }), done)).toEqual([]);
  });

  it('resume after suspend starts the same container', () => {
    const suspended = converged({ containers: [container({ state: 'exited' })], route: route({ kind: 'suspended' }) });
    expect(run(desired(), suspended)).toEqual([
      { type: 'startContainer', id: 'c1', drift: 'container_stopped' },
      { type: 'ensureRoute', to: 'container', drift: 'route_wrong' },
    ]);
  });

  it('pending: nothing runs', () => {
    expect(
      run(desired({ state: 'pending' }), { workspace: { exists: false }, port: undefined, containers: [], route: undefined }),
    ).toEqual([]);
    expect(types(run(desired({ state: 'pending' }), converged()))).toEqual(['removeRoute', 'removeContainer', 'releasePort']);
  });

  it('cancelled: route, then container, then port; workspace kept until the purge time', () => {
    const d = desired({ state: 'cancelled', cancelledAtMs: 1000 });
    expect(types(run(d, converged(), 2000))).toEqual(['removeRoute', 'removeContainer', 'releasePort']);
    const tornDown: Observed = {
      workspace: { exists: true, contentHash: 'ws-a' },
      port: undefined,
      containers: [],
      route: undefined,
    };
    expect(run(d, tornDown, 2000)).toEqual([]);
    expect(types(run(d, tornDown, 1000 + 30 * DAY))).toEqual(['removeWorkspace', 'markDeleted']);
  });

  it('orphans: everything with our marks is removed, drift counted', () => {
    expect(run(undefined, converged())).toEqual([
      { type: 'removeRoute', drift: 'orphan_route' },
      { type: 'removeContainer', id: 'c1', drift: 'orphan_container' },
      { type: 'releasePort', drift: 'orphan_port' },
    ]);
  });
});

// ---- Properties: a simulated world that executes actions the way the real adapters do. ----

interface World {
  observed: Observed;
  desired: Desired | undefined;
  nextId: number;
}

function execute(world: World, actions: Action[]): World {
  const o: Observed = structuredClone(world.observed);
  let d = world.desired;
  let nextId = world.nextId;
  for (const action of actions) {
    switch (action.type) {
      case 'writeWorkspace':
        o.workspace = { exists: true, contentHash: d?.workspaceHash };
        break;
      case 'reservePort':
        o.port ??= 30100;
        break;
      case 'createContainer':
        o.containers.push({
          ...container({ id: `new-${nextId++}`, state: 'running', health: 'healthy' }),
          specHash: d?.specHash,
          ...(d?.ownHash === undefined ? {} : { ownHash: d.ownHash }),
          ...(o.port === undefined ? {} : { hostPort: o.port }),
        });
        if (o.port === undefined) delete o.containers.at(-1)!.hostPort;
        break;
      case 'startContainer':
      case 'restartContainer':
        o.containers = o.containers.map((c) => (c.id === action.id ? { ...c, state: 'running', health: 'healthy' } : c));
        break;
      case 'stopContainer':
        o.containers = o.containers.map((c) => (c.id === action.id ? { ...c, state: 'exited', health: 'unknown' } : c));
        break;
      case 'removeContainer':
        o.containers = o.containers.filter((c) => c.id !== action.id);
        break;
      case 'ensureRoute': {
        const target: RouteTarget = action.to === 'suspendedPage' ? { kind: 'suspended' } : upstreamFor(o.port ?? -1);
        // Order of operations: a container route only to a running, healthy container on the
        // port. The executor waits for a starting container to become healthy (here it does).
        if (action.to === 'container') {
          o.containers = o.containers.map((c) =>
            c.hostPort === o.port && (c.state === 'running' || c.state === 'restarting') && c.health !== 'unhealthy'
              ? { ...c, state: 'running', health: 'healthy' }
              : c,
          );
          expect(o.containers.some((c) => c.hostPort === o.port && c.state === 'running' && c.health === 'healthy')).toBe(true);
        }
        o.route = route(target, [d?.host ?? HOST]);
        break;
      }
      case 'removeRoute':
        o.route = undefined;
        break;
      case 'releasePort':
        // Teardown order: the port goes only after the route and every container are gone.
        expect(o.route).toBeUndefined();
        expect(o.containers).toEqual([]);
        o.port = undefined;
        break;
      case 'removeWorkspace':
        o.workspace = { exists: false };
        break;
      case 'markDeleted':
        d = undefined;
        break;
    }
  }
  return { observed: o, desired: d, nextId };
}

const arbHash = fc.constantFrom('hash-a', 'hash-b', undefined);
const arbContainer = fc
  .record({
    id: fc.constantFrom('c1', 'c2', 'c3'),
    customer: fc.constant('alice'),
    name: fc.constant('blytz-alice'),
    specHash: arbHash,
    ownHash: fc.constantFrom('own-1', 'own-2', undefined),
    state: fc.constantFrom('created', 'running', 'paused', 'restarting', 'exited', 'dead'),
    health: fc.constantFrom('healthy', 'unhealthy', 'starting', 'unknown'),
    hostPort: fc.constantFrom(30001, 30002, undefined),
  })
  .map((c) => {
    const { hostPort, specHash, ownHash, ...rest } = c;
    return {
      ...rest,
      specHash,
      ...(ownHash === undefined ? {} : { ownHash }),
      ...(hostPort === undefined ? {} : { hostPort }),
    } as ObservedContainer;
  });
const arbTarget: fc.Arbitrary<RouteTarget | { kind: 'unknown' }> = fc.oneof(
  fc.constantFrom(30001, 30002).map((p) => upstreamFor(p)),
  fc.constant({ kind: 'suspended' as const }),
  fc.constant({ kind: 'unknown' as const }),
);
const arbObserved: fc.Arbitrary<Observed> = fc.record({
  workspace: fc.oneof(
    fc.constant({ exists: false }),
    fc.constantFrom('ws-a', 'ws-b').map((h) => ({ exists: true, contentHash: h })),
  ),
  port: fc.constantFrom(30001, 30002, undefined),
  containers: fc.uniqueArray(arbContainer, { selector: (c) => c.id, maxLength: 3 }),
  route: fc.option(
    fc
      .record({ target: arbTarget, hosts: fc.constantFrom([HOST], ['other.example'], []) })
      .map((r) => ({ customer: 'alice', id: 'blytz-alice', target: r.target, hosts: [...r.hosts] })),
    { nil: undefined },
  ),
});
const arbDesired: fc.Arbitrary<Desired | undefined> = fc.option(
  fc
    .record({
      state: fc.constantFrom('pending', 'active', 'suspended', 'cancelled'),
      paused: fc.boolean(),
      specHash: fc.constantFrom('hash-a', 'hash-b'),
      workspaceHash: fc.constantFrom('ws-a', 'ws-b'),
      cancelledAtMs: fc.constantFrom(null, 0, 10 * DAY),
      ownHash: fc.constantFrom('own-1', 'own-2'),
    })
    .map((r) => desired(r)),
  { nil: undefined },
);
const arbNow = fc.constantFrom(DAY, 100 * DAY);
const arbAllowed = fc.boolean();

describe('plan: properties', () => {
  it('converges in one pass: executing the plan and planning again yields no actions', () => {
    fc.assert(
      fc.property(arbDesired, arbObserved, arbNow, arbAllowed, (d, o, now, allowed) => {
        const after = execute({ desired: d, observed: o, nextId: 0 }, run(d, o, now, allowed));
        expect(run(after.desired, after.observed, now, allowed)).toEqual([]);
      }),
      { numRuns: 2000 },
    );
  });

  it('a held fleet change keeps one running container and never removes it; once allowed it converges to the desired hash', () => {
    fc.assert(
      fc.property(arbDesired, arbObserved, arbNow, (d, o, now) => {
        const held = fleetChangeOf(d, o);
        const result = plan({ desired: d, observed: o, now, retentionMs: 30 * DAY, recreateAllowed: false });
        if (held) {
          expect(result.waitingForRollout?.heldHash).toBe(held.specHash);
          expect(
            result.actions.some((a) => a.type === 'createContainer' || (a.type === 'removeContainer' && a.id === held.id)),
          ).toBe(false);
        } else {
          expect(result).toEqual(plan({ desired: d, observed: o, now, retentionMs: 30 * DAY }));
        }
        const after = execute({ desired: d, observed: o, nextId: 0 }, run(d, o, now, true));
        if (after.desired?.state === 'active' && !after.desired.paused) {
          expect(after.observed.containers.map((c) => c.specHash)).toEqual([after.desired.specHash]);
          expect(fleetChangeOf(after.desired, after.observed)).toBeUndefined();
        }
      }),
      { numRuns: 1000 },
    );
  });

  it('a held fleet change keeps the held container even when a duplicate with other own inputs sorts first (found by the property above)', () => {
    const d = desired({ specHash: 'hash-b', ownHash: 'own-1' });
    const stale = container({ id: 'c1', specHash: 'hash-a', ownHash: 'own-2', hostPort: 30001 });
    const held = container({ id: 'c2', specHash: 'hash-a', ownHash: 'own-1', hostPort: 30001 });
    const o = converged({ containers: [stale, held], route: undefined });
    expect(fleetChangeOf(d, o)?.id).toBe('c2');
    const actions = run(d, o, 0, false);
    expect(actions).toContainEqual(expect.objectContaining({ type: 'removeContainer', id: 'c1' }));
    expect(actions.some((a) => a.type === 'removeContainer' && a.id === 'c2')).toBe(false);
  });

  it('is idempotent: planning twice on the same input gives the same plan, and a converged world gives none', () => {
    fc.assert(
      fc.property(arbDesired, arbObserved, arbNow, (d, o, now) => {
        expect(run(d, o, now)).toEqual(run(d, o, now));
        const after = execute({ desired: d, observed: o, nextId: 0 }, run(d, o, now));
        const again = execute(after, run(after.desired, after.observed, now));
        expect(again.observed).toEqual(after.observed);
      }),
      { numRuns: 1000 },
    );
  });

  it('does not depend on the order the world lists containers in', () => {
    fc.assert(
      fc.property(arbDesired, arbObserved, arbNow, arbAllowed, (d, o, now, allowed) => {
        const reversed = { ...o, containers: [...o.containers].reverse() };
        expect(run(d, reversed, now, allowed)).toEqual(run(d, o, now, allowed));
      }),
    );
  });
});
