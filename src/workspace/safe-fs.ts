import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { lstat, mkdir, open, readdir, rename, rm } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';

/**
 * Filesystem helpers for folders a customer's container can also write to. We run as root and
 * the container (uid 1000) may have planted symlinks, so nothing here follows a symlink at the
 * final path component: temp files are created with O_EXCL|O_NOFOLLOW, modes and owners are set
 * on open handles, and `rename` replaces a planted link instead of writing through it.
 *
 * Known limit: Node has no openat2(RESOLVE_NO_SYMLINKS), so a container racing us could swap a
 * nested folder (e.g. `workspace/`) for a symlink between our check and our rename. The names we
 * write are fixed and new files are created, never truncated through a link, which bounds it.
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

/**
 * Makes `path` a real directory with `mode` (and `owner`). A symlink or file in its place is
 * removed first: the path is ours, and following a planted link as root is how hosts get owned.
 */
export async function ensureDirectory(path: string, mode: number, owner: Owner | undefined): Promise<void> {
  const stat = await lstat(path).catch((error: NodeJS.ErrnoException) => {
    if (error.code === 'ENOENT') return undefined;
    throw error;
  });
  if (stat && !stat.isDirectory()) await rm(path, { force: true });
  if (!stat || !stat.isDirectory()) await mkdir(path, { mode }).catch(ignoreCode('EEXIST'));
  const handle = await open(path, constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW);
  try {
    await handle.chmod(mode);
    if (owner) await handle.chown(owner.uid, owner.gid);
  } finally {
    await handle.close();
  }
}

/**
 * Replaces `path` atomically: a temp file in the same folder (same filesystem, so rename is
 * atomic), written, given its mode and owner, fsynced, then renamed over the target. A reader
 * sees the old file or the new one, never half of either.
 */
export async function writeFileAtomic(path: string, content: string, mode: number, owner: Owner | undefined): Promise<void> {
  const temp = join(dirname(path), `${TEMP_PREFIX}${randomBytes(6).toString('hex')}-${basename(path)}`);
  const flags = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW;
  try {
    const handle = await open(temp, flags, mode);
    try {
      await handle.writeFile(content, 'utf8');
      await handle.chmod(mode); // the open mode is filtered by umask; this is not
      if (owner) await handle.chown(owner.uid, owner.gid);
      await handle.sync();
    } finally {
      await handle.close();
    }
    const existing = await lstat(path).catch(() => undefined);
    // rename cannot replace a directory with a file; a folder squatting on our path goes.
    if (existing?.isDirectory()) await rm(path, { recursive: true, force: true });
    await rename(temp, path);
  } catch (error) {
    await rm(temp, { force: true });
    throw error;
  }
}

/**
 * Reads a small regular file without following a symlink and without blocking on a FIFO the
 * container may have put in its place; anything else reads as undefined.
 */
export async function readRegularFile(path: string, maxBytes = 1024 * 1024): Promise<string | undefined> {
  const handle = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK).catch(() => undefined);
  if (!handle) return undefined;
  try {
    const stat = await handle.stat();
    if (!stat.isFile() || stat.size > maxBytes) return undefined;
    return await handle.readFile('utf8');
  } finally {
    await handle.close();
  }
}

/**
 * Gives an existing regular file `mode` (and `owner`) through a handle opened without following
 * a symlink; a link, FIFO or anything else in its place is left alone (the next write replaces it).
 */
export async function setModeNoFollow(path: string, mode: number, owner: Owner | undefined): Promise<void> {
  const handle = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK).catch(() => undefined);
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
  const handle = await open(path, constants.O_RDONLY | constants.O_DIRECTORY);
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** Removes our temp files left in `dir` by a crash mid-write. */
export async function sweepTempFiles(dir: string): Promise<void> {
  const entries = await readdir(dir).catch(() => [] as string[]);
  await Promise.all(entries.filter((name) => name.startsWith(TEMP_PREFIX)).map((name) => rm(join(dir, name), { force: true })));
}

export function ignoreCode(...codes: string[]): (error: NodeJS.ErrnoException) => undefined {
  return (error) => {
    if (error.code !== undefined && codes.includes(error.code)) return undefined;
    throw error;
  };
}
