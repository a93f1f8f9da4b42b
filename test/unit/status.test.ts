import { describe, expect, it } from 'vitest';
import type { Desired } from '../../src/controller/customer/plan.js';
import { computeStatus, failedStatus, isConverged, type StatusInput } from '../../src/controller/customer/status.js';
import type { CustomerStatus } from '../../src/domain/customer.js';
import { container, converged, desired as convergedDesired, HOST } from '../support/planning.js';

const NOW = new Date('2026-01-02T03:04:05.000Z');
const EARLIER = '2026-01-01T00:00:00.000Z';
const desired = (overrides: Partial<Desired> = {}) => convergedDesired({ generation: 2, ...overrides });
const world = converged;

function status(overrides: Partial<StatusInput> = {}): CustomerStatus {
  const d = overrides.desired ?? desired();
  return computeStatus({
    name: 'alice',
    generation: 2,
    state: d.state,
    paused: d.paused,
    desired: d,
    observed: world(),
    previous: {},
    url: `https://${HOST}`,
    now: NOW,
    ...overrides,
  });
}

const condition = (s: CustomerStatus, type: string) => s.conditions?.find((c) => c.type === type);

describe('computeStatus', () => {
  it('says Ready with every condition True when the world matches', () => {
    const s = status();
    expect(s).toMatchObject({ phase: 'Ready', observedGeneration: 2, url: `https://${HOST}`, hostPort: 30001 });
    expect(s.conditions?.map((c) => [c.type, c.status, c.reason])).toEqual([
      ['WorkspaceReady', 'True', 'Rendered'],
      ['ContainerReady', 'True', 'Healthy'],
      ['RouteReady', 'True', 'Routed'],
      ['Ready', 'True', 'AllReady'],
    ]);
    expect(s.conditions?.every((c) => c.lastTransitionTime === NOW.toISOString() && c.observedGeneration === 2)).toBe(true);
  });

  it('keeps lastTransitionTime while a condition does not flip, and moves it when it does', () => {
    const previous = status({ now: new Date(EARLIER) });
    const unhealthy = status({ previous, observed: world({ containers: [container({ health: 'unhealthy', healthMessage: 'HTTP 500' })] }) });
    expect(condition(unhealthy, 'WorkspaceReady')?.lastTransitionTime).toBe(EARLIER);
    expect(condition(unhealthy, 'ContainerReady')).toMatchObject({ status: 'False', reason: 'Unhealthy', message: 'HTTP 500', lastTransitionTime: NOW.toISOString() });
  });

  it('tells a first start (Provisioning) from a customer that was up at this generation (Degraded)', () => {
    const missing = world({ containers: [] });
    expect(status({ observed: missing }).phase).toBe('Provisioning');
    expect(status({ observed: missing, previous: { phase: 'Ready', observedGeneration: 2 } }).phase).toBe('Degraded');
    // A new generation being applied is progress, not degradation.
    expect(status({ observed: missing, previous: { phase: 'Ready', observedGeneration: 1 } }).phase).toBe('Provisioning');
    expect(condition(status({ observed: missing }), 'ContainerReady')?.reason).toBe('ContainerMissing');
  });

  it('puts the failure on Ready, and a terminal one makes the phase Failed', () => {
    const failure = { reason: 'DockerFailed', message: 'docker: connection refused', terminal: false };
    const s = status({ failure });
    expect(condition(s, 'Ready')).toMatchObject({ status: 'False', reason: 'DockerFailed', message: failure.message });
    expect(s.phase).toBe('Provisioning');
    expect(status({ failure: { ...failure, terminal: true } }).phase).toBe('Failed');
  });

  it('shows the restart back-off with an absolute time, so held passes write nothing new', () => {
    const notBefore = Date.parse('2026-01-02T03:05:00.000Z');
    const observed = world({ containers: [container({ health: 'unhealthy', healthMessage: 'no answer' })] });
    const s = status({ observed, restartHoldOf: () => ({ restarts: 2, notBefore }) });
    expect(condition(s, 'ContainerReady')).toMatchObject({ reason: 'RestartBackOff' });
    expect(condition(s, 'ContainerReady')?.message).toContain('2026-01-02T03:05:00.000Z');
  });

  it('says SwitchingOver (Provisioning, not Degraded) while a blue-green update runs its new container', () => {
    const observed = world({
      nextPort: 30002,
      containers: [container({ specHash: 'old' }), container({ id: 'c2', specHash: 'hash-a', hostPort: 30002, health: 'starting' })],
    });
    const s = status({ observed, previous: { phase: 'Ready', observedGeneration: 2 } });
    expect(condition(s, 'ContainerReady')?.reason).toBe('SwitchingOver');
    expect(s.phase).toBe('Provisioning');
  });

  it('waits on the route with the note of what it waits for', () => {
    const s = status({ observed: world({ route: undefined }), note: 'waiting for the container to become healthy before routing to it' });
    expect(condition(s, 'RouteReady')).toMatchObject({ status: 'False', reason: 'RouteMissing', message: 'waiting for the container to become healthy before routing to it' });
    expect(condition(s, 'Ready')?.reason).toBe('RouteMissing');
  });

  it('adds UpToDate=False for a rollout holding the customer back, and Paused for spec.paused', () => {
    const rollout = { reason: 'WaitingForRollout', message: 'waiting for a slot' };
    expect(condition(status({ rollout }), 'UpToDate')).toMatchObject({ status: 'False', reason: 'WaitingForRollout' });
    const paused = status({ paused: true, desired: desired({ paused: true }) });
    expect(condition(paused, 'Paused')).toMatchObject({ status: 'True', reason: 'Paused' });
    expect(condition(paused, 'UpToDate')).toBeUndefined();
  });

  it.each([
    ['pending', world({ containers: [], route: undefined, port: undefined }), 'Pending', 'AwaitingPayment'],
    ['cancelled', world(), 'Terminating', 'Cancelled'],
    ['cancelled', world({ containers: [], route: undefined, port: undefined }), 'Terminated', 'Cancelled'],
  ] as const)('a %s customer: phase %s', (state, observed, phase, reason) => {
    const s = status({ state, desired: desired({ state }), observed });
    expect(s.phase).toBe(phase);
    expect(condition(s, 'Ready')?.reason).toBe(reason);
  });

  it('a suspended customer is Suspended once stopped behind the page, Degraded while its container still runs', () => {
    const page = { customer: 'alice', id: 'blytz-alice', hosts: [HOST], target: { kind: 'suspended' as const } };
    const suspended = { state: 'suspended' as const, desired: desired({ state: 'suspended' }) };
    const stopped = status({ ...suspended, observed: world({ containers: [container({ state: 'exited' })], route: page }) });
    expect(stopped.phase).toBe('Suspended');
    expect(condition(stopped, 'RouteReady')?.reason).toBe('SuspendedPage');
    const running = status({ ...suspended, observed: world({ route: page }) });
    expect(running.phase).toBe('Degraded');
    expect(condition(running, 'ContainerReady')?.reason).toBe('Stopping');
  });
});

