import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CustomerStore } from '../../src/store/customer-store.js';
import { createTestDatabase, type TestDatabase } from '../support/postgres.js';
import { desiredCustomer, testSecretBox, uniqueName } from '../support/fixtures.js';

describe('store smoke', () => {
  let db: TestDatabase;
  beforeAll(async () => {
    db = await createTestDatabase();
  });
  afterAll(async () => {
    await db.drop();
  });

  it('applies a customer and bumps generation only on spec change', async () => {
    const store = new CustomerStore(db.handle, testSecretBox());
    const name = uniqueName();
    const first = await store.apply(desiredCustomer(name));
    expect(first.created).toBe(true);
    expect(first.customer.generation).toBe(1);
    const again = await store.apply(desiredCustomer(name));
    expect(again.changed).toBe(false);
    expect(again.customer.generation).toBe(1);
    await store.updateStatus(name, { phase: 'Ready', observedGeneration: 1 });
    expect((await store.get(name))?.generation).toBe(1);
    const changed = await store.apply(desiredCustomer(name, { instructions: 'new' }));
    expect(changed.customer.generation).toBe(2);
  });
});
