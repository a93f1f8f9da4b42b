import { randomBytes } from 'node:crypto';
import { constants, existsSync } from 'node:fs';
import { link, lstat, mkdir, open, readdir, rename, rmdir, unlink, type FileHandle } from 'node:fs/promises';
import type { Stats } from 'node:fs';
import { basename, dirname } from 'node:path';

/**
 * Filesystem helpers for folders a customer's container can also write to. The container runs an
 * AI agent with a shell: anything in its folder may be a symlink, a FIFO, a folder where a file
 * was, and may change between two of our calls. We run as root (or as the container's uid), so a
 * followed link would write, chmod or delete on the host.
 *
 * The rule: no path inside such a folder is ever resolved from its name twice. `SafeDir` is a
 * folder opened once with O_NOFOLLOW|O_DIRECTORY; every operation in it goes through
 * `/proc/self/fd/<fd>/<name>`, which the kernel resolves from the open folder itself (what Linux's
 * openat and unlinkat do; Node has neither), so swapping a folder for a link after we opened it
 * changes nothing. The last component is never followed either: files are opened with
 * O_NOFOLLOW (and O_NONBLOCK, so a FIFO cannot hang us), created with O_EXCL, given modes and
 * owners through their open handle, replaced by rename, removed by unlink/rmdir, which act on the
 * name itself. Reads are bounded by a size cap counted while reading, not by a stat taken before.
 *
 * Needs Linux's /proc (every host blytz runs customer folders on).
 */

/** Prefix of our temp files; leftovers from a crash are swept the next time the folder is written. */
export const TEMP_PREFIX = '.blytz-tmp-';

export interface Owner {
  uid: number;
  gid: number;
}

/** `"1000:1000"` -> `{uid: 1000, gid: 1000}`. */
export function parseOwner(user: string): Owner {
  const match = /^(\d+):(\d+)$/.exec(user);
  if (!match) throw new Error(`user ${JSON.stringify(user)} is not "uid:gid"`);
  return { uid: Number(match[1]), gid: Number(match[2]) };
}

/**
 * The owner to chown to, or undefined when we cannot and need not (not root, but already that
 * uid:gid, e.g. a developer whose uid is 1000). Not root and a different uid is an error: the
 * container could not read its own 0600 files.
 */
export function chownTarget(owner: Owner): Owner | undefined {
  const uid = process.getuid?.();
  const gid = process.getgid?.();
  if (uid === undefined) return undefined; // no POSIX owners on this platform
  if (uid === 0) return owner;
  if (uid === owner.uid && gid === owner.gid) return undefined;
  throw new Error(
    `workspace files must belong to ${owner.uid}:${owner.gid} (the container's user), but blytz runs as ${uid}:${gid}; run it as root or as that user`,
  );
}

/** No folder or link where a name of ours is looked up: a container put something else there. */
export class UnsafePathError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UnsafePathError';
  }
}

const PROC_FD = '/proc/self/fd';
const FILE_READ = constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK;
const DIR_READ = constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW;
// A racing container can keep replacing what we remove; past this many rounds we give up.
const MAX_ATTEMPTS = 5;

/** One path component: no separator, not `.` or `..`, not empty. */
function checkName(name: string): string {
  if (name === '' || name === '.' || name === '..' || name.includes('/') || name.includes('\0'))
    throw new UnsafePathError(`${JSON.stringify(name)} is not a single path component`);
  return name;
}

/**
 * A folder held open: every name in it is looked up relative to the open folder, never by path
 * from the root again (see the module comment). Close it when done.
 */
export class SafeDir {
  private constructor(
    private readonly handle: FileHandle,
    /** The path it was opened at, for messages only: never used to reach it again. */
    readonly path: string,
  ) {}