describe('failedStatus', () => {
  const previous: CustomerStatus = {
    phase: 'Ready',
    observedGeneration: 1,
    url: `https://${HOST}`,
    conditions: [
      { type: 'WorkspaceReady', status: 'True', reason: 'Rendered', message: '', lastTransitionTime: EARLIER, observedGeneration: 1 },
      { type: 'Ready', status: 'True', reason: 'AllReady', message: '', lastTransitionTime: EARLIER, observedGeneration: 1 },
    ],
  };

  it('keeps the other conditions, replaces Ready with the failure and fails the phase when terminal', () => {
    const s = failedStatus({ generation: 2, status: previous }, { reason: 'TemplateInvalid', message: 'template x: missing', terminal: true }, NOW);
    expect(s.phase).toBe('Failed');
    expect(s.observedGeneration).toBe(2);
    expect(s.url).toBe(previous.url);
    expect(s.conditions).toEqual([
      previous.conditions![0],
      { type: 'Ready', status: 'False', reason: 'TemplateInvalid', message: 'template x: missing', lastTransitionTime: NOW.toISOString(), observedGeneration: 2 },
    ]);
  });

  it('keeps the phase (or says Provisioning) when a retry may help', () => {
    const failure = { reason: 'X', message: 'y', terminal: false };
    expect(failedStatus({ generation: 2, status: previous }, failure, NOW).phase).toBe('Ready');
    expect(failedStatus({ generation: 1, status: {} }, failure, NOW).phase).toBe('Provisioning');
  });
});

describe('isConverged', () => {
  it.each([
    [{ phase: 'Ready', observedGeneration: 3 }, 3, true],
    [{ phase: 'Suspended', observedGeneration: 3 }, 3, true],
    [{ phase: 'Ready', observedGeneration: 2 }, 3, false],
    [{ phase: 'Provisioning', observedGeneration: 3 }, 3, false],
    [{}, 1, false],
  ] as const)('%j at generation %i: %s', (s, generation, expected) => {
    expect(isConverged({ generation, status: s })).toBe(expected);
  });
});
