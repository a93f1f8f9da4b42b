import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

// Secrets the operator did not set are generated once into the data directory, readable by the
// owner only (0600), and read back on every later start.

/**
 * A folder only its owner can enter (the data directory, the embedded database's). mkdir's mode
 * applies only to a folder it creates: one made beforehand (an operator's `mkdir`, 0755) is
 * tightened, since it holds keys, the embedded database and the customers' workspaces.
 */
export function ensurePrivateDir(dir: string): void {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  if ((statSync(dir).mode & 0o077) !== 0) chmodSync(dir, 0o700);
}

/**
 * Makes every file under `dir` 0600 and every folder 0700, without following symlinks. For
 * trees written by code that does not take a mode (PGlite unpacks its database files 0666).
 */
export function tightenTree(dir: string): void {
  const stat = lstatSync(dir, { throwIfNoEntry: false });
  if (!stat || stat.isSymbolicLink()) return;
  if (stat.isDirectory()) {
    if ((stat.mode & 0o777) !== 0o700) chmodSync(dir, 0o700);
    for (const entry of readdirSync(dir)) tightenTree(join(dir, entry));
  } else if (stat.isFile() && (stat.mode & 0o777) !== 0o600) {
    chmodSync(dir, 0o600);
  }
}

export function readOrCreateSecretFile(path: string, generate: () => string): string {
  if (existsSync(path)) {
    chmodSync(path, 0o600);
    return readFileSync(path, 'utf8').trim();
  }
  const value = generate();
  // 'wx' fails if another process created it in the meantime; then read theirs.
  try {
    writeFileSync(path, `${value}\n`, { mode: 0o600, flag: 'wx' });
    return value;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'EEXIST') return readFileSync(path, 'utf8').trim();
    throw error;
  }
}

export function adminTokenFile(dataDir: string): string {
  return join(dataDir, 'admin-token');
}

export function loadAdminToken(dataDir: string, fromEnv: string | undefined): string {
  if (fromEnv) return fromEnv;
  ensurePrivateDir(dataDir);
  return readOrCreateSecretFile(adminTokenFile(dataDir), () => randomBytes(32).toString('base64url'));
}

export function loadSecretKey(dataDir: string, fromEnv: string | undefined): Buffer {
  if (fromEnv) return Buffer.from(fromEnv, 'base64');
  ensurePrivateDir(dataDir);
  const encoded = readOrCreateSecretFile(join(dataDir, 'secret-key'), () => randomBytes(32).toString('base64'));
  const key = Buffer.from(encoded, 'base64');
  if (key.length !== 32) throw new Error(`${join(dataDir, 'secret-key')} does not hold a 32-byte base64 key`);
  return key;
}

/** BLYTZ_SECRET_KEY_PREVIOUS: comma-separated base64 keys rotated out, still accepted for opening. */
export function parsePreviousKeys(fromEnv: string | undefined): Buffer[] {
  if (!fromEnv) return [];
  return fromEnv
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean)
    .map((s) => Buffer.from(s, 'base64'));
}
