import { randomBytes } from 'node:crypto';
import { chownSync, existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ListObjectsV2Command } from '@aws-sdk/client-s3';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type BlytzRun, runBlytz, type Served, startServe, throughCaddy } from '../support/blytz-serve.js';
import { createTestDatabase, type TestDatabase } from '../support/postgres.js';
import { waitFor } from '../support/wait-for.js';
import { createBucket, S3_CREDENTIALS, S3_ENDPOINT, s3Client } from '../support/s3.js';

/**
 * The controller killed (SIGKILL) in the middle of a backup and of a restore, with archives in
 * an S3 bucket (s3rver): no partial backup is ever listed as good, no customer is left with a
 * mix of old and restored state, and the restarted controller finishes both.
 */

const run = (args: string[], input = ''): Promise<BlytzRun> => runBlytz(args, { input });

/** Big enough that a backup or a restore takes seconds here, so the kill lands inside it. */
const STATE_BYTES = 300 * 1024 * 1024;

describe('the controller killed mid-backup and mid-restore (S3 store)', () => {
  let db: TestDatabase;
  let served: Served;
  let bucket: string;
  const name = `bk-crash-${randomBytes(3).toString('hex')}`;
  const cli = (args: string[], input?: string) => run([...args, '--server', served.url, '--token', served.adminToken], input);
  const stateDir = () => join(served.dataDir, 'customers', name);
  const backups = async () =>
    (
      await sql<{ id: number; state: string; attempts: number; location: string | null }>`
        SELECT id::int AS id, state, attempts, location FROM backups WHERE customer = ${name} ORDER BY id
      `.execute(db.handle.db)
    ).rows;
  const restoreStep = async (id: number) =>
    (await sql<{ step: string }>`SELECT step FROM restores WHERE id = ${id}`.execute(db.handle.db)).rows[0]?.step;
  const objects = async () => {
    const client = s3Client();
    try {
      const listed = await client.send(new ListObjectsV2Command({ Bucket: bucket }));
      return (listed.Contents ?? []).map((o) => o.Key);
    } finally {
      client.destroy();
    }
  };

  beforeAll(async () => {
    db = await createTestDatabase();
    bucket = await createBucket();
    served = await startServe({
      databaseUrl: db.url,
      env: {
        BLYTZ_BACKUP_SCHEDULE_SECONDS: '0',
        BLYTZ_BACKUP_URL: `s3://${bucket}/blytz`,
        BLYTZ_BACKUP_S3_ENDPOINT: S3_ENDPOINT,
        BLYTZ_BACKUP_S3_ACCESS_KEY_ID: S3_CREDENTIALS.accessKeyId,
        BLYTZ_BACKUP_S3_SECRET_ACCESS_KEY: S3_CREDENTIALS.secretAccessKey,
      },
    });
    const manifest = {
      apiVersion: 'blytz.cloud/v1alpha1',
      kind: 'Customer',
      metadata: { name },
      spec: { email: `${name}@example.com`, displayName: 'Ada', state: 'active', instructions: 'crash test' },
    };
    expect((await cli(['apply', '-f', '-'], JSON.stringify(manifest))).code).toBe(0);
    await waitFor(async () => (await throughCaddy(served, `${name}.blytz.localhost`, '/AGENTS.md')).status === 200, 60_000);
    const big = join(stateDir(), 'workspace', 'memory.bin');
    writeFileSync(big, randomBytes(STATE_BYTES));
    chownSync(big, 1000, 1000);
    writeFileSync(join(stateDir(), 'workspace', 'notes.md'), 'before the backup\n');
  });
  afterAll(async () => {
    await served?.stop();
    await db?.drop();
  });

  let backupId: number;

  it('a backup cut short is never listed as good, and is taken again by the next leader', async () => {
    const asked = await cli(['backup', 'create', name, '-o', 'json']);
    expect(asked.code, asked.stderr).toBe(0);
    backupId = (JSON.parse(asked.stdout) as { id: number }).id;
    await waitFor(async () => (await backups()).some((b) => b.id === backupId && b.state === 'running'), 30_000, 10);
    await served.stopProcess({ kill: true });

    // While the controller is dead: the backup is not good, and no archive is listed for it.
    const [row] = await backups();
    expect(row).toMatchObject({ id: backupId, state: 'running' });
    const list = await sql<{ n: number }>`SELECT count(*)::int AS n FROM backups WHERE state = 'succeeded'`.execute(db.handle.db);
    expect(list.rows[0]?.n).toBe(0);

    await served.restart();
    const done = await waitFor(
      async () => (await backups()).find((b) => b.id === backupId && b.state === 'succeeded'),
      120_000,
      200,
    );
    expect(done.attempts).toBe(2);
    expect(await objects()).toEqual([`blytz/${done.location}`]);
    // What the killed process was writing is cleared away.
    expect(
      readdirSync(join(served.dataDir, 'backup-work')).filter((f) => f.startsWith('upload-') || f.startsWith('staging-')),
    ).toEqual([]);
  });

  it('a restore cut short leaves the old state whole, and the next leader finishes it', async () => {
    writeFileSync(join(stateDir(), 'workspace', 'notes.md'), 'written after the backup\n');
    const asked = await cli(['backup', 'restore', String(backupId), '-o', 'json']);
    expect(asked.code, asked.stderr).toBe(0);
    const restoreId = (JSON.parse(asked.stdout) as { id: number }).id;
    await waitFor(async () => (await restoreStep(restoreId)) === 'fetching', 60_000, 10);
    await served.stopProcess({ kill: true });

    // Dead mid-fetch: the customer's folder is its old state, whole; nothing restored is in it.
    expect(await restoreStep(restoreId)).toBe('fetching');
    expect(readFileSync(join(stateDir(), 'workspace', 'notes.md'), 'utf8')).toBe('written after the backup\n');
    expect(existsSync(join(stateDir(), 'workspace', 'memory.bin'))).toBe(true);

    await served.restart();
    await waitFor(async () => (await restoreStep(restoreId)) === 'succeeded', 180_000, 200);
    expect(readFileSync(join(stateDir(), 'workspace', 'notes.md'), 'utf8')).toBe('before the backup\n');
    await waitFor(
      async () => (await throughCaddy(served, `${name}.blytz.localhost`, '/notes.md')).body === 'before the backup\n',
      60_000,
    );
    // Nothing left aside: no staged or replaced folder.
    expect(existsSync(join(served.dataDir, 'backup-work', `restore-${restoreId}`))).toBe(false);
    expect(existsSync(join(served.dataDir, 'backup-work', `replaced-${restoreId}`))).toBe(false);
  });
});
