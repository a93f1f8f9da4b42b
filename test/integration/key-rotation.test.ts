import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CustomerStore } from '../../src/store/customer-store.js';
import { SecretBox } from '../../src/store/secret-box.js';
import { desiredCustomer, TEST_BOT_TOKEN, uniqueName } from '../support/fixtures.js';
import { createTestDatabase, type TestDatabase } from '../support/postgres.js';

describe('secret key rotation', () => {
  let db: TestDatabase;
  beforeAll(async () => {
    db = await createTestDatabase();
  });
  afterAll(async () => {
    await db.drop();
  });

  it('opens with the previous key, reseals under the new one, and leaves generation alone', async () => {
    const oldKey = randomBytes(32);
    const newKey = randomBytes(32);
    const name = uniqueName('rot');
    const before = new CustomerStore(db.handle, new SecretBox(oldKey));
    await before.apply(desiredCustomer(name, { telegram: { botToken: TEST_BOT_TOKEN } }));
    const gateway = await before.gatewayToken(name);
    const generation = (await before.get(name))?.generation;

    // Without the old key nothing opens; with it as "previous" everything does.
    await expect(new CustomerStore(db.handle, new SecretBox(newKey)).readSecrets(name)).rejects.toThrow();
    const rotating = new CustomerStore(db.handle, new SecretBox(newKey, [oldKey]));
    expect((await rotating.readSecrets(name)).telegramBotToken).toBe(TEST_BOT_TOKEN);

    expect((await rotating.resealAll()).resealed).toBeGreaterThanOrEqual(1);
    expect((await rotating.resealAll()).resealed).toBe(0); // nothing left under the old key

    const after = new CustomerStore(db.handle, new SecretBox(newKey));
    expect((await after.readSecrets(name)).telegramBotToken).toBe(TEST_BOT_TOKEN);
    expect(await after.gatewayToken(name)).toBe(gateway);
    expect((await after.get(name))?.generation).toBe(generation);
  });

  it('a purged name used again starts over at generation 1', async () => {
    const store = new CustomerStore(db.handle, new SecretBox(randomBytes(32)));
    const name = uniqueName('reuse');
    await store.apply(desiredCustomer(name));
    await store.apply(desiredCustomer(name, { instructions: 'changed' }));
    expect((await store.get(name))?.generation).toBe(2);
    await store.markDeleted(name);
    const again = await store.apply(desiredCustomer(name));
    expect(again.created).toBe(true);
    expect(again.customer.generation).toBe(1);
  });
});
