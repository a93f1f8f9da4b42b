import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { lstat, mkdir, mkdtemp, readdir, readFile, rename, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { zstdDecompressSync } from 'node:zlib';
import fc from 'fast-check';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { extractArchive } from '../../src/backup/archive.js';
import { FolderStateSource } from '../../src/backup/folder-state.js';
import { takeSnapshot } from '../../src/backup/snapshot.js';
import { tarStream } from '../../src/backup/tar-writer.js';

/**
 * A hostile container swaps a folder of its state for a link to a host folder (the platform's
 * data folder with its secret key, /etc) after the backup walked the folder and before it read
 * the files. Nothing of the host may reach an archive: neither a backup (restored later, where
 * the customer reads it) nor the customer's own export (which they download). On the real
 * filesystem: the swap made at the exact moment between the walk and the read, and the same swap
 * raced by a hostile loop in another process.
 */

const key = randomBytes(32);
const OWNER = { uid: 1000, gid: 1000 };
let root: string;
let customers: string;
let host: string;
let marker: string;
let source: FolderStateSource;

/** The host folder the links point at: the same names as the customer's folder, holding the marker. */
async function makeHost(): Promise<void> {
  await mkdir(join(host, 'memory'), { recursive: true });
  await writeFile(join(host, 'secret-key'), `${marker}\n`, { mode: 0o600 });
  await writeFile(join(host, 'AGENTS.md'), `${marker} agents\n`);
  await writeFile(join(host, 'memory', 'notes.md'), `${marker} notes\n`.repeat(100));
  await writeFile(join(host, 'memory', 'blob.bin'), `${marker} blob\n`.repeat(100));
  const db = new DatabaseSync(join(host, 'memory', 'facts.sqlite'));
  db.exec('CREATE TABLE facts (text TEXT NOT NULL)');
  db.prepare('INSERT INTO facts (text) VALUES (?)').run(marker);
  db.close();
}

async function makeCustomer(name: string): Promise<string> {
  const dir = join(customers, name);
  await mkdir(join(dir, 'workspace', 'memory'), { recursive: true });
  await writeFile(join(dir, 'openclaw.json'), JSON.stringify({ gateway: { auth: { token: 'gw-secret' } } }));
  await writeFile(join(dir, 'workspace', 'AGENTS.md'), '# Agents\n');
  await writeFile(join(dir, 'workspace', 'memory', 'notes.md'), 'the bakery opens at 7\n'.repeat(100));
  await writeFile(join(dir, 'workspace', 'memory', 'blob.bin'), randomBytes(4096));
  const db = new DatabaseSync(join(dir, 'workspace', 'memory', 'facts.sqlite'));
  db.exec('PRAGMA journal_mode = WAL; CREATE TABLE facts (text TEXT NOT NULL)');
  db.prepare('INSERT INTO facts (text) VALUES (?)').run('the customer likes rye');
  db.close();
  return dir;
}

/** Every file of a folder tree, by relative path (links and specials by their kind). */
async function tree(dir: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  const visit = async (d: string, rel: string) => {
    for (const name of (await readdir(d)).sort()) {
      const path = join(d, name);
      const info = await lstat(path);
      const relPath = rel === '' ? name : `${rel}/${name}`;
      if (info.isDirectory()) await visit(path, relPath);
      else if (info.isFile()) out.set(relPath, `${info.mode & 0o7777}:${info.uid}:${(await readFile(path)).toString('base64')}`);
      else out.set(relPath, info.isSymbolicLink() ? '<symlink>' : '<special>');
    }
  };
  await visit(dir, '');
  return out;
}

async function collect(chunks: AsyncIterable<Buffer>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const chunk of chunks) parts.push(chunk);
  return Buffer.concat(parts);
}

beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), 'blytz-backup-swap-'));
  customers = join(root, 'data', 'customers');
  host = join(root, 'data', 'host');
  marker = `HOST-SECRET-${randomBytes(8).toString('hex')}`;
  await makeHost();
  source = new FolderStateSource({ customersDir: customers, workDir: join(root, 'data', 'backup-work'), owner: OWNER });
});

afterEach(async () => {
  await rm(root, { recursive: true, force: true });
});

