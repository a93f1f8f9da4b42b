import { execFileSync } from 'node:child_process';
import { lstat, mkdir, mkdtemp, open, readdir, readFile, readlink, rename, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  chownTarget,
  ensureDirectory,
  FolderCursor,
  ignoreCode,
  parseOwner,
  readRegularFile,
  SafeDir,
  setModeNoFollow,
  sweepTempFiles,
  TEMP_PREFIX,
  UnsafePathError,
  withDir,
  withParent,
  writeFileAtomic,
} from '../../src/workspace/safe-fs.js';

/**
 * The helpers that write into folders a customer's container can write to as well: a link or
 * folder planted where we write must be replaced, never followed.
 */
let dir: string;
/** A file outside the customer's folder that a planted link points at: it must never change. */
let outside: string;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'blytz-safe-fs-'));
  await mkdir(join(dir, 'customer'));
  outside = join(dir, 'host-secret');
  await writeFile(outside, 'host secret\n', { mode: 0o600 });
});

afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

const mode = async (path: string) => (await stat(path)).mode & 0o777;

describe('writeFileAtomic', () => {
  it('writes the content with the mode, whatever the umask, and leaves no temp file', async () => {
    const path = join(dir, 'customer', 'openclaw.json');
    await writeFileAtomic(path, '{"a":1}', 0o600, undefined);
    await writeFileAtomic(path, '{"a":2}', 0o640, undefined);
    expect(await readFile(path, 'utf8')).toBe('{"a":2}');
    expect(await mode(path)).toBe(0o640);
    expect(await readdir(join(dir, 'customer'))).toEqual(['openclaw.json']);
  });

  it('replaces a planted symlink instead of writing through it', async () => {
    const path = join(dir, 'customer', 'openclaw.json');
    await symlink(outside, path);
    await writeFileAtomic(path, 'ours', 0o600, undefined);
    expect((await lstat(path)).isSymbolicLink()).toBe(false);
    expect(await readFile(path, 'utf8')).toBe('ours');
    expect(await readFile(outside, 'utf8')).toBe('host secret\n');
  });

  it('replaces a folder squatting on the path', async () => {
    const path = join(dir, 'customer', 'AGENTS.md');
    await mkdir(path);
    await writeFile(join(path, 'inside'), 'x');
    await writeFileAtomic(path, '# agents', 0o644, undefined);
    expect(await readFile(path, 'utf8')).toBe('# agents');
  });
});

describe('ensureDirectory', () => {
  it('makes a real folder with the mode, replacing a planted link without touching its target', async () => {
    const target = join(dir, 'elsewhere');
    await mkdir(target, { mode: 0o755 });
    const path = join(dir, 'customer', 'workspace');
    await symlink(target, path);
    await ensureDirectory(path, 0o700, undefined);
    expect((await lstat(path)).isDirectory()).toBe(true);
    expect(await mode(path)).toBe(0o700);
    expect(await mode(target)).toBe(0o755);
  });

  it('replaces a file in the folder’s place, and keeps an existing folder’s content', async () => {
    const path = join(dir, 'customer', 'state');
    await writeFile(path, 'not a folder');
    await ensureDirectory(path, 0o750, undefined);
    await writeFile(join(path, 'kept'), 'x');
    await ensureDirectory(path, 0o700, undefined);
    expect(await readdir(path)).toEqual(['kept']);
    expect(await mode(path)).toBe(0o700);
  });
});

describe('readRegularFile', () => {
  it('reads a regular file', async () => {
    await writeFile(join(dir, 'customer', 'marker'), 'hash-1');
    expect(await readRegularFile(join(dir, 'customer', 'marker'))).toBe('hash-1');
  });

  it('reads a symlink, a folder, a FIFO, a missing or an oversized file as undefined', async () => {
    const base = join(dir, 'customer');
    await symlink(outside, join(base, 'link'));
    await mkdir(join(base, 'folder'));
    execFileSync('mkfifo', [join(base, 'fifo')]);
    await writeFile(join(base, 'big'), 'x'.repeat(100));
    expect(await readlink(join(base, 'link'))).toBe(outside);
    for (const name of ['link', 'folder', 'fifo', 'missing']) expect(await readRegularFile(join(base, name)), name).toBeUndefined();
    expect(await readRegularFile(join(base, 'big'), 99)).toBeUndefined();
    expect(await readRegularFile(join(base, 'big'), 100)).toHaveLength(100);
  });
});

