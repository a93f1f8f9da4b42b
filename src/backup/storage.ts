import type { Readable } from 'node:stream';

/**
 * Where backup archives live: a folder on this host (the default) or an S3-compatible bucket
 * (`BLYTZ_BACKUP_URL=s3://bucket/prefix`). Keys are relative POSIX paths the backup controller
 * makes (`<customer>/<id>.tar.zst.blytz`); an object appears whole or not at all, so a crash
 * mid-upload never leaves a readable partial archive under its key.
 */
export interface ArchiveStorage {
  /** For records and messages: `local:/path` or `s3://bucket/prefix`. */
  readonly description: string;
  /** Uploads the file at `path` under `key` (replacing any object there). */
  put(key: string, path: string, sizeBytes: number): Promise<void>;
  /** The object's bytes; rejects with ArchiveNotFoundError when there is none. */
  get(key: string): Promise<Readable>;
  /** Removes it; a missing object is not an error. */
  delete(key: string): Promise<void>;
  /** Throws when the store does not answer (for /readyz and doctor). */
  ping(): Promise<void>;
}

export class ArchiveNotFoundError extends Error {
  constructor(
    readonly key: string,
    where: string,
  ) {
    super(`backup archive ${key} is not in ${where}`);
    this.name = 'ArchiveNotFoundError';
  }
}

/** Keys are made by us, but checked anyway: no absolute path, no `..`, nothing odd. */
export function checkKey(key: string): string {
  if (!/^[a-z0-9][a-z0-9-]{0,62}\/[A-Za-z0-9._-]{1,200}$/.test(key) || key.includes('..')) {
    throw new Error(`invalid backup archive key ${JSON.stringify(key)}`);
  }
  return key;
}
