import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { debouncedHealth, planPools, SLOT_FAILURE_THRESHOLD, type DesiredPool, type ObservedSlot, type PoolAction, type PoolPlanInput } from '../../src/controller/pool/plan.js';
import { ValidationError } from '../../src/domain/customer.js';
import {
  canTransition,
  MAX_POOL_SIZE,
  parsePoolManifest,
  poolContainerName,
  poolEngineKey,
  poolFolderName,
  poolSlotKey,
  slotOfFolder,
  SLOT_STATES,
  type SlotState,
} from '../../src/domain/pool.js';
import { isDns1123Label } from '../../src/domain/naming.js';

const pool = (overrides: Partial<DesiredPool> = {}): DesiredPool => ({ plan: 'personal', size: 1, fingerprint: 'fp', ...overrides });
const slot = (overrides: Partial<ObservedSlot> & { id: number }): ObservedSlot => ({
  plan: 'personal',
  state: 'ready',
  fingerprint: 'fp',
  container: { id: `c${overrides.id}`, state: 'running', health: 'healthy' },
  folder: true,
  ...overrides,
});
const input = (overrides: Partial<PoolPlanInput> = {}): PoolPlanInput => ({ pools: [], slots: [], strayContainers: [], strayFolders: [], ...overrides });

describe('the Pool object', () => {
  const manifest = (spec: unknown, name = 'personal') => ({ apiVersion: 'blytz.cloud/v1alpha1', kind: 'Pool', metadata: { name }, spec });

  it('is named by its plan and holds a size, the template defaulting to the customers\' one', () => {
    expect(parsePoolManifest(manifest({ size: 2 })).spec).toEqual({ size: 2, template: 'personal-assistant' });
    expect(parsePoolManifest(manifest({ size: 0 }, 'pro')).metadata.name).toBe('pro');
  });

  it('refuses what it cannot run, naming each field', () => {
    const causes = (value: unknown) => {
      try {
        parsePoolManifest(value);
      } catch (error) {
        expect(error).toBeInstanceOf(ValidationError);
        return (error as ValidationError).causes.map((c) => c.field);
      }
      throw new Error('accepted');
    };
    expect(causes(manifest({ size: -1 }))).toEqual(['spec.size']);
    expect(causes(manifest({ size: 1.5 }))).toEqual(['spec.size']);
    expect(causes(manifest({ size: MAX_POOL_SIZE + 1 }))).toEqual(['spec.size']);
    expect(causes(manifest({ size: 1 }, 'gold'))).toEqual(['metadata.name']);
    expect(causes(manifest({ size: 1, replicas: 2 }))).toEqual(['spec.replicas']);
    expect(causes({ ...manifest({ size: 1 }), kind: 'Customer' })).toEqual(['kind']);
  });
});

describe('slot names and states', () => {
  it('never collide with a customer: the key, container and network have a character no customer name has', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 2 ** 40 }), (id) => {
        expect(isDns1123Label(poolSlotKey(id))).toBe(false);
        expect(poolContainerName(id)).toBe(`blytz-pool_${id}`);
        // Two control planes sharing an engine (BLYTZ_INSTANCE) count slot ids each from 1: their names differ.
        expect(poolContainerName(id, 'staging')).toBe(`blytz-pool_staging_${id}`);
        expect(isDns1123Label(poolEngineKey(id, 'staging'))).toBe(false);
        expect(slotOfFolder(poolFolderName(id))).toBe(id);
      }),
    );
    for (const bad of ['slot-0', 'slot-', 'slot-01', 'slot-1a', '../slot-1', 'slot-1/']) expect(slotOfFolder(bad), bad).toBeUndefined();
  });

  it('move only forward: a slot is used once, and nothing returns to the pool', () => {
    expect(canTransition('warming', 'ready')).toBe(true);
    expect(canTransition('ready', 'bound')).toBe(true);
    expect(canTransition('bound', 'gone')).toBe(true);
    expect(canTransition('retiring', 'gone')).toBe(true);
    for (const to of [...SLOT_STATES, 'gone'] as const) {
      expect(canTransition('bound', to), `bound -> ${to}`).toBe(to === 'gone');
      if (to !== 'gone') expect(canTransition(to, 'warming'), `${to} -> warming`).toBe(false);
    }
    expect(canTransition('warming', 'bound')).toBe(false);
    expect(canTransition('retiring', 'ready')).toBe(false);
  });

  it('as compare-and-set steps, two racing actors never both take one slot from one state', () => {
    // Each step is "UPDATE ... SET state = to WHERE state = from": of actors racing from the same
    // observed state, only the first applied wins; a slot ends bound to at most one customer.
    const arbStep = fc.record({
      actor: fc.constantFrom('claim-a', 'claim-b', 'pool'),
      to: fc.constantFrom<SlotState | 'gone'>('ready', 'bound', 'retiring', 'gone'),
    });
    fc.assert(
      fc.property(fc.array(arbStep, { maxLength: 12 }), (steps) => {
        let state: SlotState | 'gone' = 'warming';
        const boundTo = new Set<string>();
        for (const step of steps) {
          if (state === 'gone' || !canTransition(state, step.to)) continue;
          if (step.to === 'bound' && step.actor === 'pool') continue; // only a claim binds
          state = step.to;
          if (state === 'bound') boundTo.add(step.actor);
        }
        expect(boundTo.size).toBeLessThanOrEqual(1);
      }),
    );
  });
});

