import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { plan, upstreamFor, type Action, type Desired, type Observed } from '../../src/controller/customer/plan.js';
import type { ObservedContainer } from '../../src/runtime/runtime.js';
import type { RouteTarget } from '../../src/proxy/route-table.js';

/**
 * The blue-green update (template `updateStrategy: blueGreen` on a runtime that runs two
 * containers side by side): new container on the `next` port, route switch once it is healthy,
 * then the old one goes and the next port becomes the customer's. Each intermediate state a
 * killed controller can leave behind is planned from what is observed alone.
 */

const HOST = 'alice.blytz.localhost';
const PORT = 30001;
const NEXT = 30002;
const DAY = 86_400_000;

function desired(overrides: Partial<Desired> = {}): Desired {
  return {
    name: 'alice',
    generation: 1,
    state: 'active',
    paused: false,
    cancelledAtMs: null,
    specHash: 'new',
    workspaceHash: 'ws',
    host: HOST,
    ownHash: 'own',
    updateStrategy: 'blueGreen',
    ...overrides,
  };
}

function oldContainer(overrides: Partial<ObservedContainer> = {}): ObservedContainer {
  return {
    id: 'old',
    customer: 'alice',
    name: 'blytz-alice',
    specHash: 'old',
    ownHash: 'own',
    state: 'running',
    health: 'healthy',
    hostPort: PORT,
    ...overrides,
  };
}

function newContainer(overrides: Partial<ObservedContainer> = {}): ObservedContainer {
  return {
    id: 'fresh',
    customer: 'alice',
    name: 'blytz-alice_next',
    specHash: 'new',
    ownHash: 'own',
    state: 'running',
    health: 'starting',
    hostPort: NEXT,
    provisional: true,
    ...overrides,
  };
}

const route = (port: number) => ({ customer: 'alice', id: 'blytz-alice', hosts: [HOST], target: upstreamFor(port) });

function world(overrides: Partial<Observed> = {}): Observed {
  return {
    workspace: { exists: true, contentHash: 'ws' },
    port: PORT,
    containers: [oldContainer()],
    route: route(PORT),
    ...overrides,
  };
}

const run = (d: Desired, o: Observed, options: { sideBySide?: boolean; recreateAllowed?: boolean } = {}) =>
  plan({ desired: d, observed: o, now: 0, retentionMs: 30 * DAY, sideBySide: options.sideBySide ?? true, recreateAllowed: options.recreateAllowed ?? true })
    .actions;

