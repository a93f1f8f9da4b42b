import { lstat, rename, rm } from 'node:fs/promises';
import { ensurePrivateDir } from '../data-dir.js';
import { poolFolderName } from '../domain/pool.js';
import { dirname } from 'node:path';
import type { FileWorkspaces } from './file-workspaces.js';
import { ignoreCode } from './safe-fs.js';

/**
 * A warm pool slot's state folder becoming its customer's. The slot's container mounts
 * `$BLYTZ_DATA_DIR/pool/slot-<id>/`; a claim renames that folder to `customers/<name>/` on the same
 * file system. The running container keeps it (a bind mount holds the folder, not its path), and
 * from then on the folder is the customer's like any other: rendered, backed up, exported and
 * purged at `customers/<name>/`. The container's own record still names the old path, so it can
 * never start again; the customer controller replaces a stopped claimed container instead.
 *
 * The slot's folder was written by its gateway before the claim, so it is treated as the
 * customer's folder always is: as untrusted (reached through safe-fs, no link followed). What
 * moves is only the folder itself, which the container cannot replace (it is its mount).
 */

export type MoveResult =
  /** Renamed now. */
  | 'moved'
  /** The slot's folder is gone and the customer's is there: an earlier attempt moved it. */
  | 'done'
  /** Neither is there. */
  | 'missing'
  /** Both are there (the customer already had a folder): nothing moved. */
  | 'conflict';

export class PoolFolders {
  readonly #slots: FileWorkspaces;
  readonly #customers: FileWorkspaces;

  /** `slots`: FileWorkspaces rooted at the pool's folder; `customers`: at the customers'. */
  constructor(slots: FileWorkspaces, customers: FileWorkspaces) {
    this.#slots = slots;
    this.#customers = customers;
  }

  /** The slots' folders on this host, for the pool controller (`slot-<id>` names). */
  list(): Promise<string[]> {
    return this.#slots.list();
  }

  async moveToCustomer(slot: number, customer: string): Promise<MoveResult> {
    const from = this.#slots.customerDir(poolFolderName(slot));
    const to = this.#customers.customerDir(customer);
    const [source, target] = await Promise.all([lstat(from).catch(ignoreCode('ENOENT')), lstat(to).catch(ignoreCode('ENOENT'))]);
    if (!source) return target ? 'done' : 'missing';
    if (target) return 'conflict';
    // Made by us (`FileWorkspaces.write`) as a folder, and its own container cannot replace its
    // mount; still checked, since a folder is all that may move into customers/.
    if (!source.isDirectory()) return 'missing';
    ensurePrivateDir(dirname(to));
    await rename(from, to);
    // The pool's render marker described the slot's render; the customer's next render writes its own.
    await rm(this.#slots.markerPath(poolFolderName(slot)), { force: true });
    return 'moved';
  }
}