describe('planPools', () => {
  it('size 0 and no slots: nothing at all', () => {
    expect(planPools(input({ pools: [pool({ size: 0 })] }))).toEqual([]);
    expect(planPools(input())).toEqual([]);
  });

  it('starts missing slots one at a time per plan, and marks a started one ready once it answers', () => {
    expect(planPools(input({ pools: [pool({ size: 3 })] }))).toEqual([{ type: 'createSlot', plan: 'personal' }]);
    expect(planPools(input({ pools: [pool({ size: 3 })], maxWarming: 2 }))).toEqual([
      { type: 'createSlot', plan: 'personal' },
      { type: 'createSlot', plan: 'personal' },
    ]);
    const warming = slot({ id: 1, state: 'warming', container: { id: 'c1', state: 'running', health: 'starting' } });
    expect(planPools(input({ pools: [pool({ size: 3 })], slots: [warming] }))).toEqual([]);
    const answered = { ...warming, container: { id: 'c1', state: 'running' as const, health: 'healthy' as const } };
    expect(planPools(input({ pools: [pool({ size: 3 })], slots: [answered] }))).toEqual([{ type: 'markReady', slot: 1 }]);
    expect(planPools(input({ pools: [pool({ size: 3 })], slots: [slot({ id: 1 })] }))).toEqual([{ type: 'createSlot', plan: 'personal' }]);
  });

  it('a warming slot without its container (a crash after its row) is made and started', () => {
    const orphanRow = slot({ id: 4, state: 'warming', container: undefined, folder: false });
    expect(planPools(input({ pools: [pool()], slots: [orphanRow] }))).toEqual([{ type: 'startSlot', slot: 4 }]);
    const created = slot({ id: 4, state: 'warming', container: { id: 'c4', state: 'created', health: 'unknown' } });
    expect(planPools(input({ pools: [pool()], slots: [created] }))).toEqual([{ type: 'startSlot', slot: 4 }]);
  });

  it('retires outdated, stopped, unhealthy and surplus slots and starts fresh ones', () => {
    const outdated = slot({ id: 1, fingerprint: 'old' });
    expect(planPools(input({ pools: [pool()], slots: [outdated] }))).toEqual([
      { type: 'retire', slot: 1, reason: 'outdated' },
      { type: 'removeSlot', slot: 1, containerId: 'c1' },
      { type: 'createSlot', plan: 'personal' },
    ]);
    const stopped = slot({ id: 2, container: { id: 'c2', state: 'exited', health: 'unknown' } });
    expect(planPools(input({ pools: [pool()], slots: [stopped] }))[0]).toEqual({ type: 'retire', slot: 2, reason: 'stopped' });
    const sick = slot({ id: 3, container: { id: 'c3', state: 'running', health: 'unhealthy' } });
    expect(planPools(input({ pools: [pool()], slots: [sick] }))[0]).toEqual({ type: 'retire', slot: 3, reason: 'unhealthy' });
    // Smaller pool: warming ones go first, then the newest ready one.
    const slots = [slot({ id: 1 }), slot({ id: 2 }), slot({ id: 3, state: 'warming', container: undefined, folder: false })];
    expect(planPools(input({ pools: [pool({ size: 1 })], slots }))).toEqual([
      { type: 'retire', slot: 3, reason: 'surplus' },
      { type: 'retire', slot: 2, reason: 'surplus' },
      { type: 'removeSlot', slot: 2, containerId: 'c2' },
      { type: 'removeSlot', slot: 3, containerId: undefined },
    ]);
  });

  it('leaves bound slots alone, and forgets one once its container is gone', () => {
    const bound = slot({ id: 7, state: 'bound', fingerprint: 'old', folder: false });
    expect(planPools(input({ pools: [pool({ size: 0 })], slots: [bound] }))).toEqual([]);
    const sick = { ...bound, container: { id: 'c7', state: 'exited' as const, health: 'unknown' as const } };
    expect(planPools(input({ slots: [sick] }))).toEqual([]);
    expect(planPools(input({ slots: [{ ...bound, container: undefined }] }))).toEqual([{ type: 'forgetBound', slot: 7 }]);
  });

  it('removes what no row names', () => {
    expect(planPools(input({ strayContainers: ['x'], strayFolders: [9] }))).toEqual([
      { type: 'removeStrayContainer', id: 'x' },
      { type: 'removeStrayFolder', slot: 9 },
    ]);
  });
});