describe('a folder swapped for a link while a backup reads the customer folder', () => {
  it('between the walk and the read: the files under it are left out, nothing of the host is archived', async () => {
    const dir = await makeCustomer('alice');
    const hostBefore = await tree(host);
    const snapshot = await takeSnapshot({ stateDir: dir, stagingDir: join(root, 'staging'), context: 'ctx' });
    // The walk is done; the container swaps `workspace/` for a link to the host folder, which
    // holds files of the same names.
    await rename(join(dir, 'workspace'), join(dir, 'workspace-moved'));
    await symlink(host, join(dir, 'workspace'));
    let tar: Buffer;
    try {
      tar = await collect(tarStream(snapshot.entries));
    } finally {
      await snapshot.close();
    }
    expect(tar.includes(Buffer.from(marker))).toBe(false);
    expect(tar.includes(Buffer.from('the bakery opens at 7'))).toBe(false); // its own files went with the folder
    expect(snapshot.skipped).toEqual(expect.arrayContaining(['workspace/AGENTS.md', 'workspace/memory/notes.md']));
    expect(await tree(host)).toEqual(hostBefore);
  });

  it('a backup and an export raced by a container swapping folders for links all the time: no host byte in any', async () => {
    const dir = await makeCustomer('bob');
    const hostBefore = await tree(host);
    const hostile = await startSwapping(join(dir, 'workspace'), join(dir, 'workspace-real'), host);
    try {
      for (let round = 0; round < 30; round++) {
        const sealed = round % 2 === 0;
        const out = join(root, `bob-${round}.archive`);
        await source.archive('bob', { key, context: 'ctx-bob', outFile: out, meta: {}, sealed });
        if (sealed) {
          const target = join(root, `restored-${round}`);
          await extractArchive({ input: createReadStream(out), keys: [key], expectContext: 'ctx-bob', targetDir: target });
          for (const [path, content] of await tree(target)) {
            expect(Buffer.from(content.split(':')[2] ?? '', 'base64').includes(Buffer.from(marker)), path).toBe(false);
            expect(content, path).not.toBe('<symlink>');
          }
          await rm(target, { recursive: true });
        } else {
          const tar = zstdDecompressSync(await readFile(out));
          expect(tar.includes(Buffer.from(marker))).toBe(false);
        }
        await rm(out);
      }
    } finally {
      await hostile.stop();
    }
    expect(await tree(host)).toEqual(hostBefore);
  });
});

/** Folders and files of a customer's tree the property plants and swaps (parents before children). */
const TREE_DIRS = ['workspace', 'workspace/memory', 'state', 'state/agents'];
const TREE_FILES = ['workspace/AGENTS.md', 'workspace/memory/notes.md', 'state/agents/session.json', 'top.txt'];
/** What the container does to a path, before the walk or between the walk and the read. */
const MOVES = ['folder-to-host-link', 'file-to-host-link', 'file-to-fifo', 'remove', 'nothing'] as const;

async function plant(dir: string, path: string, move: (typeof MOVES)[number]): Promise<void> {
  // The container acts inside its own folder only: never through a link it planted before
  // (from inside, that link would not lead to the host).
  const parts = path.split('/');
  for (let depth = 1; depth < parts.length; depth++) {
    const parent = await lstat(join(dir, ...parts.slice(0, depth))).catch(() => undefined);
    if (!parent?.isDirectory()) return;
  }
  const at = join(dir, ...parts);
  const info = await lstat(at).catch(() => undefined);
  if (!info || move === 'nothing') return;
  const aside = `${at}.aside-${randomBytes(3).toString('hex')}`;
  if (move === 'remove') return void (await rm(at, { recursive: true }));
  if (move === 'folder-to-host-link' && info.isDirectory()) {
    await rename(at, aside);
    await symlink(host, at);
  } else if (move === 'file-to-host-link' && info.isFile()) {
    await rename(at, aside);
    await symlink(join(host, 'secret-key'), at);
  } else if (move === 'file-to-fifo' && info.isFile()) {
    await rename(at, aside);
    execFileSync('mkfifo', [at]);
  }
}

describe('a state folder nested deeper than any assistant writes', () => {
  it('is left out below 64 levels and named as skipped (the walk holds one open folder per level)', async () => {
    const dir = await makeCustomer('deep');
    // 80 levels of `d`, with a file at the bottom and one at level 10.
    const levels = Array.from({ length: 80 }, () => 'd');
    await mkdir(join(dir, 'workspace', ...levels), { recursive: true });
    await writeFile(join(dir, 'workspace', ...levels, 'bottom.txt'), 'too deep to keep\n');
    await writeFile(join(dir, 'workspace', ...levels.slice(0, 10), 'kept.txt'), 'kept at level ten\n');
    const snapshot = await takeSnapshot({ stateDir: dir, stagingDir: join(root, 'staging'), context: 'ctx' });
    let tar: Buffer;
    try {
      tar = await collect(tarStream(snapshot.entries));
    } finally {
      await snapshot.close();
    }
    expect(tar.includes(Buffer.from('kept at level ten'))).toBe(true);
    expect(tar.includes(Buffer.from('too deep to keep'))).toBe(false);
    // `workspace` is level 1, so its 63rd `d` is level 64, the deepest kept; the 64th is left out.
    expect(snapshot.skipped).toEqual([['workspace', ...levels.slice(0, 64)].join('/')]);
  });
});

