import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ListObjectsV2Command } from '@aws-sdk/client-s3';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type BlytzRun,
  buildNeverHealthyImage,
  instanceContainers,
  runBlytz,
  type Served,
  startServe,
  STUB_IMAGE,
  tagStubImage,
  throughCaddy,
  ROLLOUT_START_TIMEOUT_SECONDS,
} from '../support/blytz-serve.js';
import { createTestDatabase, type TestDatabase } from '../support/postgres.js';
import { waitFor } from '../support/wait-for.js';
import { createBucket, S3_CREDENTIALS, s3Client, startPrivateS3, type PrivateS3 } from '../support/s3.js';

/**
 * When backups are taken besides on demand, with `blytz serve` on real Postgres, Docker, Caddy
 * and an S3-protocol server of the test's own (so it can be taken down):
 * - on schedule, keeping the plan's number (BLYTZ_BACKUP_SCHEDULE_SECONDS/KEEP shorten them);
 * - before a fleet rollout touches a customer: with the store down the rollout waits and says
 *   why, while everything else goes on; once the store is back it goes ahead;
 * - before the retention purge deletes a cancelled customer's folder (restorable afterwards);
 * - a rollout to a version that fails is undone with the state from before the update.
 */

const run = (args: string[], input = ''): Promise<BlytzRun> => runBlytz(args, { input });

const V2 = 'blytz/assistant-stub:backup-v2';
const BROKEN = 'blytz/assistant-stub:backup-broken';

interface CustomerJson {
  status: { phase?: string; conditions?: Array<{ type: string; status: string; reason: string; message: string }> };
}