describe('sweepTempFiles', () => {
  it('removes only our temp files, and passes over a missing folder', async () => {
    const base = join(dir, 'customer');
    await writeFile(join(base, `${TEMP_PREFIX}abc-openclaw.json`), 'half');
    await writeFile(join(base, 'openclaw.json'), 'whole');
    await sweepTempFiles(base);
    expect(await readdir(base)).toEqual(['openclaw.json']);
    await expect(sweepTempFiles(join(dir, 'missing'))).resolves.toBeUndefined();
  });

  it('removes a folder or a link the container made under a temp name, never what a link points at', async () => {
    const base = join(dir, 'customer');
    await mkdir(join(base, `${TEMP_PREFIX}folder`));
    await writeFile(join(base, `${TEMP_PREFIX}folder`, 'inside'), 'x');
    await symlink(dir, join(base, `${TEMP_PREFIX}link`));
    await sweepTempFiles(base);
    expect(await readdir(base)).toEqual([]);
    expect(await readFile(outside, 'utf8')).toBe('host secret\n');
  });
});

describe('SafeDir: every name resolved from the folder held open', () => {
  it('a folder swapped for a link after it was opened: the write lands in the folder held, not where the link points', async () => {
    const base = join(dir, 'customer');
    await mkdir(join(base, 'workspace'));
    const host = join(dir, 'host-folder');
    await mkdir(host);
    await withDir(base, async (root) => {
      const workspace = (await root.dir('workspace')) as SafeDir;
      try {
        // The container, between our open and our write: moves the folder away, links one to the host.
        await rename(join(base, 'workspace'), join(base, 'moved'));
        await symlink(host, join(base, 'workspace'));
        await workspace.writeFile('AGENTS.md', 'ours', 0o644, undefined);
        await workspace.setMode('AGENTS.md', 0o600, undefined);
        await workspace.unlinkFile('NOTHING');
      } finally {
        await workspace.close();
      }
    });
    expect(await readdir(host)).toEqual([]);
    expect(await readFile(join(base, 'moved', 'AGENTS.md'), 'utf8')).toBe('ours');
  });

  it('walks a relative path without following a link at any level, creating real folders when asked', async () => {
    const base = join(dir, 'customer');
    await symlink(dir, join(base, 'workspace')); // a link where a folder of ours goes
    await withDir(base, async (root) => {
      // Reading: a link on the way means nothing is there.
      expect(await withParent(root, 'workspace/host-secret', (folder, name) => folder.readFile(name))).toBeUndefined();
      expect(await withParent(root, 'workspace/host-secret', (folder, name) => folder.unlinkFile(name))).toBeUndefined();
      // Writing: the link is replaced by a real folder, never followed.
      await withParent(root, 'workspace/deep/AGENTS.md', (folder, name) => folder.writeFile(name, 'ours', 0o644, undefined), {
        mode: 0o700,
        owner: undefined,
      });
    });
    expect((await lstat(join(base, 'workspace'))).isDirectory()).toBe(true);
    expect(await readFile(join(base, 'workspace', 'deep', 'AGENTS.md'), 'utf8')).toBe('ours');
    expect(await readFile(outside, 'utf8')).toBe('host secret\n');
    expect(await readdir(dir)).toEqual(['customer', 'host-secret']);
  });

  it('removes a tree with links in it without touching their targets', async () => {
    const base = join(dir, 'customer');
    await mkdir(join(base, 'tree', 'sub'), { recursive: true });
    await symlink(outside, join(base, 'tree', 'sub', 'to-file'));
    await symlink(dir, join(base, 'tree', 'to-folder'));
    execFileSync('mkfifo', [join(base, 'tree', 'fifo')]);
    await withDir(base, (root) => root.remove('tree'));
    expect(await readdir(base)).toEqual([]);
    expect(await readFile(outside, 'utf8')).toBe('host secret\n');
  });

  it('never chmods through a link', async () => {
    const base = join(dir, 'customer');
    await symlink(outside, join(base, 'openclaw.json'));
    await setModeNoFollow(join(base, 'openclaw.json'), 0o666, undefined);
    expect(await mode(outside)).toBe(0o600);
  });

  it('reads at most the cap even from a file that grows while it is read', async () => {
    const base = join(dir, 'customer');
    await writeFile(join(base, 'grows'), 'x'.repeat(10));
    const handle = await open(join(base, 'grows'), 'a');
    try {
      const reading = readRegularFile(join(base, 'grows'), 100_000);
      await handle.write('y'.repeat(200_000));
      const text = await reading;
      // Either the short file read before it grew, or nothing: never more than the cap.
      if (text !== undefined) expect(text.length).toBeLessThanOrEqual(100_000);
      expect(await readRegularFile(join(base, 'grows'), 100_000)).toBeUndefined();
    } finally {
      await handle.close();
    }
  });

  it('refuses a name that is not one path component, and a root that is a link', async () => {
    await withDir(join(dir, 'customer'), async (root) => {
      for (const name of ['..', '.', '', 'a/b']) await expect(root.readFile(name)).rejects.toBeInstanceOf(UnsafePathError);
    });
    await symlink(join(dir, 'customer'), join(dir, 'link'));
    await expect(SafeDir.open(join(dir, 'link'))).rejects.toBeInstanceOf(UnsafePathError);
  });
});