describe('property: whatever the container plants or swaps, and when', () => {
  it("no archive holds a host byte, every archived file is one of the customer's, the host is unchanged", async () => {
    for (const path of TREE_FILES.map((f) => f.split('/').pop() as string))
      await writeFile(join(host, path), `${marker} ${path}\n`);
    await mkdir(join(host, 'agents'), { recursive: true });
    await writeFile(join(host, 'agents', 'session.json'), `${marker} session\n`);
    const hostBefore = await tree(host);
    let run = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.tuple(fc.constantFrom(...TREE_DIRS, ...TREE_FILES), fc.constantFrom(...MOVES)), { maxLength: 4 }),
        fc.array(fc.tuple(fc.constantFrom(...TREE_DIRS, ...TREE_FILES), fc.constantFrom(...MOVES)), { maxLength: 4 }),
        async (before, between) => {
          const dir = join(customers, `c${run++}`);
          for (const folder of TREE_DIRS) await mkdir(join(dir, ...folder.split('/')), { recursive: true });
          const contents = new Set<string>();
          for (const file of TREE_FILES) {
            const content = `customer ${file} ${'x'.repeat(600)}\n`;
            contents.add(content);
            await writeFile(join(dir, ...file.split('/')), content);
          }
          for (const [path, move] of before) await plant(dir, path, move);
          const snapshot = await takeSnapshot({ stateDir: dir, stagingDir: join(root, `staging-${run}`), context: 'ctx' });
          let tar: Buffer;
          try {
            for (const [path, move] of between) await plant(dir, path, move);
            tar = await collect(tarStream(snapshot.entries));
          } finally {
            await snapshot.close();
          }
          expect(tar.includes(Buffer.from(marker))).toBe(false);
          const target = join(root, `out-${run}`);
          await mkdir(target);
          execFileSync('tar', ['-x', '-C', target], { input: tar });
          for (const [path, content] of await tree(target)) {
            if (path === '.blytz-backup.json') continue;
            expect(content, path).not.toMatch(/^<(symlink|special)>$/);
            expect(contents.has(Buffer.from(content.split(':')[2] ?? '', 'base64').toString()), path).toBe(true);
          }
          await rm(dir, { recursive: true });
          await rm(target, { recursive: true });
        },
      ),
      { numRuns: 40 },
    );
    expect(await tree(host)).toEqual(hostBefore);
  });
});

describe('a restore into a folder the container planted links in', () => {
  it('replaces the folder without writing or deleting through a link; the host is unchanged', async () => {
    const dir = await makeCustomer('carol');
    const out = join(root, 'carol.archive');
    await source.archive('carol', { key, context: 'ctx-carol', outFile: out, meta: {} });
    // After the backup, the container links its folders and the render marker to the host.
    await rm(join(dir, 'workspace'), { recursive: true });
    await symlink(host, join(dir, 'workspace'));
    await symlink(join(host, 'secret-key'), join(dir, '.blytz-render.json'));
    await mkdir(join(dir, 'state'));
    await symlink(host, join(dir, 'state', 'host'));
    const hostBefore = await tree(host);

    await source.stage(1, 'carol', createReadStream(out), { keys: [key], expectContext: 'ctx-carol' });
    await source.swap(1, 'carol');
    await source.discard(1);

    expect(await tree(host)).toEqual(hostBefore);
    expect((await lstat(join(dir, 'workspace'))).isDirectory()).toBe(true);
    expect(await readFile(join(dir, 'workspace', 'memory', 'notes.md'), 'utf8')).toMatch(/^the bakery opens at 7/);
    expect(await lstat(join(dir, '.blytz-render.json')).catch(() => undefined)).toBeUndefined();
    expect((await stat(join(dir, 'workspace', 'AGENTS.md'))).uid).toBe(OWNER.uid);
    expect(await readdir(join(root, 'data', 'backup-work'))).toEqual([]);
  });
});

/**
 * Another process (as the container would be) swapping `folder` for a link to `target` and back,
 * as fast as it can, until stopped. Resolves once it has swapped at least once.
 */
async function startSwapping(folder: string, aside: string, target: string): Promise<{ stop(): Promise<void> }> {
  const script = `
const fs = require('node:fs');
const [folder, aside, target] = process.argv.slice(1);
let told = false;
for (;;) {
  try {
    fs.renameSync(folder, aside);
    fs.symlinkSync(target, folder);
    if (!told) { told = true; process.stdout.write('swapping\\n'); }
  } catch {}
  try { fs.unlinkSync(folder); fs.renameSync(aside, folder); } catch {}
}`;
  const child: ChildProcess = spawn(process.execPath, ['-e', script, folder, aside, target], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const exited = new Promise((resolve) => child.once('exit', resolve));
  await new Promise<void>((resolve, reject) => {
    child.stdout?.once('data', () => resolve());
    child.once('exit', (code) => reject(new Error(`the hostile loop exited (${code}) before swapping`)));
  });
  return {
    async stop() {
      child.kill('SIGKILL');
      await exited;
    },
  };
}
