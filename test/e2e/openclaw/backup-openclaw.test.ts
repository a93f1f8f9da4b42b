import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { promisify } from 'node:util';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { OPENCLAW_IMAGE } from '../../../src/domain/openclaw.js';
import { type BlytzRun, docker, instanceContainers, runBlytz, type Served, startServe } from '../../support/blytz-serve.js';
import { createTestDatabase, type TestDatabase } from '../../support/postgres.js';
import { waitFor } from '../../support/wait-for.js';

/**
 * The real assistant: a customer on the pinned OpenClaw image (built locally by
 * `scripts/services.sh openclaw`). Its memory is written and indexed by OpenClaw itself inside
 * the running container (the memory index lives in the agent's SQLite database, in WAL mode,
 * while the gateway runs), backed up while the gateway keeps running, and restored after the
 * container and the whole state folder are gone. The checks are the database's own
 * (`PRAGMA integrity_check`) and OpenClaw's own (`openclaw memory search` finds the memory in the
 * restored index).
 */

const run = promisify(execFile);

const cli = (served: Served, args: string[], input = ''): Promise<BlytzRun> =>
  runBlytz([...args, '--server', served.url, '--token', served.adminToken], { input });

/** `openclaw ARGS` inside the customer's container, as its user. */
async function openclaw(container: string, args: string[]): Promise<string> {
  const { stdout, stderr } = await run('docker', ['exec', '-u', '1000:1000', container, 'openclaw', ...args], {
    timeout: 240_000,
    maxBuffer: 4 * 1024 * 1024,
  });
  return `${stdout}${stderr}`;
}

function findFile(dir: string, name: string): string | undefined {
  if (!existsSync(dir)) return undefined;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) {
      const found = findFile(path, name);
      if (found) return found;
    } else if (entry.name === name) return path;
  }
  return undefined;
}

describe(`the memory of a running OpenClaw gateway (${OPENCLAW_IMAGE}) survives a backup and a restore`, () => {
  let db: TestDatabase;
  let served: Served;
  const name = `oc-mem-${randomBytes(3).toString('hex')}`;
  const container = `blytz-${name}`;
  const fact = `the bakery opens at seven and bakes sourdough${randomBytes(3).toString('hex')} on Tuesdays`;
  const word = fact.split(' ').find((w) => w.startsWith('sourdough')) as string;
  const stateDir = () => join(served.dataDir, 'customers', name);
  const phase = async () =>
    (
      await sql<{ phase: string | null }>`SELECT status->>'phase' AS phase FROM customers WHERE name = ${name}`.execute(
        db.handle.db,
      )
    ).rows[0]?.phase;
  const withLog = (error: unknown) => new Error(`${(error as Error).message}\n${served.log().slice(-3000)}`, { cause: error });
  let backupId: number;

  // A real gateway takes 20 to 60 s to start here, and each `openclaw` command 10 to 30 s.
  beforeAll(async () => {
    await docker
      .getImage(OPENCLAW_IMAGE)
      .inspect()
      .catch(() => {
        throw new Error(`${OPENCLAW_IMAGE} is not on this Docker engine: run scripts/services.sh openclaw (make test does)`);
      });
    db = await createTestDatabase();
    served = await startServe({
      databaseUrl: db.url,
      env: { BLYTZ_CUSTOMER_IMAGE: OPENCLAW_IMAGE, BLYTZ_BACKUP_SCHEDULE_SECONDS: '0' },
    });
    const manifest = {
      apiVersion: 'blytz.cloud/v1alpha1',
      kind: 'Customer',
      metadata: { name },
      spec: { email: `${name}@example.com`, displayName: 'Ada', state: 'active', instructions: 'I run a bakery.' },
    };
    expect((await cli(served, ['apply', '-f', '-'], JSON.stringify(manifest))).code).toBe(0);
    await waitFor(async () => (await phase()) === 'Ready', 240_000, 500).catch((e: unknown) => {
      throw withLog(e);
    });
  }, 300_000);
  afterAll(async () => {
    if (process.env['BLYTZ_TEST_LOG']) writeFileSync(process.env['BLYTZ_TEST_LOG'], served?.log() ?? '');
    await served?.stop();
    await db?.drop();
  });

  it('backs up the memory OpenClaw indexed while the gateway runs', async () => {
    await run('docker', [
      'exec',
      '-u',
      '1000:1000',
      container,
      'sh',
      '-c',
      `mkdir -p /home/node/.openclaw/workspace/memory && printf '%s\\n' "${fact}" > /home/node/.openclaw/workspace/memory/2026-12-06.md`,
    ]);
    expect(await openclaw(container, ['memory', 'index', '--force'])).toMatch(/Memory index updated .*: \d+ files? indexed/);
    expect(await openclaw(container, ['memory', 'search', word])).toContain(fact);

    const res = await cli(served, ['backup', 'create', name, '--wait', '-o', 'json']);
    expect(res.code, res.stderr).toBe(0);
    const backup = JSON.parse(res.stdout) as { id: number; state: string; openclawVersion: string };
    expect(backup.state).toBe('succeeded');
    expect(backup.openclawVersion).toBe(OPENCLAW_IMAGE.split(':').pop());
    backupId = backup.id;
    // Taken while the gateway kept running.
    const [running] = await instanceContainers(served.instance, name);
    expect(running?.State).toBe('running');
  }, 300_000);

  it('brings it back after the container and the state folder are gone: the database intact, OpenClaw finds the memory', async () => {
    for (const c of await instanceContainers(served.instance, name)) await docker.getContainer(c.Id).remove({ force: true });
    // Retried: the controller may be writing into it at the same moment.
    rmSync(stateDir(), { recursive: true, force: true, maxRetries: 20, retryDelay: 50 });
    const res = await cli(served, ['backup', 'restore', String(backupId), '--wait']);
    expect(res.code, `${res.stdout}${res.stderr}`).toBe(0);
    await waitFor(async () => (await phase()) === 'Ready', 240_000, 500).catch((e: unknown) => {
      throw withLog(e);
    });

    const agentDb = findFile(stateDir(), 'openclaw-agent.sqlite');
    expect(agentDb, 'the agent database was restored').toBeDefined();
    const copy = new DatabaseSync(agentDb!, { readOnly: true });
    try {
      expect(copy.prepare('PRAGMA integrity_check').get()).toEqual({ integrity_check: 'ok' });
    } finally {
      copy.close();
    }
    expect(await openclaw(container, ['memory', 'search', word])).toContain(fact);
    // The restored gateway, in a new container, started on its first try: the backup carried no
    // lease of the gateway it was taken from (which refused every start until it expired).
    const { stdout, stderr } = await run('docker', ['logs', container], { maxBuffer: 16 * 1024 * 1024 });
    expect(`${stdout}${stderr}`).not.toContain('owner lease is still active');
  }, 480_000);
});
