import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chownSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { tmpdir } from 'node:os';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hashToken } from '../../src/store/billing-store.js';
import {
  type BlytzRun,
  docker,
  instanceContainers,
  runBlytz,
  type Served,
  startServe,
  throughCaddy,
} from '../support/blytz-serve.js';
import { createTestDatabase, type TestDatabase } from '../support/postgres.js';
import { waitFor } from '../support/wait-for.js';
import { openSession } from '../support/billing-app.js';

/**
 * A customer's memory survives losing everything on the host but the backup: the built
 * `blytz` command takes a backup through `blytz serve` (real Postgres, Docker, Caddy), the
 * container and the state folder are deleted, and `blytz backup restore` brings the memory
 * back, into the same customer and into a new one. A changed archive is refused.
 */

const BOT_TOKEN = `123456789:${'B'.repeat(35)}`;

const run = (args: string[], env: Record<string, string>, input = ''): Promise<BlytzRun> => runBlytz(args, { env, input });

describe('backups and restores with blytz serve', () => {
  let db: TestDatabase;
  let served: Served;
  let cli: (args: string[], input?: string) => Promise<BlytzRun>;
  const alice = `bk-alice-${randomBytes(3).toString('hex')}`;
  const bob = `bk-bob-${randomBytes(3).toString('hex')}`;
  const notes = `the bakery opens at 7; ${randomBytes(8).toString('hex')}\n`;
  const blob = randomBytes(256 * 1024);
  let backupId: number;

  const host = (name: string) => `${name}.blytz.localhost`;
  const stateDir = (name: string) => join(served.dataDir, 'customers', name);

  async function apply(name: string): Promise<void> {
    const manifest = {
      apiVersion: 'blytz.cloud/v1alpha1',
      kind: 'Customer',
      metadata: { name },
      spec: {
        email: `${name}@example.com`,
        displayName: 'Ada',
        state: 'active',
        instructions: 'I bake bread.',
        telegram: { botToken: BOT_TOKEN },
      },
    };
    const res = await cli(['apply', '-f', '-'], JSON.stringify(manifest));
    expect(res.code, res.stderr).toBe(0);
    await waitFor(async () => (await throughCaddy(served, host(name), '/AGENTS.md')).status === 200, 60_000);
  }

  beforeAll(async () => {
    db = await createTestDatabase();
    // No scheduled backups: the test asks for each one.
    served = await startServe({ databaseUrl: db.url, env: { BLYTZ_BACKUP_SCHEDULE_SECONDS: '0' } });
    cli = (args, input) => run([...args, '--server', served.url, '--token', served.adminToken], {}, input);
  });
  afterAll(async () => {
    if (process.env['BLYTZ_TEST_LOG']) writeFileSync(process.env['BLYTZ_TEST_LOG'], served?.log() ?? '');
    await served?.stop();
    await db?.drop();
  });

  it('takes an encrypted backup of the memory the assistant wrote, with no secret in it', async () => {
    await apply(alice);
    // The assistant writes its memory inside its container...
    execFileSync('docker', [
      'exec',
      '-u',
      '1000:1000',
      '-e',
      `NOTES=${notes}`,
      `blytz-${alice}`,
      'sh',
      '-c',
      `mkdir -p /home/node/.openclaw/workspace/memory && printf '%s' "$NOTES" > /home/node/.openclaw/workspace/memory/notes.md`,
    ]);
    // ... and its databases (OpenClaw's state/openclaw.sqlite, in WAL mode) and files.
    writeFileSync(join(stateDir(alice), 'workspace', 'memory', 'photo.bin'), blob);
    chownSync(join(stateDir(alice), 'workspace', 'memory', 'photo.bin'), 1000, 1000);
    mkdirSync(join(stateDir(alice), 'state'), { recursive: true });
    const live = new DatabaseSync(join(stateDir(alice), 'state', 'openclaw.sqlite'));
    live.exec("PRAGMA journal_mode = WAL; CREATE TABLE pairings (user TEXT); INSERT INTO pairings VALUES ('telegram:4242')");

    const res = await cli(['backup', 'create', alice, '--wait', '-o', 'json']);
    live.close();
    expect(res.code, res.stderr).toBe(0);
    const backup = JSON.parse(res.stdout) as {
      id: number;
      state: string;
      sizeBytes: number;
      sha256: string;
      location: string;
      reason: string;
    };
    expect(backup).toMatchObject({ state: 'succeeded', reason: 'manual' });
    expect(backup.sizeBytes).toBeGreaterThan(blob.length); // random bytes do not compress
    backupId = backup.id;

    const archive = readFileSync(join(served.dataDir, 'backups', ...backup.location.split('/')));
    expect(archive.subarray(0, 8).toString()).toBe('BLYTZBK1');
    expect(archive.includes(Buffer.from('the bakery opens'))).toBe(false);
    expect(archive.includes(Buffer.from(BOT_TOKEN))).toBe(false);

    const list = await cli(['backup', 'list', alice]);
    expect(list.stdout).toMatch(new RegExp(`^${backup.id}\\s+${alice}\\s+manual\\s+succeeded`, 'm'));
    const described = await cli(['describe', 'customer', alice]);
    expect(described.stdout).toMatch(new RegExp(`Last Backup:\\s+${backup.id} \\(manual\\)`));
  });

  it('brings the memory back after the container and the state folder are gone', async () => {
    for (const c of await instanceContainers(served.instance, alice)) await docker.getContainer(c.Id).remove({ force: true });
    // Retried: the controller may be writing into it at the same moment.
    rmSync(stateDir(alice), { recursive: true, force: true, maxRetries: 20, retryDelay: 50 });
    // The controller renders a fresh, empty workspace: the memory is gone.
    await waitFor(async () => (await throughCaddy(served, host(alice), '/AGENTS.md')).status === 200, 60_000);
    expect((await throughCaddy(served, host(alice), '/memory/notes.md')).status).toBe(404);

    const res = await cli(['backup', 'restore', String(backupId), '--wait']);
    expect(res.code, `${res.stdout}${res.stderr}`).toBe(0);
    expect(res.stdout).toMatch(/succeeded/);

    const served1 = await throughCaddy(served, host(alice), '/memory/notes.md');
    expect(served1).toEqual({ status: 200, body: notes });
    expect(readFileSync(join(stateDir(alice), 'workspace', 'memory', 'photo.bin')).equals(blob)).toBe(true);
    const copy = new DatabaseSync(join(stateDir(alice), 'state', 'openclaw.sqlite'), { readOnly: true });
    expect(copy.prepare('PRAGMA integrity_check').get()).toEqual({ integrity_check: 'ok' });
    expect(copy.prepare('SELECT user FROM pairings').all()).toEqual([{ user: 'telegram:4242' }]);
    copy.close();
    // The controller rendered its secrets back into the restored openclaw.json.
    expect(readFileSync(join(stateDir(alice), 'openclaw.json'), 'utf8')).toContain(BOT_TOKEN);
    const events = await cli(['describe', 'customer', alice]);
    expect(events.stdout).toMatch(/Restored/);
    // The mark by which the restore knew the assistant runs on the restored folder is gone again.
    expect(readdirSync(stateDir(alice)).filter((f) => f.startsWith('.blytz-restored-'))).toEqual([]);
  });

  it('restores into a new customer (a support case, a move)', async () => {
    await apply(bob);
    const res = await cli(['backup', 'restore', String(backupId), '--to', bob, '--wait']);
    expect(res.code, `${res.stdout}${res.stderr}`).toBe(0);
    await waitFor(async () => (await throughCaddy(served, host(bob), '/memory/notes.md')).body === notes, 30_000);
    expect(readFileSync(join(stateDir(bob), 'workspace', 'memory', 'photo.bin')).equals(blob)).toBe(true);
  });

  it('lets the customer download their own memory, without platform secrets, also after cancelling', async () => {
    const token = `export-token-${randomBytes(8).toString('hex')}`;
    await sql`UPDATE customers SET access_token_hash = ${hashToken(token)} WHERE name = ${bob}`.execute(db.handle.db);
    const url = `${served.url}/api/customers/${bob}/export`;
    // The status link spends the access token for the customer's session, which the export takes.
    const { session } = await openSession(served.url, `${served.url}/status/${bob}?token=${token}`);
    expect(session).toBeDefined();
    expect((await fetch(url, { headers: { authorization: 'Bearer wrong' } })).status).toBe(404);
    expect((await fetch(url, { headers: { authorization: `Bearer ${token}` } })).status).toBe(404); // spent
    expect((await fetch(`${served.url}/status/${bob}`)).status).toBe(200);

    // Cancelled: the container and route go, the folder stays until the purge, and so does the export.
    expect((await cli(['delete', 'customer', bob])).code).toBe(0);
    await waitFor(async () => (await instanceContainers(served.instance, bob)).length === 0, 30_000);
    const res = await fetch(url, { headers: { cookie: `blytz_session=${session}` } });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-disposition')).toMatch(
      new RegExp(`attachment; filename="${bob}-memory-\\d{4}-\\d{2}-\\d{2}\\.tar\\.zst"`),
    );
    const archive = Buffer.from(await res.arrayBuffer());
    const dir = mkdtempSync(join(tmpdir(), 'blytz-export-'));
    try {
      // What the customer does with it: plain tar and zstd.
      writeFileSync(join(dir, 'export.tar.zst'), archive);
      execFileSync('sh', ['-c', 'zstd -dc export.tar.zst | tar -x'], { cwd: dir });
      expect(readFileSync(join(dir, 'workspace', 'memory', 'notes.md'), 'utf8')).toBe(notes);
      expect(readFileSync(join(dir, 'workspace', 'memory', 'photo.bin')).equals(blob)).toBe(true);
      const config = readFileSync(join(dir, 'openclaw.json'), 'utf8');
      expect(config).not.toContain(BOT_TOKEN);
      expect(JSON.stringify(JSON.parse(config))).not.toMatch(/"token":/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('refuses a changed archive and leaves the customer as it was', async () => {
    const dir = join(served.dataDir, 'backups', alice);
    const file = join(
      dir,
      readdirSync(dir).find((f) => f.startsWith(`${backupId}.`))!,
    );
    const bytes = readFileSync(file);
    bytes[bytes.length - 100] = (bytes[bytes.length - 100] as number) ^ 0x40;
    writeFileSync(file, bytes);

    const res = await cli(['backup', 'restore', String(backupId), '--wait']);
    expect(res.code).toBe(1);
    expect(res.stderr).toMatch(/failed|changed/);
    await waitFor(async () => (await throughCaddy(served, host(alice), '/memory/notes.md')).body === notes, 30_000);
    expect(existsSync(join(served.dataDir, 'backup-work', 'restore-1'))).toBe(false);
    const described = await cli(['describe', 'customer', alice]);
    expect(described.stdout).toMatch(/RestoreFailed/);
  });
});
