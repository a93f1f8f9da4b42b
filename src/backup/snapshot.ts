import { constants } from 'node:fs';
import { lstat, mkdir, open, rm, unlink, writeFile, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { backup as sqliteBackup, DatabaseSync } from 'node:sqlite';
import { FolderCursor, ignoreCode, SafeDir } from '../workspace/safe-fs.js';
import { redactOpenClawConfig } from './redact.js';
import type { TarEntry } from './tar-writer.js';

/**
 * A consistent snapshot of a customer's OpenClaw state folder, taken while the gateway runs:
 *
 * - SQLite databases (found by their header, wherever they are) are copied through SQLite's
 *   online backup API into a staging folder, so the copy is one transaction's view even while
 *   the gateway writes (their `-wal`/`-shm`/`-journal` files are then not needed), without the
 *   leases the running gateway's processes hold (see dropProcessLeases);
 * - `openclaw.json` goes in redacted (see redact.ts): no secret the controller renders again;
 * - everything else that is a regular file or a folder goes in as it is; symlinks, devices and
 *   FIFOs never do (the folder is written by a container we treat as hostile), nor do the
 *   gateway's scratch folders (`tmp/`, `cache/`), lock files, or our own render marker.
 *
 * The container can change its folder at any moment, also between our walk and our read: a
 * folder listed in the walk may be a link to `/etc` or to `$BLYTZ_DATA_DIR` when its files are
 * read. So no path in it is ever resolved by name from the root: the walk and every read go
 * through `SafeDir` (`workspace/safe-fs.ts`), each folder opened without following a link and
 * each name looked up in the open folder, each file opened O_NOFOLLOW and archived only when the
 * handle is a regular file. A folder turned into a link, or a file into anything else, after the
 * walk is left out of the archive and named in `skipped`, as is a folder nested deeper than
 * MAX_FOLDER_DEPTH.
 *
 * SQLite opens databases by path and resolves links in it, so it never gets a path inside the
 * customer's folder: the database and its `-wal`/`-shm` are hard-linked (the entries themselves,
 * checked to be regular files) into the staging folder, and SQLite reads them there. Hard links
 * are the same files, so SQLite's locks and shared memory still coordinate with the running
 * gateway, and nothing is created in the customer's folder. Hard links need the staging folder
 * on the same filesystem (the controller's `backup-work` is under `$BLYTZ_DATA_DIR` beside
 * `customers`); where it is not, the database is archived byte for byte like any other file.
 */

export const MANIFEST_FILE = '.blytz-backup.json';
export const OPENCLAW_CONFIG = 'openclaw.json';
/**
 * Folders nested deeper than this are left out (and named in `skipped`). The walk, and the
 * archive's reads after it, hold one open folder per level on the way down, so a container that
 * nests folders tens of thousands deep would use up the controller's file descriptors, for every
 * customer, while its backup runs; no assistant's state goes near this depth.
 */
const MAX_FOLDER_DEPTH = 64;
/** Top-level folders of scratch state the gateway rebuilds (locks, caches, temp files). */
const SKIPPED_DIRS = new Set(['tmp', 'cache']);
const SKIPPED_FILES = new Set(['.blytz-render.json', MANIFEST_FILE]);
const SQLITE_MAGIC = Buffer.from('SQLite format 3\0', 'latin1');
const SQLITE_SIDE_FILES = ['-wal', '-shm', '-journal'];

export interface SnapshotManifest {
  format: 1;
  context: string;
  createdAt: string;
  files: number;
  directories: number;
  /** Bytes of the files as archived (before compression). */
  bytes: number;
  /** Databases copied through the online backup API (relative paths). */
  sqlite: string[];
  /** Secret fields left out of openclaw.json (paths, never values). */
  redacted: string[];
  /** Extra facts from the caller (OpenClaw version, runtime). */
  meta: Record<string, string>;
}

export interface Snapshot {
  entries: TarEntry[];
  manifest: SnapshotManifest;
  /**
   * Files left out while the archive was written because they (or a folder on their way) were no
   * longer what the walk found: a link, a FIFO, gone. Complete once `entries` were all read.
   */
  skipped: string[];
  /** Closes the folders the entries read through; call once the archive is written. */
  close(): Promise<void>;
}

export interface SnapshotOptions {
  /** The customer's state folder (read only). */
  stateDir: string;
  /** An empty folder of the controller's own for the database copies and the redacted config. */
  stagingDir: string;
  context: string;
  meta?: Record<string, string>;
  now?: Date;
}

interface Found {
  rel: string;
  type: 'file' | 'directory';
  mode: number;
  mtimeMs: number;
  size: number;
}

/**
 * Walks the folder, each sub-folder opened through its open parent without following a link;
 * yields folders before their contents, sorted.
 */
async function walk(root: SafeDir, tooDeep: string[]): Promise<Found[]> {
  const found: Found[] = [];
  const visit = async (dir: SafeDir, relDir: string, depth: number) => {
    const names = (await dir.entries().catch(() => [] as string[])).sort();
    for (const name of names) {
      const rel = relDir === '' ? name : `${relDir}/${name}`;
      if (relDir === '' && (SKIPPED_DIRS.has(name) || SKIPPED_FILES.has(name))) continue;
      if (name.startsWith('.blytz-tmp-') || name.endsWith('.lock')) continue;
      const info = await dir.lstat(name);
      if (!info) continue; // gone meanwhile
      if (info.isDirectory()) {
        if (depth >= MAX_FOLDER_DEPTH) {
          tooDeep.push(rel);
          continue;
        }
        const sub = await dir.dir(name);
        if (!sub) continue; // not a folder any more
        try {
          found.push({ rel, type: 'directory', mode: info.mode & 0o7777, mtimeMs: info.mtimeMs, size: 0 });
          await visit(sub, rel, depth + 1);
        } finally {
          await sub.close();
        }
      } else if (info.isFile()) {
        found.push({ rel, type: 'file', mode: info.mode & 0o7777, mtimeMs: info.mtimeMs, size: info.size });
      }
    }
  };
  await visit(root, '', 0);
  return found;
}

/** Whether the open file starts with SQLite's header (a database, whatever its name). */
async function hasSqliteHeader(handle: FileHandle): Promise<boolean> {
  const head = Buffer.alloc(SQLITE_MAGIC.length);
  const { bytesRead } = await handle.read(head, 0, head.length, 0);
  return bytesRead === head.length && head.equals(SQLITE_MAGIC);
}

/** Whether the file at `path` (a folder of the controller's own) starts with SQLite's header. */
export async function isSqliteFile(path: string, size: number): Promise<boolean> {
  if (size < 512) return false;
  const handle = await openOwn(path);
  if (!handle) return false;
  try {
    return await hasSqliteHeader(handle);
  } finally {
    await handle.close();
  }
}

/** A file in a folder of the controller's own, never through a link at its name; undefined unless a regular file. */
async function openOwn(path: string): Promise<FileHandle | undefined> {
  const handle = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK).catch(() => undefined);
  if (!handle) return undefined;
  if ((await handle.stat()).isFile()) return handle;
  await handle.close();
  return undefined;
}

