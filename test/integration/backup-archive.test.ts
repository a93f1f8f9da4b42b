import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { lstat, mkdir, mkdtemp, readdir, readFile, rename, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { extractArchive } from '../../src/backup/archive.js';
import { FolderStateSource } from '../../src/backup/folder-state.js';
import { ArchiveIntegrityError } from '../../src/backup/sealed-stream.js';

/**
 * Archives of a real state folder on the real filesystem: a live SQLite database in WAL mode
 * written to while the snapshot runs, secrets in openclaw.json, a planted symlink and FIFO.
 */

const key = randomBytes(32);
const OWNER = { uid: 1000, gid: 1000 };
let root: string;
let customers: string;
let source: FolderStateSource;

async function files(dir: string): Promise<Map<string, Buffer>> {
  const out = new Map<string, Buffer>();
  const visit = async (d: string) => {
    for (const name of (await readdir(d)).sort()) {
      const path = join(d, name);
      const info = await lstat(path);
      if (info.isDirectory()) await visit(path);
      else if (info.isFile()) out.set(relative(dir, path), await readFile(path));
      else out.set(relative(dir, path), Buffer.from(`<${info.isSymbolicLink() ? 'symlink' : 'special'}>`));
    }
  };
  await visit(dir);
  return out;
}

async function makeState(name: string): Promise<{ dir: string; db: DatabaseSync }> {
  const dir = join(customers, name);
  await mkdir(join(dir, 'workspace', 'memory'), { recursive: true });
  await mkdir(join(dir, 'state'), { recursive: true });
  await mkdir(join(dir, 'tmp', 'openclaw-0'), { recursive: true });
  await writeFile(
    join(dir, 'openclaw.json'),
    JSON.stringify({
      gateway: { auth: { mode: 'token', token: 'gateway-secret-123' } },
      channels: { telegram: { botToken: '123:bot-secret', allowFrom: ['4242'] } },
      env: { ANTHROPIC_API_KEY: 'sk-ant-key-secret' },
    }),
  );
  await writeFile(join(dir, 'workspace', 'AGENTS.md'), '# Agents\n');
  await writeFile(join(dir, 'workspace', 'memory', 'notes.md'), 'remember: the bakery opens at 7\n'.repeat(200));
  await writeFile(join(dir, 'workspace', 'memory', 'blob.bin'), randomBytes(300_000));
  await writeFile(join(dir, 'tmp', 'openclaw-0', 'gateway.lock'), 'x');
  await writeFile(join(dir, '.blytz-render.json'), '{}');
  await symlink('/etc/shadow', join(dir, 'workspace', 'memory', 'escape'));
  execFileSync('mkfifo', [join(dir, 'workspace', 'pipe')]);
  const db = new DatabaseSync(join(dir, 'state', 'openclaw.sqlite'));
  db.exec('PRAGMA journal_mode = WAL; CREATE TABLE memories (id INTEGER PRIMARY KEY, text TEXT NOT NULL)');
  const insert = db.prepare('INSERT INTO memories (text) VALUES (?)');
  for (let i = 0; i < 2000; i++) insert.run(`memory ${i} ${'x'.repeat(100)}`);
  return { dir, db };
}

beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), 'blytz-backup-'));
  customers = join(root, 'customers');
  source = new FolderStateSource({ customersDir: customers, workDir: join(root, 'work'), owner: OWNER });
});

afterEach(async () => {
  await rm(root, { recursive: true, force: true });
});

