import { upstreamFor, type Desired, type Observed } from '../../src/controller/customer/plan.js';
import type { RouteTarget } from '../../src/proxy/route-table.js';
import type { ObservedContainer } from '../../src/runtime/runtime.js';

/**
 * Customer `alice` as the planner and status see her, converged by default: her desired spec,
 * her container on port 30001, her route to it. Tests override what they are about.
 */
export const HOST = 'alice.blytz.localhost';

export function desired(overrides: Partial<Desired> = {}): Desired {
  return {
    name: 'alice',
    generation: 1,
    state: 'active',
    paused: false,
    cancelledAtMs: null,
    specHash: 'hash-a',
    workspaceHash: 'ws-a',
    host: HOST,
    ...overrides,
  };
}

export function container(overrides: Partial<ObservedContainer> = {}): ObservedContainer {
  return {
    id: 'c1',
    customer: 'alice',
    name: 'blytz-alice',
    specHash: 'hash-a',
    state: 'running',
    health: 'healthy',
    hostPort: 30001,
    ...overrides,
  };
}

export function route(target: RouteTarget = upstreamFor(30001), hosts = [HOST]) {
  return { customer: 'alice', id: 'blytz-alice', hosts, target };
}

export function converged(overrides: Partial<Observed> = {}): Observed {
  return {
    workspace: { exists: true, contentHash: 'ws-a' },
    port: 30001,
    containers: [container()],
    route: route(),
    ...overrides,
  };
}