/** A pool's world in memory: rows, containers and folders, changed only by the planner's actions. */
interface World {
  slots: ObservedSlot[];
  strayContainers: string[];
  strayFolders: number[];
  nextId: number;
}

/** Executes one action as the executor would, with its compare-and-set guards. */
function apply(world: World, action: PoolAction): void {
  const find = (id: number) => world.slots.find((s) => s.id === id);
  switch (action.type) {
    case 'createSlot': {
      const id = world.nextId++;
      world.slots.push({
        id,
        plan: action.plan,
        state: 'warming',
        fingerprint: fingerprintOf(action.plan),
        container: { id: `c${id}`, state: 'running', health: 'starting' },
        folder: true,
      });
      break;
    }
    case 'startSlot': {
      const s = find(action.slot);
      if (s?.state === 'warming') Object.assign(s, { folder: true, container: { id: `c${s.id}`, state: 'running', health: 'starting' } });
      break;
    }
    case 'markReady': {
      const s = find(action.slot);
      if (s?.state === 'warming') s.state = 'ready';
      break;
    }
    case 'retire': {
      const s = find(action.slot);
      if (s && (s.state === 'warming' || s.state === 'ready')) s.state = 'retiring';
      break;
    }
    case 'removeSlot':
    case 'forgetBound': {
      const s = find(action.slot);
      const from = action.type === 'removeSlot' ? 'retiring' : 'bound';
      if (s?.state === from) world.slots = world.slots.filter((x) => x !== s);
      break;
    }
    case 'removeStrayContainer':
      world.strayContainers = world.strayContainers.filter((id) => id !== action.id);
      break;
    case 'removeStrayFolder':
      world.strayFolders = world.strayFolders.filter((id) => id !== action.slot);
      break;
  }
}

const fingerprintOf = (plan: string) => `fp-${plan}`;
/** Time passes: started containers finish starting. */
const tick = (world: World) => {
  for (const s of world.slots) if (s.container?.health === 'starting') s.container = { ...s.container, health: 'healthy' };
};

const arbContainer = fc.option(
  fc.record({
    state: fc.constantFrom('created', 'running', 'exited', 'dead', 'restarting'),
    health: fc.constantFrom('healthy', 'unhealthy', 'starting', 'unready', 'unknown'),
  }),
  { nil: undefined },
);
const arbSlot = fc.record({
  plan: fc.constantFrom('personal', 'pro'),
  state: fc.constantFrom<SlotState>(...SLOT_STATES),
  current: fc.boolean(),
  container: arbContainer,
  folder: fc.boolean(),
});
const arbWorld = fc
  .record({
    slots: fc.array(arbSlot, { maxLength: 8 }),
    strays: fc.array(fc.integer({ min: 100, max: 110 }), { maxLength: 3 }),
    sizes: fc.record({ personal: fc.integer({ min: 0, max: 4 }), pro: fc.integer({ min: 0, max: 3 }) }),
    maxWarming: fc.integer({ min: 1, max: 3 }),
  })
  .map(({ slots, strays, sizes, maxWarming }) => ({
    world: {
      slots: slots.map((s, i) => ({
        id: i + 1,
        plan: s.plan,
        state: s.state,
        fingerprint: s.current ? fingerprintOf(s.plan) : 'stale',
        container: s.container ? { id: `c${i + 1}`, ...s.container } : undefined,
        folder: s.folder,
      })) as ObservedSlot[],
      strayContainers: strays.map((n) => `stray-${n}`),
      strayFolders: [...new Set(strays)],
      nextId: slots.length + 1,
    } satisfies World,
    pools: Object.entries(sizes).map(([plan, size]) => ({ plan, size, fingerprint: fingerprintOf(plan) })),
    maxWarming,
  }));