describe('plan: blue-green update, each intermediate state', () => {
  it('old only: reserve the next port, start the new container there, switch, then remove the old one and promote', () => {
    expect(run(desired(), world())).toEqual([
      { type: 'reservePort', slot: 'next', drift: 'port_missing' },
      { type: 'createContainer', slot: 'next', drift: 'container_missing' },
      { type: 'ensureRoute', to: 'container', slot: 'next', drift: 'route_wrong' },
      { type: 'removeContainer', id: 'old', drift: 'container_outdated', graceful: true, drain: true },
      { type: 'promotePort' },
      { type: 'adoptContainer' },
    ]);
  });

  it('old + next port reserved, no container yet (killed after the reservation): create on it, no second reservation', () => {
    expect(run(desired(), world({ nextPort: NEXT })).map((a) => a.type)).toEqual([
      'createContainer',
      'ensureRoute',
      'removeContainer',
      'promotePort',
      'adoptContainer',
    ]);
  });

  it('old + new starting: no second container; the route switch (which waits for health) comes before removing the old one', () => {
    const actions = run(desired(), world({ nextPort: NEXT, containers: [oldContainer(), newContainer()] }));
    expect(actions).toEqual([
      { type: 'ensureRoute', to: 'container', slot: 'next', drift: 'route_wrong' },
      { type: 'removeContainer', id: 'old', drift: 'container_outdated', graceful: true, drain: true },
      { type: 'promotePort' },
      { type: 'adoptContainer', id: 'fresh' },
    ]);
  });

  it('old + new created but stopped (killed between create and start): start it, then as before', () => {
    const actions = run(desired(), world({ nextPort: NEXT, containers: [oldContainer(), newContainer({ state: 'created', health: 'unknown' })] }));
    expect(actions[0]).toEqual({ type: 'startContainer', id: 'fresh', slot: 'next', drift: 'container_stopped' });
    expect(actions.map((a) => a.type).slice(1)).toEqual(['ensureRoute', 'removeContainer', 'promotePort', 'adoptContainer']);
  });

  it('old + new unhealthy: restart the new one; the old one is not touched before the switch', () => {
    const actions = run(desired(), world({ nextPort: NEXT, containers: [oldContainer(), newContainer({ health: 'unhealthy' })] }));
    expect(actions[0]).toEqual({ type: 'restartContainer', id: 'fresh', slot: 'next', drift: 'container_unhealthy' });
    expect(actions.findIndex((a) => a.type === 'removeContainer')).toBeGreaterThan(actions.findIndex((a) => a.type === 'ensureRoute'));
  });

  it('old + new healthy + route on old: switch, remove, promote', () => {
    const actions = run(desired(), world({ nextPort: NEXT, containers: [oldContainer(), newContainer({ health: 'healthy' })] }));
    expect(actions.map((a) => a.type)).toEqual(['ensureRoute', 'removeContainer', 'promotePort', 'adoptContainer']);
  });

  it('route on new + old still present: remove the old one and promote (no route change)', () => {
    const actions = run(
      desired(),
      world({ nextPort: NEXT, containers: [oldContainer(), newContainer({ health: 'healthy' })], route: route(NEXT) }),
    );
    expect(actions).toEqual([
      { type: 'removeContainer', id: 'old', drift: 'container_outdated', graceful: true, drain: true },
      { type: 'promotePort' },
      { type: 'adoptContainer', id: 'fresh' },
    ]);
  });

  it('route on new, old gone, not yet promoted: promote and adopt only', () => {
    const actions = run(desired(), world({ nextPort: NEXT, containers: [newContainer({ health: 'healthy' })], route: route(NEXT) }));
    expect(actions).toEqual([{ type: 'promotePort' }, { type: 'adoptContainer', id: 'fresh' }]);
  });

  it('new only on the promoted port under its provisional name: adopt the name', () => {
    const actions = run(desired(), world({ port: NEXT, containers: [newContainer({ health: 'healthy' })], route: route(NEXT) }));
    expect(actions).toEqual([{ type: 'adoptContainer', id: 'fresh' }]);
  });

  it('new only with a leftover next reservation: release it', () => {
    const promoted = newContainer({ name: 'blytz-alice', provisional: false, health: 'healthy', hostPort: PORT });
    const actions = run(desired(), world({ nextPort: NEXT, containers: [promoted] }));
    expect(actions).toEqual([{ type: 'releasePort', slot: 'next', drift: 'next_port_leftover' }]);
  });

  it('a rolled-back update (desired back on the old hash) removes the new container, then releases the next port', () => {
    const actions = run(desired({ specHash: 'old' }), world({ nextPort: NEXT, containers: [oldContainer(), newContainer({ health: 'unhealthy' })] }));
    expect(actions).toEqual([
      // Our own assistant, running: stopped gracefully before it goes.
      { type: 'removeContainer', id: 'fresh', drift: 'container_outdated', graceful: true },
      { type: 'releasePort', slot: 'next', drift: 'next_port_leftover' },
    ]);
  });

  it('a fleet change held by its rollout keeps the old container and starts nothing beside it', () => {
    const result = plan({ desired: desired(), observed: world(), now: 0, retentionMs: DAY, sideBySide: true, recreateAllowed: false });
    expect(result.actions).toEqual([]);
    expect(result.waitingForRollout).toEqual({ heldHash: 'old' });
  });

  it('a switch abandoned after the route moved (rollout held it): the route returns to the old one before the new one goes', () => {
    const observed = world({ nextPort: NEXT, containers: [oldContainer(), newContainer({ health: 'healthy' })], route: route(NEXT) });
    const result = plan({ desired: desired(), observed, now: 0, retentionMs: DAY, sideBySide: true, recreateAllowed: false });
    expect(result.actions).toEqual([
      { type: 'ensureRoute', to: 'container', drift: 'route_wrong' },
      // It served until a moment ago: what the proxy already sent it gets time to finish.
      { type: 'removeContainer', id: 'fresh', drift: 'container_outdated', graceful: true, drain: true },
      { type: 'releasePort', slot: 'next', drift: 'next_port_leftover' },
    ]);
  });

  it('the route goes back to the old container when it points at a next port without the new container', () => {
    const actions = run(desired(), world({ nextPort: NEXT, route: route(NEXT) }));
    expect(actions[0]).toEqual({ type: 'ensureRoute', to: 'container', drift: 'route_wrong' });
    expect(actions.map((a) => a.type).slice(1)).toEqual(['createContainer', 'ensureRoute', 'removeContainer', 'promotePort', 'adoptContainer']);
  });

  it('an earlier update\'s container still named provisional is adopted before the next one is created', () => {
    const actions = run(desired(), world({ containers: [oldContainer({ name: 'blytz-alice_next', provisional: true })] }));
    expect(actions.slice(0, 2)).toEqual([
      { type: 'adoptContainer', id: 'old' },
      { type: 'reservePort', slot: 'next', drift: 'port_missing' },
    ]);
  });

  it('recreate templates, and runtimes that cannot run two side by side, are updated by recreate as before', () => {
    const recreate = run(desired({ updateStrategy: 'recreate' }), world());
    expect(recreate.map((a) => a.type)).toEqual(['removeContainer', 'createContainer']);
    expect(run(desired(), world(), { sideBySide: false })).toEqual(recreate);
    expect(run(desired({ updateStrategy: 'recreate' }), world(), { sideBySide: true })).toEqual(recreate);
  });

  it('nothing serving (old stopped): recreate is as good; no second port', () => {
    const actions = run(desired(), world({ containers: [oldContainer({ state: 'exited', health: 'unknown' })] }));
    expect(actions.map((a) => a.type)).toEqual(['removeContainer', 'createContainer']);
  });
});

