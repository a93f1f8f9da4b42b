import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CustomerStore } from '../../src/store/customer-store.js';
import { PoolStore } from '../../src/store/pool-store.js';
import { PortReservations } from '../../src/store/port-reservations.js';
import { desiredCustomer, testSecretBox, uniqueName } from '../support/fixtures.js';
import { createTestDatabase, type TestDatabase } from '../support/postgres.js';

/**
 * Pools in real Postgres: the size as desired state, slots that only move forward, and claims
 * that are atomic under concurrent payments (one slot, one customer; a customer never two slots).
 */
describe('PoolStore (Postgres)', () => {
  let db: TestDatabase;
  let pools: PoolStore;
  let customers: CustomerStore;
  let ports: PortReservations;
  const box = testSecretBox();

  beforeAll(async () => {
    db = await createTestDatabase();
    ports = new PortReservations(db.handle, { from: 41_000, to: 41_199 });
    pools = new PoolStore(db.handle, box, ports);
    customers = new CustomerStore(db.handle, box);
  });
  afterAll(async () => {
    await db?.drop();
  });

  /** A ready slot with its host port, as the pool controller leaves one. */
  const readySlot = async (plan = 'personal', fingerprint = 'fp-1') => {
    const slot = await pools.createSlot(plan, 'personal-assistant', fingerprint);
    const port = await pools.reservePort(slot.id);
    expect(await pools.markReady(slot.id)).toBe(true);
    return { ...slot, port };
  };
  const claimFor = (customer: string, fingerprint = 'fp-1') =>
    pools.claim({ customer, plan: 'personal', template: 'personal-assistant', fingerprint, specHash: `spec-${customer}`, ownHash: `own-${customer}` });

  it('keeps the size per plan as desired state; the generation moves only on a change', async () => {
    const first = await pools.apply({ plan: 'pro', size: 2, template: 'personal-assistant' });
    expect(first).toMatchObject({ created: true, changed: true, pool: { plan: 'pro', size: 2, generation: 1 } });
    expect((await pools.apply({ plan: 'pro', size: 2, template: 'personal-assistant' })).changed).toBe(false);
    const second = await pools.apply({ plan: 'pro', size: 0, template: 'personal-assistant' });
    expect(second.pool).toMatchObject({ size: 0, generation: 2, status: { ready: 0, warming: 0, bound: 0, retiring: 0 } });
    await expect(sql`UPDATE pools SET size = -1 WHERE plan = 'pro'`.execute(db.handle.db)).rejects.toThrow(/check/i);
  });

  it('moves a slot only forward: a retired slot is never claimed, a claimed one never retired', async () => {
    const slot = await readySlot('personal', 'fp-forward');
    expect(await pools.markReady(slot.id)).toBe(false); // not warming any more
    const name = uniqueName('fwd');
    await customers.apply(desiredCustomer(name));
    const claimed = await claimFor(name, 'fp-forward');
    expect(claimed?.slot).toBe(slot.id);
    expect(await pools.retire(slot.id)).toBe(false);
    expect(await pools.deleteRetired(slot.id)).toBe(false);

    const other = await readySlot('personal', 'fp-forward-2');
    expect(await pools.retire(other.id)).toBe(true);
    const late = uniqueName('late');
    await customers.apply(desiredCustomer(late));
    expect(await claimFor(late, 'fp-forward-2')).toBeUndefined();
    // A retired slot's row and port go together.
    expect(await pools.deleteRetired(other.id)).toBe(true);
    expect(await ports.find(`pool_${other.id}`, 'pool')).toBeUndefined();
  });

  it('a claim hands the slot and its host port to the customer, and the reconcile view carries the binding', async () => {
    const slot = await readySlot('personal', 'fp-view');
    const name = uniqueName('view');
    await customers.apply(desiredCustomer(name));
    // A stale port of the customer's (reserved, no container yet) gives way to the slot's.
    const stale = await ports.reserve(name);
    const claimed = await claimFor(name, 'fp-view');
    expect(claimed).toMatchObject({ slot: slot.id, port: slot.port, specHash: `spec-${name}`, ownHash: `own-${name}`, slotToken: slot.token });
    expect(await ports.find(name)).toBe(slot.port);
    expect(await ports.find(`pool_${slot.id}`, 'pool')).toBeUndefined();
    expect(stale).not.toBe(slot.port);
    const view = await customers.reconcileView(name);
    expect(view?.ports?.current).toBe(slot.port);
    expect(view?.binding).toMatchObject({ slot: slot.id, appliedAt: null, failed: null, slotToken: slot.token });
    expect((await customers.reconcileViews()).get(name)?.binding?.slot).toBe(slot.id);
    await pools.markApplied(slot.id);
    expect((await customers.reconcileView(name))?.binding?.appliedAt).toBeInstanceOf(Date);
    // The slot's token is sealed at rest like every secret.
    const row = await db.handle.db.selectFrom('pool_slots').select('gateway_token_enc').where('id', '=', slot.id).executeTakeFirstOrThrow();
    expect(row.gateway_token_enc).not.toContain(slot.token);
  });

  it('concurrent payments: each ready slot goes to exactly one customer, the rest start cold', async () => {
    const fingerprint = 'fp-race';
    const slots = await Promise.all([readySlot('personal', fingerprint), readySlot('personal', fingerprint), readySlot('personal', fingerprint)]);
    const names = Array.from({ length: 8 }, () => uniqueName('race'));
    for (const name of names) await customers.apply(desiredCustomer(name));
    const results = await Promise.all(names.map((name) => claimFor(name, fingerprint)));
    const won = results.filter((r) => r !== undefined);
    expect(won).toHaveLength(slots.length);
    expect(new Set(won.map((r) => r.slot))).toEqual(new Set(slots.map((s) => s.id)));
    expect(new Set(won.map((r) => r.port))).toEqual(new Set(slots.map((s) => s.port)));
    // In the store: each slot bound once, to a distinct customer, holding that customer's port.
    const bound = await db.handle.db.selectFrom('pool_slots').select(['id', 'customer']).where('fingerprint', '=', fingerprint).execute();
    expect(new Set(bound.map((b) => b.customer)).size).toBe(3);
    for (const b of bound) expect(await ports.find(b.customer as string)).toBe(slots.find((s) => s.id === b.id)?.port);
  });

  it('a customer never holds two slots, even when a former leader\'s claim committed', async () => {
    const fingerprint = 'fp-twice';
    await readySlot('personal', fingerprint);
    const spare = await readySlot('personal', fingerprint);
    const name = uniqueName('twice');
    await customers.apply(desiredCustomer(name));
    const [a, b] = await Promise.all([claimFor(name, fingerprint), claimFor(name, fingerprint)]);
    expect([a, b].filter(Boolean)).toHaveLength(1);
    expect(await claimFor(name, fingerprint)).toBeUndefined();
    // The spare slot stays ready for the next customer.
    const state = await db.handle.db.selectFrom('pool_slots').select('state').where('id', '=', spare.id).executeTakeFirstOrThrow();
    expect(state.state === 'ready' || [a, b].some((c) => c?.slot === spare.id)).toBe(true);
  });

  it('a crash between the claim and the bind: the binding is in the store, for the next reconcile to finish', async () => {
    const slot = await readySlot('personal', 'fp-crash');
    const name = uniqueName('crash');
    await customers.apply(desiredCustomer(name));
    await claimFor(name, 'fp-crash');
    // "After the crash": a new process reads the view and finds the claim, port and token.
    const fresh = new CustomerStore(db.handle, box);
    const view = await fresh.reconcileView(name);
    expect(view?.binding).toMatchObject({ slot: slot.id, appliedAt: null });
    expect(view?.ports?.current).toBe(slot.port);
  });

  it('a name held again after a purge does not inherit the binding; a bound slot is forgotten once its container is gone', async () => {
    const slot = await readySlot('personal', 'fp-uid');
    const name = uniqueName('uid');
    await customers.apply(desiredCustomer(name));
    await claimFor(name, 'fp-uid');
    await customers.setState(name, 'cancelled');
    await customers.markDeleted(name);
    await customers.apply(desiredCustomer(name));
    expect((await customers.reconcileView(name))?.binding).toBeUndefined();
    expect(await pools.forgetBound(slot.id)).toBe(true);
    expect(await pools.forgetBound(slot.id)).toBe(false);
  });

  it('counts slots by state per pool', async () => {
    await pools.apply({ plan: 'personal', size: 1, template: 'personal-assistant' });
    const pool = await pools.get('personal');
    expect(pool?.status.bound).toBeGreaterThan(0);
    expect(pool?.status.ready).toBeGreaterThanOrEqual(0);
    expect(pool?.size).toBe(1);
  });
});