describe('backups on schedule, before rollouts and before the purge', () => {
  let db: TestDatabase;
  let served: Served;
  let s3: PrivateS3;
  let bucket: string;
  const tag = randomBytes(3).toString('hex');
  const alice = `hk-alice-${tag}`;
  const purged = `hk-gone-${tag}`;
  const late = `hk-late-${tag}`;
  const heir = `hk-heir-${tag}`;
  const cli = (args: string[], input?: string) => run([...args, '--server', served.url, '--token', served.adminToken], input);
  const host = (name: string) => `${name}.blytz.localhost`;
  const stateDir = (name: string) => join(served.dataDir, 'customers', name);
  const withLog = (error: unknown) => new Error(`${(error as Error).message}\n${served.log().slice(-3000)}`, { cause: error });
  const rows = async (name: string) =>
    (
      await sql<{
        id: number;
        reason: string;
        state: string;
        ref: string | null;
        finished_ms: number | null;
        location: string | null;
      }>`
        SELECT id::int AS id, reason, state, ref, location, (extract(epoch FROM finished_at) * 1000)::float8 AS finished_ms
        FROM backups WHERE customer = ${name} ORDER BY id
      `.execute(db.handle.db)
    ).rows;
  const objects = async (prefix: string) => {
    const client = s3Client(s3.endpoint);
    try {
      const listed = await client.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix }));
      return (listed.Contents ?? []).map((o) => o.Key as string);
    } finally {
      client.destroy();
    }
  };
  const customer = async (name: string) =>
    JSON.parse((await cli(['get', 'customer', name, '-o', 'json'])).stdout) as CustomerJson;
  const imageOf = async (name: string) => (await instanceContainers(served.instance, name))[0]?.Image;

  async function apply(name: string): Promise<void> {
    const manifest = {
      apiVersion: 'blytz.cloud/v1alpha1',
      kind: 'Customer',
      metadata: { name },
      spec: { email: `${name}@example.com`, displayName: 'Ada', state: 'active', instructions: 'hooks test' },
    };
    const res = await cli(['apply', '-f', '-'], JSON.stringify(manifest));
    expect(res.code, res.stderr).toBe(0);
    await waitFor(async () => (await throughCaddy(served, host(name), '/AGENTS.md')).status === 200, 90_000).catch(
      (e: unknown) => {
        throw withLog(e);
      },
    );
  }

  async function setImage(image: string): Promise<void> {
    served.env['BLYTZ_CUSTOMER_IMAGE'] = image;
    await served.stopProcess();
    await served.restart();
  }

  beforeAll(async () => {
    tagStubImage(V2);
    buildNeverHealthyImage(BROKEN);
    s3 = await startPrivateS3();
    bucket = await createBucket(s3.endpoint);
    db = await createTestDatabase();
    served = await startServe({
      databaseUrl: db.url,
      env: {
        BLYTZ_BACKUP_URL: `s3://${bucket}`,
        BLYTZ_BACKUP_S3_ENDPOINT: s3.endpoint,
        BLYTZ_BACKUP_S3_ACCESS_KEY_ID: S3_CREDENTIALS.accessKeyId,
        BLYTZ_BACKUP_S3_SECRET_ACCESS_KEY: S3_CREDENTIALS.secretAccessKey,
        BLYTZ_BACKUP_SCHEDULE_SECONDS: '2',
        BLYTZ_BACKUP_KEEP: '2',
        // A cancelled customer is purged at once (after its last backup).
        BLYTZ_RETENTION_DAYS: '0',
        BLYTZ_ROLLOUT_START_TIMEOUT_SECONDS: ROLLOUT_START_TIMEOUT_SECONDS,
      },
    });
  });
  afterAll(async () => {
    if (process.env['BLYTZ_TEST_LOG']) writeFileSync(process.env['BLYTZ_TEST_LOG'], served?.log() ?? '');
    await served?.stop();
    await db?.drop();
    await s3?.stop();
  });

  it('takes backups on schedule and keeps the newest ones, with their metrics', async () => {
    await apply(alice);
    await apply(purged);
    writeFileSync(join(stateDir(purged), 'workspace', 'notes.md'), 'the last words\n');
    const first = await waitFor(
      async () => (await rows(alice)).find((b) => b.reason === 'scheduled' && b.state === 'succeeded'),
      30_000,
    );
    // Later ones come every 2 s; retention keeps 2 and removes the older archives from the bucket.
    await waitFor(async () => {
      const good = (await rows(alice)).filter((b) => b.reason === 'scheduled' && b.state === 'succeeded');
      const stored = await objects(`${alice}/`);
      return good.length === 2 && good.every((b) => b.id > first.id) && stored.length === 2;
    }, 60_000).catch((e: unknown) => {
      throw withLog(e);
    });
    const metrics = await (await fetch(`${served.url}/metrics`)).text();
    expect(metrics).toMatch(new RegExp(`blytz_backup_last_success_timestamp_seconds\\{customer="${alice}"\\} \\d`));
    expect(metrics).toContain(`blytz_backup_schedule_seconds{customer="${alice}"} 2`);
    expect(metrics).toMatch(/blytz_backup_duration_seconds_count\{operation="backup",outcome="success"\} [1-9]/);
  });

  it('with the store down, a rollout waits for its backup and says why, the purge waits, and nothing else stops', async () => {
    writeFileSync(join(stateDir(alice), 'workspace', 'notes.md'), 'before v2\n');
    await s3.kill();
    await setImage(V2);
    expect((await cli(['delete', 'customer', purged])).code).toBe(0);

    await waitFor(async () => {
      const ready = (await customer(alice)).status.conditions?.find((c) => c.type === 'UpToDate');
      return ready?.reason === 'WaitingForBackup' && /backup/.test(ready.message);
    }, 60_000).catch((e: unknown) => {
      throw withLog(e);
    });
    // Not touched: the old container keeps serving.
    expect(await imageOf(alice)).toBe(STUB_IMAGE);
    expect((await throughCaddy(served, host(alice), '/AGENTS.md')).status).toBe(200);
    // The cancelled customer is torn down, but its folder stays until its last backup is stored.
    await waitFor(async () => (await instanceContainers(served.instance, purged)).length === 0, 30_000);
    expect(existsSync(stateDir(purged))).toBe(true);
    // Nothing else stops: a new customer is provisioned meanwhile (on the new image at once).
    await apply(late);
    const described = await cli(['describe', 'customer', alice]);
    expect(described.stdout).toMatch(/WaitingForBackup/);
  });

  it('once the store is back, the backups are taken and then the rollout and the purge go on', async () => {
    await s3.start();
    await waitFor(async () => (await imageOf(alice)) === V2, 150_000).catch((e: unknown) => {
      throw withLog(e);
    });
    const preUpdate = (await rows(alice)).find((b) => b.reason === 'pre-update');
    expect(preUpdate?.state).toBe('succeeded');
    const [container] = await instanceContainers(served.instance, alice);
    expect(preUpdate!.finished_ms!).toBeLessThanOrEqual((container!.Created + 1) * 1000);

    await waitFor(async () => !existsSync(stateDir(purged)), 120_000).catch((e: unknown) => {
      throw withLog(e);
    });
    const last = (await rows(purged)).find((b) => b.reason === 'pre-purge');
    expect(last?.state).toBe('succeeded');
    // The purged customer's memory can still be restored, e.g. into a new customer.
    await apply(heir);
    const res = await cli(['backup', 'restore', String(last!.id), '--to', heir, '--wait']);
    expect(res.code, `${res.stdout}${res.stderr}`).toBe(0);
    await waitFor(async () => (await throughCaddy(served, host(heir), '/notes.md')).body === 'the last words\n', 60_000);
  });

  const rollbackRestores = async () =>
    (
      await sql<{
        step: string;
      }>`SELECT step FROM restores WHERE customer = ${alice} AND reason = 'rollback' ORDER BY id`.execute(db.handle.db)
    ).rows.map((r) => r.step);

  it('rollout undo --restore-state sends the customers back with their state from before the update', async () => {
    writeFileSync(join(stateDir(alice), 'workspace', 'notes.md'), 'written on v2\n');
    const res = await cli(['rollout', 'undo', '--restore-state']);
    expect(res.code, res.stderr).toBe(0);
    await waitFor(async () => (await rollbackRestores()).join() === 'succeeded', 180_000).catch((e: unknown) => {
      throw withLog(e);
    });
    expect(await imageOf(alice)).toBe(STUB_IMAGE);
    await waitFor(async () => (await throughCaddy(served, host(alice), '/notes.md')).body === 'before v2\n', 60_000).catch(
      async (e: unknown) => {
        const served1 = await throughCaddy(served, host(alice), '/notes.md');
        const onDisk = readFileSync(join(stateDir(alice), 'workspace', 'notes.md'), 'utf8');
        const events = (await cli(['describe', 'customer', alice])).stdout;
        throw withLog(
          new Error(`${(e as Error).message}: served ${JSON.stringify(served1)}, on disk ${JSON.stringify(onDisk)}\n${events}`),
        );
      },
    );
  });

  it('a rollout to a version that fails is undone with the state from before the update', async () => {
    writeFileSync(join(stateDir(alice), 'workspace', 'notes.md'), 'before the broken version\n');
    await setImage(BROKEN);
    // The broken version starts and "migrates" the state before it fails its health check.
    await waitFor(async () => (await imageOf(alice)) === BROKEN, 120_000).catch((e: unknown) => {
      throw withLog(e);
    });
    writeFileSync(join(stateDir(alice), 'workspace', 'notes.md'), 'migrated by the broken version\n');
    execFileSync('sync');

    await waitFor(async () => (await rollbackRestores()).join() === 'succeeded,succeeded', 180_000).catch((e: unknown) => {
      throw withLog(e);
    });
    // Back on the image it ran before the broken one (the undo above left it on the first).
    await waitFor(async () => (await imageOf(alice)) === STUB_IMAGE, 120_000);
    await waitFor(
      async () => (await throughCaddy(served, host(alice), '/notes.md')).body === 'before the broken version\n',
      60_000,
    );
    expect(readFileSync(join(stateDir(alice), 'workspace', 'notes.md'), 'utf8')).toBe('before the broken version\n');
  });
});