describe('reading a tree the container can change', () => {
  it('openFile opens regular files only, and keeps reading the file it opened when its name is swapped', async () => {
    const customer = join(dir, 'customer');
    await writeFile(join(customer, 'notes.md'), 'customer notes');
    await symlink(outside, join(customer, 'link'));
    execFileSync('mkfifo', [join(customer, 'pipe')]);
    await withDir(customer, async (root) => {
      expect(await root.openFile('link')).toBeUndefined();
      expect(await root.openFile('pipe')).toBeUndefined();
      expect(await root.openFile('missing')).toBeUndefined();
      const handle = await root.openFile('notes.md');
      try {
        await rename(join(customer, 'notes.md'), join(customer, 'moved.md'));
        await symlink(outside, join(customer, 'notes.md'));
        expect(await handle?.readFile('utf8')).toBe('customer notes');
      } finally {
        await handle?.close();
      }
    });
  });

  it('linkTo hard-links the entry itself: a link at the name stays a link, its target untouched', async () => {
    const customer = join(dir, 'customer');
    await writeFile(join(customer, 'db'), 'data');
    await symlink(outside, join(customer, 'db-wal'));
    await withDir(customer, async (root) => {
      await root.linkTo('db', join(dir, 'own-db'));
      await root.linkTo('db-wal', join(dir, 'own-wal'));
    });
    expect((await stat(join(dir, 'own-db'))).ino).toBe((await stat(join(customer, 'db'))).ino);
    expect((await lstat(join(dir, 'own-wal'))).isSymbolicLink()).toBe(true);
    expect((await stat(outside)).nlink).toBe(1);
  });

  it('FolderCursor reaches each path through real folders, reusing the open ones, and not through a folder swapped for a link', async () => {
    const customer = join(dir, 'customer');
    await mkdir(join(customer, 'a', 'b'), { recursive: true });
    await writeFile(join(customer, 'a', 'b', 'one'), '1');
    await writeFile(join(customer, 'a', 'two'), '2');
    await withDir(customer, async (root) => {
      const cursor = new FolderCursor(root);
      try {
        const first = await cursor.parentOf('a/b/one');
        expect(first?.name).toBe('one');
        expect(await first?.dir.readFile('one')).toBe('1');
        // A folder it holds open is the folder it opened, wherever the container moves it.
        await rename(join(customer, 'a'), join(customer, 'a-moved'));
        await symlink(dir, join(customer, 'a'));
        expect(await (await cursor.parentOf('a/two'))?.dir.readFile('two')).toBe('2');
        // Opened afresh, the link is refused.
        await cursor.close();
        expect(await cursor.parentOf('a/two')).toBeUndefined();
        expect(await cursor.parentOf('top')).toEqual({ dir: root, name: 'top' });
        await expect(cursor.parentOf('a/../x')).rejects.toBeInstanceOf(UnsafePathError);
      } finally {
        await cursor.close();
      }
    });
  });
});

describe('owners', () => {
  it('parses uid:gid and refuses anything else', () => {
    expect(parseOwner('1000:1001')).toEqual({ uid: 1000, gid: 1001 });
    for (const bad of ['1000', 'node:node', '1000:', '-1:0', '']) expect(() => parseOwner(bad), bad).toThrow(/uid:gid/);
  });

  it('chowns as root; needs no chown as the same user; refuses another user when not root', () => {
    const uid = process.getuid!();
    const gid = process.getgid!();
    const other = { uid: uid + 1, gid: gid + 1 };
    if (uid === 0) {
      expect(chownTarget(other)).toEqual(other);
    } else {
      expect(chownTarget({ uid, gid })).toBeUndefined();
      expect(() => chownTarget(other)).toThrow(/run it as root or as that user/);
    }
  });
});

describe('ignoreCode', () => {
  it('swallows only the codes named', () => {
    const error = (code: string) => Object.assign(new Error(code), { code });
    expect(ignoreCode('EEXIST', 'ENOENT')(error('ENOENT'))).toBeUndefined();
    expect(() => ignoreCode('EEXIST')(error('EACCES'))).toThrow('EACCES');
  });
});