/**
 * Copies the live database `name` in `dir` into `target` through the online backup API, SQLite
 * reading hard links of it (and of its side files) in `linkDir` (see the module comment).
 * False when it cannot (another filesystem, not a regular file, not readable as a database): the
 * caller archives its bytes as they are.
 */
async function copyDatabase(dir: SafeDir, name: string, linkDir: string, target: string): Promise<boolean> {
  await mkdir(linkDir, { mode: 0o700 });
  const main = join(linkDir, 'db');
  try {
    const linked = async (from: string, to: string) => {
      const done = await dir.linkTo(from, to).then(() => true, ignoreCode('ENOENT', 'EXDEV', 'EPERM'));
      if (!done) return false;
      if ((await lstat(to)).isFile()) return true;
      await unlink(to); // a link or something else at that name: not read, not followed
      return false;
    };
    if (!(await linked(name, main))) return false;
    for (const suffix of SQLITE_SIDE_FILES) await linked(name + suffix, main + suffix);
    const db = new DatabaseSync(main, { readOnly: true, timeout: 10_000, allowExtension: false });
    try {
      await sqliteBackup(db, target);
    } finally {
      db.close();
    }
    dropProcessLeases(target);
    return true;
  } catch {
    return false; // not readable as a database after all (corrupt, or not SQLite)
  } finally {
    await rm(linkDir, { recursive: true, force: true });
  }
}

/**
 * OpenClaw's table of leases held by its running processes (2026.9.6: the gateway's owner lease,
 * scope `gateway-owner`, in its state database, renewed by a heartbeat, 5 min to live).
 */
const PROCESS_LEASES_TABLE = 'state_leases';

/**
 * Empties OpenClaw's process leases in a database copy of our own. A backup is taken while the
 * gateway runs, so its owner lease is in the copy; restored, it belongs to no process (a restore
 * runs with the assistant stopped), but OpenClaw can only tell a dead owner on the host that
 * wrote it, and a container's host name is its id: the restored gateway, in a new container,
 * refused to start ("Another Gateway owner lease is still active for this state directory")
 * until the copied lease expired, up to 5 minutes after the backup.
 */
function dropProcessLeases(copy: string): void {
  let db: DatabaseSync | undefined;
  try {
    // No foreign keys: a delete cascading into a table of the container's would run that table's
    // own triggers, and whatever they hold (a cross join of a table with itself) would run here,
    // synchronously, on the main thread that serves every customer.
    db = new DatabaseSync(copy, { timeout: 10_000, allowExtension: false, enableForeignKeyConstraints: false });
    const table = db
      .prepare(`SELECT 1 AS found FROM sqlite_schema WHERE type = 'table' AND name = ?`)
      .get(PROCESS_LEASES_TABLE);
    if (!table) return;
    // The database is written by a container we treat as hostile: a trigger of its own on this
    // delete could fill the controller's disk from our copy. OpenClaw puts none there; any goes.
    const triggers = db
      .prepare(`SELECT name FROM sqlite_schema WHERE type = 'trigger' AND tbl_name = ?`)
      .all(PROCESS_LEASES_TABLE) as { name: string }[];
    for (const { name } of triggers) db.exec(`DROP TRIGGER "${name.replaceAll('"', '""')}"`);
    db.exec(`DELETE FROM ${PROCESS_LEASES_TABLE}`);
  } catch {
    // The copy stays as it is: consistent, its lease only delays a restored gateway's start.
  } finally {
    db?.close();
  }
}

