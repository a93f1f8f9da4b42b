import { lstat, mkdir, rename, rm, stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import type { Readable } from 'node:stream';
import { isDns1123Label } from '../domain/naming.js';
import { ensureDirectory, withDir } from '../workspace/safe-fs.js';
import { stageArchive, writeArchive, type WrittenArchive } from './archive.js';
import type { CustomerStateSource } from './state-source.js';

/**
 * Docker: the customer's state is the folder `$BLYTZ_DATA_DIR/customers/<name>/` on this host.
 *
 * A restore unpacks into `<workDir>/restore-<id>/` (the controller's own folder, on the same
 * disk), then swaps with two renames:
 *
 *   customers/<name>      -> <workDir>/replaced-<id>     (the state being replaced, kept aside)
 *   <workDir>/restore-<id> -> customers/<name>
 *
 * A crash between them leaves the customer with no folder and both others present; `swap` run
 * again sees that and does the second rename. So the customer has the old state or the new
 * one, never a mix. The render marker is removed from the restored folder, so the controller
 * renders its files (and the secrets left out of the archive) into it before the assistant
 * starts again.
 */

const RENDER_MARKER = '.blytz-render.json';

/** The mark a restore leaves in the folder it restored (see CustomerStateSource.restoredMark). */
function restoredMarkName(restoreId: number): string {
  return `.blytz-restored-${restoreId}`;
}

export interface FolderStateOptions {
  /** `$BLYTZ_DATA_DIR/customers`. */
  customersDir: string;
  /** A folder of the controller's own on the same filesystem (root only). */
  workDir: string;
  /** The container's uid:gid, owner of everything restored. */
  owner: { uid: number; gid: number } | undefined;
}

export class FolderStateSource implements CustomerStateSource {
  readonly runtime = 'docker' as const;
  readonly restorable = true;
  readonly #customers: string;
  readonly #work: string;
  readonly #owner: FolderStateOptions['owner'];

  constructor(options: FolderStateOptions) {
    this.#customers = resolve(options.customersDir);
    this.#work = resolve(options.workDir);
    this.#owner = options.owner;
  }

  dir(customer: string): string {
    if (!isDns1123Label(customer)) throw new Error(`customer name ${JSON.stringify(customer)} is not a DNS-1123 label`);
    return join(this.#customers, customer);
  }

  #staged(id: number): string {
    return join(this.#work, `restore-${id}`);
  }

  #replaced(id: number): string {
    return join(this.#work, `replaced-${id}`);
  }

  async exists(customer: string): Promise<boolean> {
    return (await lstat(this.dir(customer)).catch(() => undefined))?.isDirectory() === true;
  }

  async archive(
    customer: string,
    options: { key: Buffer; context: string; outFile: string; meta: Record<string, string>; sealed?: boolean },
  ): Promise<WrittenArchive> {
    await mkdir(this.#work, { recursive: true, mode: 0o700 });
    return writeArchive({
      stateDir: this.dir(customer),
      workDir: this.#work,
      key: options.key,
      context: options.context,
      outFile: options.outFile,
      meta: options.meta,
      ...(options.sealed === false ? { sealed: false } : {}),
    });
  }

  async stage(
    restoreId: number,
    _customer: string,
    input: Readable,
    check: { keys: readonly Buffer[]; expectContext: string; sha256?: string | undefined },
  ): Promise<void> {
    const staged = this.#staged(restoreId);
    await stageArchive({
      input,
      keys: check.keys,
      expectContext: check.expectContext,
      targetDir: staged,
      workDir: this.#work,
      owner: this.#owner,
      sha256: check.sha256,
      prepare: async () => {
        await ensureDirectory(staged, 0o700, this.#owner);
        await rm(join(staged, RENDER_MARKER), { force: true });
        await withDir(staged, (dir) => dir.writeFile(restoredMarkName(restoreId), `${restoreId}\n`, 0o644, this.#owner));
      },
    });
  }

  async swap(restoreId: number, customer: string): Promise<void> {
    const target = this.dir(customer);
    const staged = this.#staged(restoreId);
    const replaced = this.#replaced(restoreId);
    const isDir = async (path: string) => (await lstat(path).catch(() => undefined))?.isDirectory() === true;
    if (!(await isDir(staged))) {
      if (await isDir(target)) return; // swapped before a crash
      throw new Error(`restore ${restoreId}: the staged state is gone and ${customer} has no folder; fetch again`);
    }
    await mkdir(this.#customers, { recursive: true, mode: 0o700 });
    if (await isDir(target)) {
      await withDir(this.#work, (work) => work.removeTree(`replaced-${restoreId}`)); // a customer's old folder: links not followed
      await rename(target, replaced);
    } else if ((await lstat(target).catch(() => undefined)) !== undefined) {
      await rm(target, { force: true }); // not a folder (a planted file or link): ours to replace
    }
    await rename(staged, target);
    // The marker again, in case the controller rendered into a folder made meanwhile.
    await withDir(target, (dir) => dir.unlinkFile(RENDER_MARKER));
  }

  restoredMark(restoreId: number, customer: string): string {
    return join(this.dir(customer), restoredMarkName(restoreId));
  }

  async forgetRestoredMark(restoreId: number, customer: string): Promise<void> {
    await withDir(this.dir(customer), (dir) => dir.unlinkFile(restoredMarkName(restoreId)));
  }

  /**
   * The state a restore replaced was the customer's folder: whatever its container left there
   * (links to host folders included) is removed without following a link.
   */
  async discard(restoreId: number): Promise<void> {
    await mkdir(this.#work, { recursive: true, mode: 0o700 });
    await withDir(this.#work, async (work) => {
      await work.removeTree(`restore-${restoreId}`);
      await work.removeTree(`replaced-${restoreId}`);
    });
  }

  /** The owner to give a restored folder: that of the folder it replaces, else the configured one. */
  async ownerOf(customer: string): Promise<{ uid: number; gid: number } | undefined> {
    const info = await stat(this.dir(customer)).catch(() => undefined);
    return info ? { uid: info.uid, gid: info.gid } : this.#owner;
  }
}