describe('planPools on a simulated world (properties)', () => {
  const planOf = (world: World, pools: DesiredPool[], maxWarming: number) =>
    planPools({ pools, slots: world.slots, strayContainers: world.strayContainers, strayFolders: world.strayFolders, maxWarming });

  it('converges: every pool holds its size of ready, current slots, with nothing stray, and then plans nothing', () => {
    fc.assert(
      fc.property(arbWorld, ({ world, pools, maxWarming }) => {
        const boundBefore = world.slots.filter((s) => s.state === 'bound' && s.container).map((s) => s.id);
        for (let step = 0; step < 40; step++) {
          const actions = planOf(world, pools, maxWarming);
          // Nothing to do now is not converged while a container is still starting: time passes.
          if (actions.length === 0 && !world.slots.some((s) => s.container?.health === 'starting')) break;
          for (const action of actions) apply(world, action);
          tick(world);
        }
        expect(planOf(world, pools, maxWarming)).toEqual([]);
        for (const { plan, size } of pools) {
          const live = world.slots.filter((s) => s.plan === plan && s.state !== 'bound');
          expect(live.length).toBe(size);
          for (const s of live) expect(s).toMatchObject({ state: 'ready', fingerprint: fingerprintOf(plan) });
        }
        expect(world.strayContainers).toEqual([]);
        expect(world.strayFolders).toEqual([]);
        // A customer's slot is never taken back: each bound one that has its container is still there, still bound.
        for (const id of boundBefore) expect(world.slots.find((s) => s.id === id)?.state).toBe('bound');
      }),
    );
  });

  it('never touches a bound slot that has its container, and never warms more than allowed per plan', () => {
    fc.assert(
      fc.property(arbWorld, ({ world, pools, maxWarming }) => {
        const actions = planOf(world, pools, maxWarming);
        const bound = new Set(world.slots.filter((s) => s.state === 'bound' && s.container).map((s) => s.id));
        for (const action of actions) {
          if ('slot' in action) expect(bound.has(action.slot), JSON.stringify(action)).toBe(false);
          if (action.type === 'removeStrayContainer') expect(world.slots.some((s) => s.container?.id === action.id)).toBe(false);
        }
        for (const { plan } of pools) {
          const created = actions.filter((a) => a.type === 'createSlot' && a.plan === plan).length;
          const warmingKept = world.slots.filter(
            (s) => s.plan === plan && s.state === 'warming' && !actions.some((a) => a.type === 'retire' && a.slot === s.id),
          ).length;
          expect(created + warmingKept).toBeLessThanOrEqual(Math.max(maxWarming, warmingKept));
        }
      }),
    );
  });

  it('does not depend on the order slots are listed in', () => {
    fc.assert(
      fc.property(arbWorld, ({ world, pools, maxWarming }) => {
        const reversed = { ...world, slots: [...world.slots].reverse(), strayContainers: [...world.strayContainers].reverse() };
        expect(planOf(reversed, pools, maxWarming)).toEqual(planOf(world, pools, maxWarming));
      }),
    );
  });
});

describe('a slot\'s probe failures count once they last (failure threshold)', () => {
  it('a failure below the threshold reads as starting; at the threshold it is what the probes say; a pass resets it', () => {
    let streak = 0;
    for (let i = 1; i < SLOT_FAILURE_THRESHOLD; i++) {
      const seen = debouncedHealth('unhealthy', streak);
      expect(seen.health).toBe('starting');
      streak = seen.streak;
    }
    expect(debouncedHealth('unready', streak)).toEqual({ health: 'unready', streak: SLOT_FAILURE_THRESHOLD });
    expect(debouncedHealth('healthy', streak)).toEqual({ health: 'healthy', streak: 0 });
  });

  it('a ready slot whose probe failed once stays; one failing past the threshold is retired', () => {
    const once = debouncedHealth('unhealthy', 0).health;
    expect(planPools(input({ pools: [pool()], slots: [slot({ id: 1, container: { id: 'c1', state: 'running', health: once } })] }))).toEqual([]);
    const lasting = debouncedHealth('unhealthy', SLOT_FAILURE_THRESHOLD - 1).health;
    expect(planPools(input({ pools: [pool()], slots: [slot({ id: 1, container: { id: 'c1', state: 'running', health: lasting } })] }))[0]).toEqual({
      type: 'retire',
      slot: 1,
      reason: 'unhealthy',
    });
  });

  it('property: only a run of at least the threshold\'s failures ever reads as a failure', () => {
    const healths = fc.constantFrom('healthy', 'unhealthy', 'starting', 'unready', 'unknown') as fc.Arbitrary<'healthy' | 'unhealthy' | 'starting' | 'unready' | 'unknown'>;
    fc.assert(
      fc.property(fc.array(healths, { maxLength: 30 }), (observed) => {
        let streak = 0;
        let run = 0;
        for (const health of observed) {
          const seen = debouncedHealth(health, streak);
          streak = seen.streak;
          run = health === 'unhealthy' || health === 'unready' ? run + 1 : 0;
          if (seen.health === 'unhealthy' || seen.health === 'unready') expect(run).toBeGreaterThanOrEqual(SLOT_FAILURE_THRESHOLD);
          else if (run >= SLOT_FAILURE_THRESHOLD) expect.fail(`a run of ${run} failures read as ${seen.health}`);
        }
      }),
    );
  });
});