const MAX_CONFIG_BYTES = 4 * 1024 * 1024;

export async function takeSnapshot(options: SnapshotOptions): Promise<Snapshot> {
  const { stagingDir } = options;
  await mkdir(stagingDir, { recursive: true, mode: 0o700 });
  const root = await SafeDir.open(options.stateDir);
  const cursor = new FolderCursor(root);
  const close = async () => {
    await cursor.close();
    await root.close();
  };
  try {
    return await snapshotOf(root, cursor, options, close);
  } catch (error) {
    await close();
    throw error;
  }
}

async function snapshotOf(
  root: SafeDir,
  cursor: FolderCursor,
  options: SnapshotOptions,
  close: () => Promise<void>,
): Promise<Snapshot> {
  const { stagingDir } = options;
  const skipped: string[] = [];
  /** Opens a file of the customer's folder through the cursor; undefined (and noted) unless it still is a regular file. */
  const openCustomerFile = async (rel: string): Promise<FileHandle | undefined> => {
    const at = await cursor.parentOf(rel);
    const handle = at ? await at.dir.openFile(at.name) : undefined;
    if (!handle) skipped.push(rel);
    return handle;
  };

  const found = await walk(root, skipped);
  const databases = new Set<string>();
  for (const entry of found) {
    if (entry.type !== 'file' || entry.size < 512) continue;
    const handle = await openCustomerFile(entry.rel);
    if (!handle) continue;
    try {
      if (await hasSqliteHeader(handle)) databases.add(entry.rel);
    } finally {
      await handle.close();
    }
  }
  const sideFiles = new Set<string>();
  for (const db of databases) for (const suffix of SQLITE_SIDE_FILES) sideFiles.add(db + suffix);

  const entries: TarEntry[] = [];
  const sqlite: string[] = [];
  let redacted: string[] = [];
  let bytes = 0;
  let files = 0;
  let directories = 0;
  let staged = 0;
  for (const entry of found) {
    if (entry.type === 'directory') {
      entries.push({ name: entry.rel, type: 'directory', mode: entry.mode, mtimeMs: entry.mtimeMs });
      directories++;
      continue;
    }
    if (sideFiles.has(entry.rel)) continue;
    let stagedCopy: string | undefined;
    let size = entry.size;
    if (databases.has(entry.rel)) {
      const copy = join(stagingDir, `db-${staged}.sqlite`);
      const at = await cursor.parentOf(entry.rel);
      if (at && (await copyDatabase(at.dir, at.name, join(stagingDir, `db-${staged}.links`), copy))) {
        stagedCopy = copy;
        sqlite.push(entry.rel);
      }
      staged++;
    } else if (entry.rel === OPENCLAW_CONFIG) {
      const text = await root.readFile(OPENCLAW_CONFIG, MAX_CONFIG_BYTES);
      const result = redactOpenClawConfig(text ?? '');
      redacted = result.removed;
      if (result.text === '') continue;
      stagedCopy = join(stagingDir, 'openclaw.redacted.json');
      await writeFile(stagedCopy, result.text, { mode: 0o600 });
    }
    if (stagedCopy !== undefined) size = (await lstat(stagedCopy).catch(() => undefined))?.size ?? 0;
    bytes += size;
    files++;
    const ownCopy = stagedCopy;
    entries.push({
      name: entry.rel,
      type: 'file',
      open: ownCopy === undefined ? () => openCustomerFile(entry.rel) : () => openOwn(ownCopy),
      mode: entry.mode,
      mtimeMs: entry.mtimeMs,
    });
  }

  const manifest: SnapshotManifest = {
    format: 1,
    context: options.context,
    createdAt: (options.now ?? new Date()).toISOString(),
    files,
    directories,
    bytes,
    sqlite,
    redacted,
    meta: options.meta ?? {},
  };
  // The tar writer reaches every file again from the root, as it was when its turn comes.
  await cursor.close();
  const manifestPath = join(stagingDir, MANIFEST_FILE);
  await writeFile(manifestPath, `${JSON.stringify(manifest, null, 2)}\n`, { mode: 0o600 });
  // The manifest first: a reader learns what the archive is before the bulk of it.
  entries.unshift({
    name: MANIFEST_FILE,
    type: 'file',
    open: () => openOwn(manifestPath),
    mode: 0o600,
    mtimeMs: Date.parse(manifest.createdAt),
  });
  return { entries, manifest, skipped, close };
}

/** Removes a staging folder (after the archive is written). */
export async function removeStaging(stagingDir: string): Promise<void> {
  await rm(stagingDir, { recursive: true, force: true });
}