  /**
   * Opens `path` as a folder. Its last component must be a real folder (a link there is refused);
   * the components before it are the caller's own, trusted path (the customers root, a customer's
   * folder: no container can replace those).
   */
  static async open(path: string): Promise<SafeDir> {
    if (!existsSync(PROC_FD)) throw new Error(`${PROC_FD} is missing: customer folders need Linux's /proc`);
    try {
      return new SafeDir(await open(path, DIR_READ), path);
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code === 'ELOOP' || code === 'ENOTDIR') throw new UnsafePathError(`${path} is not a folder (a link or a file)`);
      throw error;
    }
  }

  /** Where `name` in this folder is reached through the open handle. */
  private at(name: string): string {
    return `${PROC_FD}/${this.handle.fd}/${checkName(name)}`;
  }

  /**
   * The sub-folder `name`, or undefined when there is none (or something else is there). With
   * `create`, it is made when missing, whatever else is there is removed first (never followed),
   * and its mode and owner are set.
   */
  async dir(name: string, create?: { mode: number; owner: Owner | undefined }): Promise<SafeDir | undefined> {
    for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
      let handle: FileHandle;
      try {
        handle = await open(this.at(name), DIR_READ);
      } catch (error) {
        const code = (error as NodeJS.ErrnoException).code;
        if (!create) {
          if (code === 'ENOENT' || code === 'ELOOP' || code === 'ENOTDIR') return undefined;
          throw error;
        }
        if (code === 'ELOOP' || code === 'ENOTDIR') await this.remove(name);
        else if (code !== 'ENOENT') throw error;
        await mkdir(this.at(name), { mode: create.mode }).catch(ignoreCode('EEXIST'));
        continue;
      }
      const sub = new SafeDir(handle, `${this.path}/${name}`);
      if (create) {
        await handle.chmod(create.mode); // mkdir's mode is filtered by umask; this is not
        if (create.owner) await handle.chown(create.owner.uid, create.owner.gid);
      }
      return sub;
    }
    throw new UnsafePathError(`${this.path}/${name} keeps changing while it is made a folder`);
  }

  /**
   * Replaces `name` atomically: a temp file in this folder (created, never opened through a
   * link), written, given its mode and owner, fsynced, then renamed over the name. A reader sees
   * the old file or the new one; a link at the name is replaced, not written through; a folder
   * squatting on it is removed first (rename cannot put a file over a folder).
   */
  async writeFile(name: string, content: string | Uint8Array, mode: number, owner: Owner | undefined): Promise<void> {
    const temp = `${TEMP_PREFIX}${randomBytes(6).toString('hex')}-${checkName(name)}`.slice(0, 255);
    const file = await open(
      this.at(temp),
      constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW,
      mode,
    );
    try {
      try {
        await file.writeFile(content);
        await file.chmod(mode);
        if (owner) await file.chown(owner.uid, owner.gid);
        await file.sync();
      } finally {
        await file.close();
      }
      for (let attempt = 0; ; attempt++) {
        try {
          await rename(this.at(temp), this.at(name));
          return;
        } catch (error) {
          const code = (error as NodeJS.ErrnoException).code;
          if ((code !== 'EISDIR' && code !== 'ENOTEMPTY' && code !== 'EEXIST') || attempt >= MAX_ATTEMPTS) throw error;
          await this.removeTree(name);
        }
      }
    } catch (error) {
      await unlink(this.at(temp)).catch(() => {});
      throw error;
    }
  }

  /**
   * The content of `name` when it is a regular file of at most `maxBytes`; undefined for anything
   * else (missing, a link, a folder, a FIFO, a device, too big). The cap is counted while reading:
   * a file growing after it was opened is still cut off.
   */
  async readFile(name: string, maxBytes = DEFAULT_READ_LIMIT): Promise<string | undefined> {
    return readBounded(this.at(name), maxBytes);
  }

  /** Gives an existing regular file `mode` (and `owner`) through its handle; anything else is left alone. */
  async setMode(name: string, mode: number, owner: Owner | undefined): Promise<void> {
    return setModeOf(this.at(name), mode, owner);
  }

  /** What is at `name` itself (a link is reported as a link, never followed); undefined when nothing is. */
  async lstat(name: string): Promise<Stats | undefined> {
    return lstat(this.at(name)).catch(ignoreCode('ENOENT', 'ENOTDIR'));
  }

  /**
   * An open handle on `name` when it is a regular file; undefined for anything else (missing, a
   * link, a folder, a FIFO, a device). Reading through the handle reads that file, whatever is
   * put at its name afterwards. The caller closes it.
   */
  async openFile(name: string): Promise<FileHandle | undefined> {
    const handle = await open(this.at(name), FILE_READ).catch(ignoreCode('ENOENT', 'ELOOP', 'ENOTDIR', 'ENXIO'));
    if (!handle) return undefined;
    if ((await handle.stat()).isFile()) return handle;
    await handle.close();
    return undefined;
  }

  /**
   * Hard-links the entry at `name` (itself: a link at the name is linked as a link, never
   * followed) to `target`, a path of the caller's own on the same filesystem. The caller checks
   * what it got with an lstat of `target`, which no container can change.
   */
  async linkTo(name: string, target: string): Promise<void> {
    await link(this.at(name), target);
  }

  async isRegularFile(name: string): Promise<boolean> {
    const stat = await lstat(this.at(name)).catch(ignoreCode('ENOENT', 'ENOTDIR'));
    return stat?.isFile() ?? false;
  }

  async entries(): Promise<string[]> {
    return readdir(`${PROC_FD}/${this.handle.fd}`);
  }

  /** Removes `name` unless it is a folder (a file, a link: the link itself, never its target). */
  async unlinkFile(name: string): Promise<void> {
    const stat = await lstat(this.at(name)).catch(ignoreCode('ENOENT'));
    if (!stat || stat.isDirectory()) return;
    await unlink(this.at(name)).catch(ignoreCode('ENOENT', 'EISDIR', 'EPERM'));
  }

  /** Removes `name` whatever it is: a folder with everything in it (links unlinked, never followed). */
  async remove(name: string): Promise<void> {
    const stat = await lstat(this.at(name)).catch(ignoreCode('ENOENT'));
    if (!stat) return;
    if (stat.isDirectory()) await this.removeTree(name);
    else await unlink(this.at(name)).catch(ignoreCode('ENOENT'));
  }

  /** Removes the folder `name` and its tree, each level opened without following a link. */
  async removeTree(name: string): Promise<void> {
    for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
      const sub = await this.dir(name);
      if (!sub) {
        // Not a folder (any more): a file or a link, removed as such.
        await unlink(this.at(name)).catch(ignoreCode('ENOENT', 'EISDIR'));
        if (!(await lstat(this.at(name)).catch(ignoreCode('ENOENT')))) return;
        continue;
      }
      try {
        for (const entry of await sub.entries()) await sub.remove(entry);
      } finally {
        await sub.close();
      }
      try {
        await rmdir(this.at(name));
        return;
      } catch (error) {
        const code = (error as NodeJS.ErrnoException).code;
        if (code === 'ENOENT') return;
        if (code !== 'ENOTEMPTY' && code !== 'EEXIST' && code !== 'ENOTDIR') throw error;
        // Something was added meanwhile: go round again.
      }
    }
    throw new UnsafePathError(`${this.path}/${name} keeps changing while it is removed`);
  }

  /** Removes our temp files left here by a crash mid-write (whatever a container made of them). */
  async sweepTempFiles(): Promise<void> {
    for (const entry of await this.entries()) if (entry.startsWith(TEMP_PREFIX)) await this.remove(entry);
  }

  /** Flushes this folder's entries (renames, unlinks) to disk. */
  async sync(): Promise<void> {
    await this.handle.sync();
  }

  async close(): Promise<void> {
    await this.handle.close();
  }
}

