import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RecordsBackupGate, updateRef } from '../../src/backup/backup-gate.js';
import { BackupRecords, RestoreInProgressError } from '../../src/store/backup-records.js';
import { createPgliteDatabase, createTestDatabase, type TestDatabase } from '../support/postgres.js';

/**
 * The backup and restore records on real Postgres (and the embedded PGlite the default `make run`
 * uses), and the gate the customer controller asks, which only ever writes requests.
 */

const result = (now: number) => ({
  storage: 'local:/tmp',
  location: 'alice/1.tar.zst.blytz',
  sizeBytes: 1234,
  sha256: 'a'.repeat(64),
  openclawVersion: '2026.9.6',
  runtime: 'docker',
  files: 3,
  durationMs: 50,
  now,
});

for (const kind of ['postgres', 'pglite'] as const) {
  describe(`backup records (${kind})`, () => {
    let db: TestDatabase;
    let records: BackupRecords;
    beforeAll(async () => {
      db = kind === 'postgres' ? await createTestDatabase() : await createPgliteDatabase();
      records = new BackupRecords(db.handle);
    });
    afterAll(async () => {
      await db?.drop();
    });

    it('a backup is good only once it succeeded; an abandoned one is taken again, then failed', async () => {
      const asked = await records.request('alice', 'manual');
      expect(asked.state).toBe('pending');
      expect(await records.claim(asked.id, Date.now())).toBe(true);
      expect(await records.claim(asked.id, Date.now())).toBe(false); // taken once
      expect((await records.latestSucceeded()).has('alice')).toBe(false);
      await records.requeueAbandoned(asked.id, 2, 'controller died');
      expect((await records.get(asked.id))?.state).toBe('pending');
      await records.claim(asked.id, Date.now());
      await records.requeueAbandoned(asked.id, 2, 'controller died again');
      expect((await records.get(asked.id))?.state).toBe('failed'); // 2 attempts

      const good = await records.request('alice', 'manual');
      await records.claim(good.id, Date.now());
      expect(await records.succeed(good.id, result(Date.now()))).toBe(true);
      expect(await records.succeed(good.id, result(Date.now()))).toBe(false); // once
      expect((await records.latestSucceeded()).get('alice')?.id).toBe(good.id);
      expect(await records.customersWithOpenWork()).not.toContain('alice');
    });

    it('a request with a ref is idempotent, and asks again for one that failed', async () => {
      const [a, b] = await Promise.all([
        records.request('bob', 'pre-update', 'h1>h2'),
        records.request('bob', 'pre-update', 'h1>h2'),
      ]);
      expect(a.id).toBe(b.id);
      await records.claim(a.id, Date.now());
      expect(await records.fail(a.id, 'store down', 1, Date.now())).toBe('failed');
      const again = await records.request('bob', 'pre-update', 'h1>h2');
      expect(again).toMatchObject({ id: a.id, state: 'pending', attempts: 0 });
    });

    it('one restore at a time per customer; a backup a restore uses is kept', async () => {
      const backup = await records.request('carol', 'manual');
      await records.claim(backup.id, Date.now());
      await records.succeed(backup.id, result(Date.now()));
      const restore = await records.requestRestore(backup.id, 'carol');
      await expect(records.requestRestore(backup.id, 'carol')).rejects.toBeInstanceOf(RestoreInProgressError);
      expect(await records.remove(backup.id)).toBe(false);
      expect(await records.advanceRestore(restore.id, 'pending', 'stopping')).toBe(true);
      expect(await records.advanceRestore(restore.id, 'pending', 'stopping')).toBe(false); // moved on already
      await records.advanceRestore(restore.id, 'stopping', 'failed', 'bad archive');
      expect(await records.activeRestore('carol')).toBeUndefined();
      expect(await records.remove(backup.id)).toBe(true);
    });
  });
}

describe('the backup gate', () => {
  let db: TestDatabase;
  let records: BackupRecords;
  let now = 1_000_000;
  const woken: string[] = [];
  let gate: RecordsBackupGate;
  beforeAll(async () => {
    db = await createTestDatabase();
    records = new BackupRecords(db.handle);
    gate = new RecordsBackupGate({
      records,
      wakeBackups: (name) => woken.push(name),
      storeProblem: () => 'the store is down',
      now: () => now,
    });
  });
  afterAll(async () => {
    await db?.drop();
  });

  it('a rollout waits for a pre-update backup, says why, and goes once it succeeded', async () => {
    const wait = await gate.beforeUpdate('dave', 'old', 'new');
    expect(wait).toMatch(/the fleet rollout waits for a backup of the current state \(backup \d+, pending; the store is down\)/);
    expect(woken).toEqual(['dave']);
    expect(await gate.beforeUpdate('dave', 'old', 'new')).toBeDefined(); // asked again: the same backup
    const backup = await records.findByRef('dave', 'pre-update', updateRef('old', 'new'));
    expect((await records.list('dave')).length).toBe(1);
    await records.claim(backup!.id, now);
    await records.succeed(backup!.id, result(now));
    expect(await gate.beforeUpdate('dave', 'old', 'new')).toBeUndefined();
    // Going back to the spec backed up before it left waits for nothing.
    expect(await gate.beforeUpdate('dave', 'new', 'old')).toBeUndefined();
  });

  it('a backup the purge waits for that failed for good is asked for again only after it rested', async () => {
    expect(await gate.beforePurge('erin')).toMatch(/the purge waits/);
    const backup = (await records.findByRef('erin', 'pre-purge', 'purge'))!;
    await records.claim(backup.id, now);
    await records.fail(backup.id, 'store down', 1, now);
    woken.length = 0;
    expect(await gate.beforePurge('erin')).toMatch(/failed; the store is down; last attempt: store down/);
    expect(woken).toEqual([]);
    now += 31_000;
    await gate.beforePurge('erin');
    expect(woken).toEqual(['erin']);
    expect((await records.get(backup.id))?.state).toBe('pending');
  });

  it('a restore holds the customer; a rollback restore waiting for the rollout does not', async () => {
    const backup = await records.request('fay', 'pre-update', updateRef('a', 'b'));
    await records.claim(backup.id, now);
    await records.succeed(backup.id, result(now));
    expect(await gate.holdOf('fay')).toBeUndefined();
    expect(await gate.restoreBeforeUpdate('fay', 'a', 'b')).toBe(true);
    expect(await gate.holdOf('fay')).toBeUndefined(); // pending rollback: waits for the rollout
    const restore = (await records.activeRestore('fay'))!;
    await records.advanceRestore(restore.id, 'pending', 'stopping');
    expect(await gate.holdOf('fay')).toMatch(/restoring backup/);
    await records.advanceRestore(restore.id, 'stopping', 'starting');
    expect(await gate.holdOf('fay')).toBeUndefined();
    expect(await gate.restoreBeforeUpdate('nobody', 'a', 'b')).toBe(false); // no such backup
  });
});
