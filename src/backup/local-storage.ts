import { createReadStream } from 'node:fs';
import { copyFile, mkdir, open, rename, rm, stat } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import type { Readable } from 'node:stream';
import { ArchiveNotFoundError, checkKey, type ArchiveStorage } from './storage.js';

/**
 * Archives in a folder on this host (`$BLYTZ_DATA_DIR/backups` by default, or `file:///path`).
 * Written to a temp name beside the target, fsynced, then renamed: a crash leaves no partial
 * archive under a real key. Folders are 0700 and archives 0600 (they are encrypted anyway).
 * A folder on the same disk as the customers' state protects against mistakes and bad upgrades,
 * not against losing the disk: production sets an S3 store.
 */
export class LocalArchiveStorage implements ArchiveStorage {
  readonly description: string;
  readonly #root: string;

  constructor(root: string) {
    this.#root = resolve(root);
    this.description = `local:${this.#root}`;
  }

  #path(key: string): string {
    return join(this.#root, ...checkKey(key).split('/'));
  }

  async put(key: string, path: string, _sizeBytes?: number): Promise<void> {
    const target = this.#path(key);
    await mkdir(dirname(target), { recursive: true, mode: 0o700 });
    const temp = `${target}.partial-${process.pid}`;
    try {
      await copyFile(path, temp);
      const handle = await open(temp, 'r+');
      try {
        await handle.chmod(0o600);
        await handle.sync();
      } finally {
        await handle.close();
      }
      await rename(temp, target);
    } catch (error) {
      await rm(temp, { force: true });
      throw error;
    }
  }

  async get(key: string): Promise<Readable> {
    const path = this.#path(key);
    const info = await stat(path).catch(() => undefined);
    if (!info?.isFile()) throw new ArchiveNotFoundError(key, this.description);
    return createReadStream(path);
  }

  async delete(key: string): Promise<void> {
    await rm(this.#path(key), { force: true });
  }

  async ping(): Promise<void> {
    await mkdir(this.#root, { recursive: true, mode: 0o700 });
  }
}