/**
 * Reaches paths under `root` one folder at a time (each opened without following a link, as
 * `withParent` does), keeping the folders on the way to the last path open: paths asked for in
 * a walk's order open each folder once, and at most one chain of folders is open at a time.
 */
export class FolderCursor {
  readonly #root: SafeDir;
  readonly #chain: Array<{ name: string; dir: SafeDir }> = [];

  constructor(root: SafeDir) {
    this.#root = root;
  }

  /** The open folder holding `relativePath`'s last component, and that name; undefined when a folder on the way is not one (any more). */
  async parentOf(relativePath: string): Promise<{ dir: SafeDir; name: string } | undefined> {
    const segments = relativePath.split('/').map(checkName);
    const name = segments.pop() as string;
    let shared = 0;
    while (shared < this.#chain.length && shared < segments.length && this.#chain[shared]?.name === segments[shared]) shared++;
    await this.#closeFrom(shared);
    for (let depth = shared; depth < segments.length; depth++) {
      const segment = segments[depth] as string;
      const next = await (depth === 0 ? this.#root : (this.#chain[depth - 1] as { dir: SafeDir }).dir).dir(segment);
      if (!next) return undefined;
      this.#chain.push({ name: segment, dir: next });
    }
    return { dir: segments.length === 0 ? this.#root : (this.#chain[segments.length - 1] as { dir: SafeDir }).dir, name };
  }

  /** Closes the folders it holds (not the root); the next path opens its folders afresh. */
  async close(): Promise<void> {
    await this.#closeFrom(0);
  }

  async #closeFrom(depth: number): Promise<void> {
    while (this.#chain.length > depth) await (this.#chain.pop() as { dir: SafeDir }).dir.close();
  }
}

/** Runs `use` on the folder at `path` (see SafeDir.open) and closes it. */
export async function withDir<T>(path: string, use: (dir: SafeDir) => Promise<T>): Promise<T> {
  const dir = await SafeDir.open(path);
  try {
    return await use(dir);
  } finally {
    await dir.close();
  }
}

/**
 * Runs `use` on the folder holding `relativePath`'s last component, reached from `root` one
 * component at a time without following a link. With `create`, missing folders are made (and
 * anything else in their place removed); without, a missing or non-folder component means
 * there is nothing there: `use` is not called and undefined comes back.
 */
export async function withParent<T>(
  root: SafeDir,
  relativePath: string,
  use: (dir: SafeDir, name: string) => Promise<T>,
  create?: { mode: number; owner: Owner | undefined },
): Promise<T | undefined> {
  const segments = relativePath.split('/').map(checkName);
  const name = segments.pop() as string;
  const opened: SafeDir[] = [];
  try {
    let current = root;
    for (const segment of segments) {
      const next = await current.dir(segment, create);
      if (!next) return undefined;
      opened.push(next);
      current = next;
    }
    return await use(current, name);
  } finally {
    for (const dir of opened.reverse()) await dir.close();
  }
}

/**
 * Makes `path` a real directory with `mode` (and `owner`). A symlink or file in its place is
 * removed first: the path is ours, and following a planted link as root is how hosts get owned.
 * The folder holding it must be the caller's own (see SafeDir.open).
 */
export async function ensureDirectory(path: string, mode: number, owner: Owner | undefined): Promise<void> {
  await withDir(dirname(path), async (parent) => {
    const dir = await parent.dir(basename(path), { mode, owner });
    await dir?.close();
  });
}

/** `SafeDir.writeFile` for a file in a folder of the caller's own (the customer folder's top level). */
export async function writeFileAtomic(path: string, content: string, mode: number, owner: Owner | undefined): Promise<void> {
  await withDir(dirname(path), (dir) => dir.writeFile(basename(path), content, mode, owner));
}

const DEFAULT_READ_LIMIT = 1024 * 1024;

/**
 * Reads a regular file of at most `maxBytes` without following a symlink at its name and without
 * blocking on a FIFO the container may have put in its place; anything else (a link, a folder, a
 * FIFO, a missing or larger file) reads as undefined. For files in a folder of the caller's own
 * (the customer folder's top level, e.g. openclaw.json); deeper, use a SafeDir.
 */
export async function readRegularFile(path: string, maxBytes = DEFAULT_READ_LIMIT): Promise<string | undefined> {
  return readBounded(path, maxBytes);
}

async function readBounded(path: string, maxBytes: number): Promise<string | undefined> {
  const handle = await open(path, FILE_READ).catch(() => undefined);
  if (!handle) return undefined;
  try {
    if (!(await handle.stat()).isFile()) return undefined;
    const buffer = Buffer.alloc(Math.min(maxBytes, 64 * 1024) + 1);
    const chunks: Buffer[] = [];
    let total = 0;
    for (;;) {
      const { bytesRead } = await handle.read(buffer, 0, buffer.length, null);
      if (bytesRead === 0) break;
      total += bytesRead;
      if (total > maxBytes) return undefined;
      chunks.push(Buffer.from(buffer.subarray(0, bytesRead)));
    }
    return Buffer.concat(chunks).toString('utf8');
  } finally {
    await handle.close();
  }
}

/**
 * Gives an existing regular file `mode` (and `owner`) through a handle opened without following
 * a symlink; a link, FIFO or anything else in its place is left alone (the next write replaces it).
 */
export async function setModeNoFollow(path: string, mode: number, owner: Owner | undefined): Promise<void> {
  return setModeOf(path, mode, owner);
}

async function setModeOf(path: string, mode: number, owner: Owner | undefined): Promise<void> {
  const handle = await open(path, FILE_READ).catch(() => undefined);
  if (!handle) return;
  try {
    const stat = await handle.stat();
    if (!stat.isFile()) return;
    if ((stat.mode & 0o7777) !== mode) await handle.chmod(mode);
    if (owner && (stat.uid !== owner.uid || stat.gid !== owner.gid)) await handle.chown(owner.uid, owner.gid);
  } finally {
    await handle.close();
  }
}

/** Flushes a folder's entries (renames, unlinks) to disk. */
export async function syncDirectory(path: string): Promise<void> {
  await withDir(path, (dir) => dir.sync());
}

/** Removes our temp files left in `dir` by a crash mid-write; a missing folder has none. */
export async function sweepTempFiles(path: string): Promise<void> {
  const dir = await SafeDir.open(path).catch(ignoreCode('ENOENT'));
  if (!dir) return;
  try {
    await dir.sweepTempFiles();
  } finally {
    await dir.close();
  }
}

export function ignoreCode(...codes: string[]): (error: NodeJS.ErrnoException) => undefined {
  return (error) => {
    if (error.code !== undefined && codes.includes(error.code)) return undefined;
    throw error;
  };
}