describe('backup archives of a state folder', () => {
  it('restores every regular file byte for byte, the live database consistent, no secret, no link or FIFO', async () => {
    const { dir, db } = await makeState('alice');
    // The gateway keeps writing while the snapshot runs.
    const insert = db.prepare('INSERT INTO memories (text) VALUES (?)');
    let writes = 0;
    const writer = setInterval(() => {
      db.exec('BEGIN');
      for (let i = 0; i < 50; i++) insert.run(`live ${writes++}`);
      db.exec('COMMIT');
    }, 1);
    const before = await files(dir);
    const out = join(root, 'alice.archive');
    const written = await source.archive('alice', { key, context: 'ctx-alice', outFile: out, meta: { image: 'x:1' } });
    clearInterval(writer);
    db.close();

    expect(written.sizeBytes).toBe((await stat(out)).size);
    expect(written.sha256).toMatch(/^[0-9a-f]{64}$/);
    expect(written.manifest.sqlite).toEqual(['state/openclaw.sqlite']);
    expect(written.manifest.redacted).toEqual(['channels.telegram.botToken', 'env.ANTHROPIC_API_KEY', 'gateway.auth.token']);
    const raw = await readFile(out);
    expect(raw.includes(Buffer.from('remember: the bakery'))).toBe(false); // encrypted

    const target = join(root, 'restored');
    const manifest = await extractArchive({
      input: createReadStream(out),
      keys: [key],
      expectContext: 'ctx-alice',
      targetDir: target,
      owner: OWNER,
      sha256: written.sha256,
    });
    expect(manifest?.meta['image']).toBe('x:1');
    const after = await files(target);
    for (const [path, bytes] of before) {
      if (path.startsWith('tmp/') || path === '.blytz-render.json' || path.startsWith('state/')) continue;
      if (path === 'openclaw.json' || path === 'workspace/memory/escape' || path === 'workspace/pipe') continue;
      expect(after.get(path)?.equals(bytes), path).toBe(true);
    }
    expect(
      [...after.keys()].filter((p) => p.startsWith('tmp') || p.includes('escape') || p.includes('pipe') || p.endsWith('-wal')),
    ).toEqual([]);
    const config = await readFile(join(target, 'openclaw.json'), 'utf8');
    expect(config).not.toMatch(/secret/);
    expect(JSON.parse(config).channels.telegram.allowFrom).toEqual(['4242']);
    const copy = new DatabaseSync(join(target, 'state', 'openclaw.sqlite'), { readOnly: true });
    expect(copy.prepare('PRAGMA integrity_check').get()).toEqual({ integrity_check: 'ok' });
    const count = (copy.prepare('SELECT count(*) AS n FROM memories').get() as { n: number }).n;
    copy.close();
    expect(count).toBeGreaterThanOrEqual(2000);
    expect((await stat(join(target, 'workspace', 'memory', 'notes.md'))).uid).toBe(OWNER.uid);
  });

  /** Backs `name` up and restores the archive into a folder of its own: the restored database, read only. */
  async function restoredDatabase(name: string): Promise<DatabaseSync> {
    const out = join(root, `${name}.archive`);
    const written = await source.archive(name, { key, context: `ctx-${name}`, outFile: out, meta: {} });
    const target = join(root, `restored-${name}`);
    await extractArchive({ input: createReadStream(out), keys: [key], expectContext: `ctx-${name}`, targetDir: target, owner: OWNER, sha256: written.sha256 });
    return new DatabaseSync(join(target, 'state', 'openclaw.sqlite'), { readOnly: true });
  }

  it("leaves out the running gateway's process leases, so a restored gateway in a new container can start at once", async () => {
    const { db } = await makeState('dave');
    // OpenClaw 2026.9.6's table, as its running gateway leaves it: its owner lease, host = its container.
    db.exec(
      'CREATE TABLE state_leases (scope TEXT NOT NULL, lease_key TEXT NOT NULL, owner TEXT NOT NULL, expires_at INTEGER, heartbeat_at INTEGER, payload_json TEXT, created_at INTEGER, updated_at INTEGER, PRIMARY KEY (scope, lease_key))',
    );
    const payload = JSON.stringify({ owner: { pid: 7, host: '0fde0d71de02', startedAt: 1 }, port: 18789, mode: 'foreground', supervisor: null });
    db.prepare('INSERT INTO state_leases VALUES (?, ?, ?, ?, ?, ?, ?, ?)').run('gateway-owner', 'global', 'o-1', Date.now() + 300_000, Date.now(), payload, Date.now(), Date.now());
    // A hostile container's trigger on that delete, to fill the controller's disk from its copy: dropped first.
    db.exec('CREATE TABLE ballast (b BLOB)');
    db.exec('CREATE TRIGGER "fill ""it""" AFTER DELETE ON state_leases BEGIN INSERT INTO ballast VALUES (randomblob(50000000)); END');
    const copy = await restoredDatabase('dave');
    try {
      expect(copy.prepare('SELECT count(*) AS n FROM state_leases').get()).toEqual({ n: 0 });
      expect((copy.prepare('SELECT count(*) AS n FROM memories').get() as { n: number }).n).toBe(2000);
      expect(copy.prepare('SELECT count(*) AS n FROM ballast').get()).toEqual({ n: 0 });
    } finally {
      copy.close();
    }
    // The customer's own database keeps its lease: the gateway that holds it runs on.
    expect(db.prepare('SELECT owner FROM state_leases').all()).toEqual([{ owner: 'o-1' }]);
    db.close();
  });

  it("nor does a hostile database's code run through a foreign key's cascade: it would run on the controller's main thread", async () => {
    const { db } = await makeState('erin');
    db.exec('CREATE TABLE state_leases (scope TEXT NOT NULL, lease_key TEXT NOT NULL, owner TEXT NOT NULL, PRIMARY KEY (scope, lease_key))');
    db.prepare('INSERT INTO state_leases VALUES (?, ?, ?)').run('gateway-owner', 'global', 'o-1');
    // The delete cascades to a table of the container's, whose own trigger (not on state_leases, so
    // not dropped) runs whatever it holds: here a mark, but a cross join of a table with itself
    // would hold the event loop of blytz serve for hours.
    db.exec('CREATE TABLE ran (at TEXT)');
    db.exec(
      'CREATE TABLE held (scope TEXT, lease_key TEXT, FOREIGN KEY (scope, lease_key) REFERENCES state_leases (scope, lease_key) ON DELETE CASCADE)',
    );
    db.prepare('INSERT INTO held VALUES (?, ?)').run('gateway-owner', 'global');
    db.exec("CREATE TRIGGER cascaded AFTER DELETE ON held BEGIN INSERT INTO ran VALUES ('in the controller'); END");
    const copy = await restoredDatabase('erin');
    try {
      expect(copy.prepare('SELECT count(*) AS n FROM state_leases').get()).toEqual({ n: 0 });
      expect(copy.prepare('SELECT count(*) AS n FROM ran').get()).toEqual({ n: 0 });
    } finally {
      copy.close();
    }
    db.close();
  });

  it('a changed archive is refused and the customer keeps its state', async () => {
    const { dir, db } = await makeState('bob');
    db.close();
    const out = join(root, 'bob.archive');
    await source.archive('bob', { key, context: 'ctx-bob', outFile: out, meta: {} });
    const raw = await readFile(out);
    raw[Math.floor(raw.length / 2)] = (raw[Math.floor(raw.length / 2)] as number) ^ 0x01;
    await writeFile(out, raw);
    const before = await files(dir);
    await expect(source.stage(1, 'bob', createReadStream(out), { keys: [key], expectContext: 'ctx-bob' })).rejects.toBeInstanceOf(
      ArchiveIntegrityError,
    );
    expect(await lstat(join(root, 'work', 'restore-1')).catch(() => undefined)).toBeUndefined();
    expect(await files(dir)).toEqual(before);
  });

  it('a swap interrupted between its two renames is finished by running it again', async () => {
    const { dir, db } = await makeState('carol');
    db.close();
    const out = join(root, 'carol.archive');
    await source.archive('carol', { key, context: 'ctx-carol', outFile: out, meta: {} });
    await writeFile(join(dir, 'workspace', 'memory', 'notes.md'), 'written after the backup\n');
    await source.stage(7, 'carol', createReadStream(out), { keys: [key], expectContext: 'ctx-carol' });
    // The crash: the old folder was moved aside, the new one not yet moved in.
    await rename(dir, join(root, 'work', 'replaced-7'));
    await source.swap(7, 'carol');
    expect(await readFile(join(dir, 'workspace', 'memory', 'notes.md'), 'utf8')).toMatch(/^remember: the bakery/);
    expect(await lstat(join(dir, '.blytz-render.json')).catch(() => undefined)).toBeUndefined();
    await source.swap(7, 'carol'); // and again: nothing left to do
    await source.discard(7);
    expect(await readdir(join(root, 'work'))).toEqual([]);
  });
});
