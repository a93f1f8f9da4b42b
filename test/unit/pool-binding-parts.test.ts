import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { boundContainers, type BindingView } from '../../src/controller/customer/bound-containers.js';
import { PoolReadiness } from '../../src/controller/pool/readiness.js';
import type { ContainerHealth, ContainerState, ObservedContainer } from '../../src/runtime/runtime.js';

const STATES: ContainerState[] = ['created', 'running', 'paused', 'restarting', 'removing', 'exited', 'dead'];
const HEALTHS: ContainerHealth[] = ['healthy', 'starting', 'unready', 'unhealthy', 'unknown'];

const binding = (overrides: Partial<BindingView> = {}): BindingView => ({
  slot: 7,
  specHash: 'customer-spec',
  ownHash: 'customer-own',
  appliedAt: new Date(0),
  failed: null,
  ...overrides,
});
const slotContainer = (overrides: Partial<ObservedContainer> = {}): ObservedContainer => ({
  id: 'c7',
  customer: 'ada',
  name: 'blytz-ada',
  specHash: 'slot-spec',
  ownHash: 'pool-slot',
  state: 'running',
  health: 'healthy',
  poolSlot: 7,
  ...overrides,
});

const containerArb = fc.record({
  id: fc.string({ minLength: 1, maxLength: 8 }),
  customer: fc.constant('ada'),
  name: fc.constantFrom('blytz-ada', 'blytz-ada_next'),
  specHash: fc.option(fc.string({ maxLength: 6 }), { nil: undefined }),
  ownHash: fc.option(fc.string({ maxLength: 6 }), { nil: undefined }),
  state: fc.constantFrom(...STATES),
  health: fc.constantFrom(...HEALTHS),
  poolSlot: fc.option(fc.integer({ min: 1, max: 9 }), { nil: undefined }),
}) as fc.Arbitrary<ObservedContainer>;
const bindingArb = fc.option(
  fc.record({
    slot: fc.integer({ min: 1, max: 9 }),
    specHash: fc.string({ minLength: 1, maxLength: 6 }),
    ownHash: fc.string({ minLength: 1, maxLength: 6 }),
    appliedAt: fc.option(fc.date({ noInvalidDate: true }), { nil: null }),
    failed: fc.option(fc.string({ minLength: 1, maxLength: 6 }), { nil: null }),
  }),
  { nil: undefined },
);

describe('a claimed slot\'s container as the customer planner sees it', () => {
  it('counts as the customer\'s own container once its configuration is in force', () => {
    const [seen] = boundContainers([slotContainer()], binding());
    expect(seen).toMatchObject({ specHash: 'customer-spec', ownHash: 'customer-own', health: 'healthy', id: 'c7' });
  });

  it('is not ready while its gateway is still taking the customer\'s configuration', () => {
    const [seen] = boundContainers([slotContainer()], binding({ appliedAt: null }));
    expect(seen?.health).toBe('starting');
    expect(seen?.healthMessage).toContain('warm pool slot 7');
    expect(seen?.specHash).toBe('customer-spec');
  });

  it('stopped, crashed or given up: no spec hash, so it is replaced by a fresh container of the customer\'s own', () => {
    for (const state of ['exited', 'dead', 'created', 'restarting'] as const) {
      const [seen] = boundContainers([slotContainer({ state })], binding());
      expect(seen?.specHash).toBeUndefined();
      expect(seen?.ownHash).toBeUndefined();
    }
    const [failed] = boundContainers([slotContainer()], binding({ failed: 'did not take the configuration' }));
    expect(failed?.specHash).toBeUndefined();
  });

  it('without a binding for its slot it keeps the slot\'s own hashes, which no customer\'s equal', () => {
    expect(boundContainers([slotContainer()], undefined)[0]?.specHash).toBe('slot-spec');
    expect(boundContainers([slotContainer()], binding({ slot: 8 }))[0]?.specHash).toBe('slot-spec');
  });

  it('properties: a container not made as a slot, or another slot\'s, is passed through unchanged; nothing is added or lost; a mapped one is healthy only once applied', () => {
    fc.assert(
      fc.property(fc.array(containerArb, { maxLength: 5 }), bindingArb, (containers, bound) => {
        const seen = boundContainers(containers, bound);
        expect(seen.map((c) => c.id)).toEqual(containers.map((c) => c.id));
        seen.forEach((after, i) => {
          const before = containers[i] as ObservedContainer;
          const ours = bound !== undefined && before.poolSlot === bound.slot;
          if (!ours) {
            expect(after).toBe(before);
            return;
          }
          expect(after.state).toBe(before.state);
          if (before.state !== 'running' || bound.failed !== null) expect(after.specHash).toBeUndefined();
          else expect(after.specHash).toBe(bound.specHash);
          if (after.health === 'healthy') expect(bound.appliedAt).not.toBeNull();
        });
      }),
    );
  });
});

describe('the pool readiness hint', () => {
  it('says a claim may succeed only for a pool with a ready slot counted', () => {
    const readiness = new PoolReadiness();
    expect(readiness.mayClaim('personal-assistant/personal')).toBe(false);
    readiness.set(new Map([['personal-assistant/personal', 2], ['personal-assistant/pro', 0]]));
    expect(readiness.mayClaim('personal-assistant/personal')).toBe(true);
    expect(readiness.mayClaim('personal-assistant/pro')).toBe(false);
  });

  it('counts claims down, and a claim that found nothing closes the pool until the next count', () => {
    const readiness = new PoolReadiness();
    readiness.set(new Map([['t/personal', 2]]));
    readiness.claimed('t/personal', true);
    expect(readiness.mayClaim('t/personal')).toBe(true);
    readiness.claimed('t/personal', true);
    expect(readiness.mayClaim('t/personal')).toBe(false);
    readiness.set(new Map([['t/personal', 3]]));
    readiness.claimed('t/personal', false);
    expect(readiness.mayClaim('t/personal')).toBe(false);
  });

  it('property: never says yes to more claims than the last count held', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 10 }), fc.array(fc.boolean(), { maxLength: 15 }), (count, outcomes) => {
        const readiness = new PoolReadiness();
        readiness.set(new Map([['k', count]]));
        let yes = 0;
        for (const found of outcomes) {
          if (!readiness.mayClaim('k')) break;
          yes++;
          readiness.claimed('k', found);
        }
        expect(yes).toBeLessThanOrEqual(count);
      }),
    );
  });
});