// ---- Crash safety: a simulated world, the controller killed after any action, passes until converged. ----

interface World {
  observed: Observed;
  nextId: number;
}

interface Scenario {
  /** Whether a new container ever becomes healthy. */
  newHealthy: boolean;
}

/**
 * Executes actions like the real adapters, checking the invariants after each: the route always
 * points at a running, healthy container; container names are unique; a released port has no
 * container on it. `crashAfter` stops after that many actions (a SIGKILL). Returns the world and
 * whether the executor stopped itself (waiting for health).
 */
function execute(world: World, d: Desired, actions: Action[], scenario: Scenario, crashAfter = Infinity): World {
  const o: Observed = structuredClone(world.observed);
  let nextId = world.nextId;
  const portOf = (slot: 'next' | undefined) => (slot === 'next' ? o.nextPort : o.port);
  let done = 0;
  for (const action of actions) {
    if (done++ >= crashAfter) break;
    let stop = false;
    switch (action.type) {
      case 'writeWorkspace':
        o.workspace = { exists: true, contentHash: d.workspaceHash };
        break;
      case 'reservePort':
        if (action.slot === 'next') o.nextPort ??= 30100 + nextId++;
        else o.port ??= 30100 + nextId++;
        break;
      case 'createContainer': {
        const port = portOf(action.slot) ?? (action.slot === 'next' ? (o.nextPort = 30100 + nextId++) : (o.port = 30100 + nextId++));
        const name = action.slot === 'next' ? 'blytz-alice_next' : 'blytz-alice';
        expect(o.containers.map((c) => c.name), `name ${name} taken`).not.toContain(name);
        o.containers.push({
          id: `c${nextId++}`,
          customer: 'alice',
          name,
          specHash: d.specHash,
          ownHash: 'own',
          state: 'running',
          health: 'starting',
          hostPort: port,
          ...(action.slot === 'next' ? { provisional: true } : {}),
        });
        break;
      }
      case 'startContainer':
      case 'restartContainer':
        o.containers = o.containers.map((c) => (c.id === action.id ? { ...c, state: 'running', health: 'starting' } : c));
        break;
      case 'stopContainer':
        o.containers = o.containers.map((c) => (c.id === action.id ? { ...c, state: 'exited', health: 'unknown' } : c));
        break;
      case 'removeContainer':
        o.containers = o.containers.filter((c) => c.id !== action.id);
        break;
      case 'ensureRoute': {
        const port = portOf(action.slot);
        // The executor waits (bounded) for a running container on the port to be healthy.
        const target = o.containers.find((c) => c.hostPort === port && c.state === 'running' && c.health !== 'unhealthy');
        const becomes = target && (target.specHash !== d.specHash || scenario.newHealthy || target.health === 'healthy');
        if (port === undefined || !target || !becomes) {
          stop = true;
          if (target && target.specHash === d.specHash) target.health = 'unhealthy';
          break;
        }
        target.health = 'healthy';
        o.route = { customer: 'alice', id: 'blytz-alice', hosts: [HOST], target: upstreamFor(port) };
        break;
      }
      case 'removeRoute':
        o.route = undefined;
        break;
      case 'releasePort':
        if (action.slot === 'next') {
          expect(o.containers.some((c) => c.hostPort === o.nextPort)).toBe(false);
          delete o.nextPort;
        } else {
          o.port = undefined;
          delete o.nextPort;
        }
        break;
      case 'promotePort':
        if (o.nextPort !== undefined) {
          o.port = o.nextPort;
          delete o.nextPort;
        }
        break;
      case 'adoptContainer': {
        const id = action.id ?? (o.containers.length === 1 && o.containers[0]!.provisional ? o.containers[0]!.id : undefined);
        if (id === undefined) break;
        expect(o.containers.filter((c) => c.id !== id).map((c) => c.name), 'adopting beside blytz-alice').not.toContain('blytz-alice');
        o.containers = o.containers.map((c) => (c.id === id ? { ...c, name: 'blytz-alice', provisional: false } : c));
        break;
      }
      case 'removeWorkspace':
      case 'markDeleted':
        break;
    }
    // Zero downtime: the route always reaches a running container that is not failing.
    const dial = (o.route?.target as RouteTarget | undefined)?.kind === 'upstream' ? (o.route!.target as { dial: string }).dial : undefined;
    const routed = o.containers.find((c) => dial !== undefined && upstreamFor(c.hostPort ?? -1).dial === dial);
    expect(routed, `after ${action.type} the route points at nothing`).toBeDefined();
    expect(routed!.state).toBe('running');
    if (stop) break;
  }
  return { observed: o, nextId };
}

