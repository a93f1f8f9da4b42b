import { execFileSync } from 'node:child_process';
import { lstat, mkdir, mkdtemp, readdir, readFile, readlink, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  chownTarget,
  ensureDirectory,
  ignoreCode,
  parseOwner,
  readRegularFile,
  sweepTempFiles,
  TEMP_PREFIX,
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
