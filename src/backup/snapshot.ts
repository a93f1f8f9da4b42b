import { constants } from 'node:fs';
import { chown, lstat, mkdir, open, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { backup as sqliteBackup, DatabaseSync } from 'node:sqlite';
import { redactOpenClawConfig } from './redact.js';
import type { TarEntry } from './tar-writer.js';

/**
 * A consistent snapshot of a customer's OpenClaw state folder, taken while the gateway runs:
 *
 * - SQLite databases (found by their header, wherever they are) are copied through SQLite's
 *   online backup API into a staging folder, so the copy is one transaction's view even while
 *   the gateway writes (their `-wal`/`-shm`/`-journal` files are then not needed);
 * - `openclaw.json` goes in redacted (see redact.ts): no secret the controller renders again;
 * - everything else that is a regular file or a folder goes in as it is; symlinks, devices and
 *   FIFOs never do (the folder is written by a container we treat as hostile), nor do the
 *   gateway's scratch folders (`tmp/`, `cache/`), lock files, or our own render marker.
 *
 * Nothing here follows a symlink, and nothing is written inside the customer's folder (the
 * staging folder is the controller's own), with one exception SQLite forces: opening a database
 * in WAL mode may create its `-shm` file, which is then given the database file's owner, so the
 * gateway can still open it.
 */

export const MANIFEST_FILE = '.blytz-backup.json';
export const OPENCLAW_CONFIG = 'openclaw.json';
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
  abs: string;
  type: 'file' | 'directory';
  mode: number;
  mtimeMs: number;
  size: number;
}

/** Walks the folder without following links; yields folders before their contents, sorted. */
async function walk(root: string): Promise<Found[]> {
  const found: Found[] = [];
  const visit = async (relDir: string) => {
    const dir = relDir === '' ? root : join(root, ...relDir.split('/'));
    const names = (await readdir(dir).catch(() => [] as string[])).sort();
    for (const name of names) {
      const rel = relDir === '' ? name : `${relDir}/${name}`;
      if (relDir === '' && (SKIPPED_DIRS.has(name) || SKIPPED_FILES.has(name))) continue;
      if (name.startsWith('.blytz-tmp-') || name.endsWith('.lock')) continue;
      const abs = join(dir, name);
      const info = await lstat(abs).catch(() => undefined);
      if (!info) continue; // gone meanwhile
      if (info.isDirectory()) {
        found.push({ rel, abs, type: 'directory', mode: info.mode & 0o7777, mtimeMs: info.mtimeMs, size: 0 });
        await visit(rel);
      } else if (info.isFile()) {
        found.push({ rel, abs, type: 'file', mode: info.mode & 0o7777, mtimeMs: info.mtimeMs, size: info.size });
      }
    }
  };
  await visit('');
  return found;
}

/** Whether the file starts with SQLite's header (a database, whatever its name). */
export async function isSqliteFile(path: string, size: number): Promise<boolean> {
  if (size < 512) return false;
  const handle = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK).catch(() => undefined);
  if (!handle) return false;
  try {
    const head = Buffer.alloc(SQLITE_MAGIC.length);
    await handle.read(head, 0, head.length, 0);
    return head.equals(SQLITE_MAGIC);
  } finally {
    await handle.close();
  }
}

/**
 * Copies one live database into `target` through the online backup API. WAL-mode databases
 * need a `-shm` file to be read; one SQLite makes for us is handed to the database's owner.
 */
async function copyDatabase(source: string, target: string): Promise<void> {
  const owner = await stat(source);
  const before = new Set<string>();
  for (const suffix of SQLITE_SIDE_FILES) if (await lstat(source + suffix).catch(() => undefined)) before.add(suffix);
  const db = new DatabaseSync(source, { readOnly: true, timeout: 10_000, allowExtension: false });
  try {
    await sqliteBackup(db, target);
  } finally {
    db.close();
    for (const suffix of SQLITE_SIDE_FILES) {
      if (before.has(suffix)) continue;
      const made = await lstat(source + suffix).catch(() => undefined);
      if (made?.isFile() && made.uid !== owner.uid) await chown(source + suffix, owner.uid, owner.gid).catch(() => {});
    }
  }
}

export async function takeSnapshot(options: SnapshotOptions): Promise<Snapshot> {
  const { stateDir, stagingDir } = options;
  await mkdir(stagingDir, { recursive: true, mode: 0o700 });
  const found = await walk(stateDir);
  const databases = new Set<string>();
  for (const entry of found) if (entry.type === 'file' && (await isSqliteFile(entry.abs, entry.size))) databases.add(entry.rel);
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
    let source = entry.abs;
    if (databases.has(entry.rel)) {
      const copy = join(stagingDir, `db-${staged++}.sqlite`);
      try {
        await copyDatabase(entry.abs, copy);
        source = copy;
        sqlite.push(entry.rel);
      } catch {
        // Not readable as a database after all (corrupt, or not SQLite): kept byte for byte.
      }
    } else if (entry.rel === OPENCLAW_CONFIG) {
      const text = await readSmallFile(entry.abs);
      const result = redactOpenClawConfig(text ?? '');
      redacted = result.removed;
      if (result.text === '') continue;
      source = join(stagingDir, 'openclaw.redacted.json');
      await writeFile(source, result.text, { mode: 0o600 });
    }
    const size = (await lstat(source).catch(() => undefined))?.size ?? 0;
    bytes += size;
    files++;
    entries.push({ name: entry.rel, type: 'file', source, mode: entry.mode, mtimeMs: entry.mtimeMs });
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
  const manifestPath = join(stagingDir, MANIFEST_FILE);
  await writeFile(manifestPath, `${JSON.stringify(manifest, null, 2)}\n`, { mode: 0o600 });
  // The manifest first: a reader learns what the archive is before the bulk of it.
  entries.unshift({
    name: MANIFEST_FILE,
    type: 'file',
    source: manifestPath,
    mode: 0o600,
    mtimeMs: Date.parse(manifest.createdAt),
  });
  return { entries, manifest };
}

async function readSmallFile(path: string): Promise<string | undefined> {
  const handle = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK).catch(() => undefined);
  if (!handle) return undefined;
  try {
    const info = await handle.stat();
    if (!info.isFile() || info.size > 4 * 1024 * 1024) return undefined;
    return await handle.readFile('utf8');
  } finally {
    await handle.close();
  }
}

/** Removes a staging folder (after the archive is written). */
export async function removeStaging(stagingDir: string): Promise<void> {
  await rm(stagingDir, { recursive: true, force: true });
}