const arbStart: fc.Arbitrary<Observed> = fc
  .record({
    nextReserved: fc.boolean(),
    fresh: fc.constantFrom('none', 'created', 'starting', 'healthy', 'unhealthy'),
    routeOnNext: fc.boolean(),
    oldPresent: fc.boolean(),
    promoted: fc.boolean(),
    provisionalName: fc.boolean(),
  })
  .map(({ nextReserved, fresh, routeOnNext, oldPresent, promoted, provisionalName }) => {
    // Any state a sequence of the planner's own steps can leave behind.
    if (promoted) {
      return world({
        port: NEXT,
        ...(nextReserved ? { nextPort: 30003 } : {}),
        containers: [newContainer({ health: 'healthy', provisional: provisionalName, name: provisionalName ? 'blytz-alice_next' : 'blytz-alice' })],
        route: route(NEXT),
      });
    }
    const containers: ObservedContainer[] = [];
    const hasFresh = nextReserved && fresh !== 'none';
    const onNext = hasFresh && routeOnNext && fresh === 'healthy';
    // The old container goes only after the route is on the new one.
    if (oldPresent || !onNext) containers.push(oldContainer());
    if (hasFresh) {
      containers.push(
        newContainer({
          state: fresh === 'created' ? 'created' : 'running',
          health: fresh === 'created' ? 'unknown' : (fresh as ObservedContainer['health']),
        }),
      );
    }
    return world({ ...(nextReserved ? { nextPort: NEXT } : {}), containers, route: route(onNext ? NEXT : PORT) });
  });

describe('plan: blue-green crash safety (properties)', () => {
  it('from any intermediate state, killed after any step, the next passes converge with no downtime, duplicates or leaks', () => {
    fc.assert(
      fc.property(arbStart, fc.array(fc.nat(6), { minLength: 1, maxLength: 4 }), (start, crashes) => {
        const d = desired();
        let w: World = { observed: start, nextId: 10 };
        for (let pass = 0; pass < 12; pass++) {
          const actions = run(d, w.observed);
          if (actions.length === 0) break;
          w = execute(w, d, actions, { newHealthy: true }, crashes[pass] ?? Infinity);
        }
        const o = w.observed;
        expect(run(d, o)).toEqual([]);
        expect(o.containers).toHaveLength(1);
        expect(o.containers[0]).toMatchObject({ specHash: 'new', hostPort: o.port, name: 'blytz-alice', state: 'running' });
        expect(o.containers[0]!.provisional ?? false).toBe(false);
        expect(o.nextPort).toBeUndefined();
        expect(o.route?.target).toEqual(upstreamFor(o.port!));
      }),
      { numRuns: 1000 },
    );
  });

  it('a new container that never becomes healthy never takes the old one down; rolled back, only the old one is left', () => {
    fc.assert(
      fc.property(fc.array(fc.nat(6), { minLength: 1, maxLength: 4 }), (crashes) => {
        const d = desired();
        let w: World = { observed: world(), nextId: 10 };
        for (let pass = 0; pass < 6; pass++) w = execute(w, d, run(d, w.observed), { newHealthy: false }, crashes[pass] ?? Infinity);
        expect(w.observed.containers.map((c) => c.id)).toContain('old');
        expect(w.observed.route?.target).toEqual(upstreamFor(PORT));
        // The rollout gives up: the customer is sent back to what the old container runs.
        const back = desired({ specHash: 'old' });
        for (let pass = 0; pass < 4; pass++) w = execute(w, back, run(back, w.observed), { newHealthy: false });
        expect(run(back, w.observed)).toEqual([]);
        expect(w.observed.containers.map((c) => c.id)).toEqual(['old']);
        expect(w.observed.nextPort).toBeUndefined();
        expect(w.observed.port).toBe(PORT);
      }),
      { numRuns: 300 },
    );
  });
});
