import { lstat, mkdir, open, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { PassThrough, Readable, type Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { constants, createWriteStream } from 'node:fs';
import { Unpack } from 'tar';
import type { CustomerRuntime, ExecResult } from '../runtime/runtime.js';
import { stageArchive, writeArchive, type WrittenArchive } from './archive.js';
import { isSqliteFile } from './snapshot.js';
import type { CustomerStateSource } from './state-source.js';
import { tarStream, type TarEntry } from './tar-writer.js';

/**
 * Kubernetes: the customer's state is on its PersistentVolumeClaim, mounted into the assistant's
 * pod. A backup reaches it through the runtime (pods/exec, streamed):
 *
 * 1. `tar -c` of the state folder in the pod, streamed out and unpacked into a staging folder of
 *    the controller's own (folders and regular files only, as on Docker);
 * 2. each SQLite database found there is fetched again through SQLite's online backup API run by
 *    the pod's own Node (the copy in step 1 may be torn while the gateway writes), replacing the
 *    raw copy;
 * 3. the staging folder is archived exactly as a Docker customer's folder is (redaction, tar,
 *    zstd, seal): the same records, the same stores, the same restore format.
 *
 * The gateway keeps running throughout.
 *
 * A restore writes the claim while the assistant is stopped (the backup controller holds the
 * customer, its Deployment at 0 replicas), through a restore pod that mounts it
 * (runtime/kubernetes/restore-pod.ts), in the steps of CustomerStateSource:
 *
 * - `stage`: the archive is checked and unpacked into `<workDir>/restore-<id>/` exactly as on
 *   Docker (keys, context, checksum; folders and regular files only), and only then streamed onto
 *   the claim (`tar -x` through pods/exec) into `.blytz-upload-<id>/`, renamed to
 *   `.blytz-staged-<id>/` once complete. A rerun starts again from nothing.
 * - `swap`: on the claim, whose root is the state, entry by entry (SWAP_SCRIPT):
 *
 *     every entry of the root     -> .blytz-parking-<id>/   then parking -> .blytz-before-<id>
 *     every entry of staged       -> the root               then staged removed, before removed
 *
 *   Each rename is atomic and each phase ends with one rename or removal that says it is
 *   complete, so a rerun after a crash sees which phase it was in and finishes it: the customer
 *   gets the old state or the restored one, never a mix. The restore pod is then deleted (and
 *   waited for: the claim is ReadWriteOnce) before the assistant starts again.
 * - `discard`: the staged folders and the restore pod of a restore that failed before its swap.
 */

/**
 * The restore pod of a customer (runtime/kubernetes/restore-pod.ts): started only once the
 * assistant's pods are gone, the claim at `mountPath`.
 */
export interface RestorePods {
  open(customer: string, mountPath: string): Promise<void>;
  exec(customer: string, command: string[], stdin?: Readable): Promise<ExecResult>;
  isOpen(customer: string): Promise<boolean>;
  close(customer: string): Promise<void>;
}

export interface PodStateOptions {
  runtime: Pick<CustomerRuntime, 'listFor' | 'execStream'>;
  /** A folder of the controller's own for the staged copies. */
  workDir: string;
  /** Where the claim is mounted in the assistant container (the template's `mountPath`). */
  mountPath: string;
  /** How a restore writes the claim; without it restores are refused. */
  restorePods?: RestorePods | undefined;
}

/**
 * Names in the claim's root that belong to a restore, never to the state: left out of backups,
 * dropped from a restored archive, swept before a restore stages (leftovers of one that failed).
 * The render marker of a Docker customer's folder (an archive taken there) goes the same way.
 */
const RESERVED = ['.blytz-upload-*', '.blytz-staged-*', '.blytz-parking-*', '.blytz-before-*'];
const RENDER_MARKER = '.blytz-render.json';

/**
 * Scratch state OpenClaw rebuilds (as on Docker), a restore's own folders, and the file system's
 * `lost+found` at the root of a volume (not the customer's, and a restore leaves it in place).
 */
const EXCLUDED = ['./tmp', './cache', './lost+found', ...RESERVED.map((name) => `./${name}`)];

/**
 * Run with `sh -c SCRIPT sh <mount> <restore id>` in the restore pod, the staged state as a tar
 * stream on stdin: complete under `.blytz-staged-<id>` or not there at all.
 */
const UPLOAD_SCRIPT = `set -eu
m=$1; id=$2
for entry in ${RESERVED.map((name) => `"$m"/${name}`).join(' ')}; do
  if [ -e "$entry" ] || [ -L "$entry" ]; then rm -rf -- "$entry"; fi
done
mkdir -- "$m/.blytz-upload-$id"
tar -x -f - -C "$m/.blytz-upload-$id"
mv -- "$m/.blytz-upload-$id" "$m/.blytz-staged-$id"
`;

/**
 * The swap (see above); each step is checked, so a rerun finishes what a crash interrupted. No
 * staged folder: the swap was complete (it is only ever removed by this, or by the discard of a
 * restore that failed before swapping).
 */
const SWAP_SCRIPT = `set -eu
m=$1; id=$2
staged="$m/.blytz-staged-$id"; parking="$m/.blytz-parking-$id"; before="$m/.blytz-before-$id"
if [ -d "$staged" ]; then
  if [ ! -d "$before" ]; then
    mkdir -p -- "$parking"
    for entry in "$m"/* "$m"/.[!.]* "$m"/..?*; do
      if [ ! -e "$entry" ] && [ ! -L "$entry" ]; then continue; fi
      case "\${entry##*/}" in ".blytz-staged-$id"|".blytz-parking-$id"|".blytz-before-$id"|lost+found) continue ;; esac
      mv -- "$entry" "$parking/"
    done
    mv -- "$parking" "$before"
  fi
  for entry in "$staged"/* "$staged"/.[!.]* "$staged"/..?*; do
    if [ ! -e "$entry" ] && [ ! -L "$entry" ]; then continue; fi
    case "\${entry##*/}" in lost+found) rm -rf -- "$entry"; continue ;; esac
    mv -- "$entry" "$m/"
  done
  rmdir -- "$staged"
fi
rm -rf -- "$before"
`;

/** A failed restore's folders on the claim; the staged one only if no swap began (it never does after one). */
const DISCARD_SCRIPT = `set -eu
m=$1; id=$2
rm -rf -- "$m/.blytz-upload-$id"
if [ ! -e "$m/.blytz-parking-$id" ] && [ ! -e "$m/.blytz-before-$id" ]; then rm -rf -- "$m/.blytz-staged-$id"; fi
`;

/**
 * Run by the pod's Node (OpenClaw's image has Node 24): one database's consistent copy through
 * SQLite's online backup API, written to stdout. The path comes as an argument, never in the code.
 */
const SQLITE_COPY_SCRIPT = `
const { DatabaseSync, backup } = require('node:sqlite');
const fs = require('node:fs');
const source = process.argv[1];
const copy = '/tmp/blytz-sqlite-copy-' + process.pid;
const db = new DatabaseSync(source, { readOnly: true, timeout: 10000 });
backup(db, copy).then(() => {
  db.close();
  const out = fs.createReadStream(copy);
  out.on('close', () => fs.rmSync(copy, { force: true }));
  out.pipe(process.stdout);
}, (error) => { process.stderr.write(String(error)); fs.rmSync(copy, { force: true }); process.exit(1); });
`;

export class PodStateSource implements CustomerStateSource {
  readonly runtime = 'kubernetes' as const;
  readonly restorable: boolean;
  readonly #options: PodStateOptions;

  constructor(options: PodStateOptions) {
    this.#options = options;
    this.restorable = options.restorePods !== undefined;
  }

  async #pod(customer: string): Promise<string | undefined> {
    const containers = await this.#options.runtime.listFor(customer);
    return containers.find((c) => c.state === 'running')?.id;
  }

  /** Only a running assistant's claim can be read (through its pod). */
  async exists(customer: string): Promise<boolean> {
    return (await this.#pod(customer)) !== undefined;
  }

  async #stream(id: string, command: string[], into: Writable): Promise<void> {
    const { execStream } = this.#options.runtime;
    if (!execStream) throw new Error("this runtime cannot stream a command's output");
    const pass = new PassThrough();
    // Awaited on every path below: the pod writes this stream, so it may cut it short or fill it
    // with garbage, and the unpacking's failure must fail this backup, not go unhandled and take
    // the whole controller down with it.
    const done = pipeline(pass, into);
    let failure: unknown;
    try {
      const result = await execStream.call(this.#options.runtime, id, command, pass);
      if (result.exitCode !== 0)
        failure = new Error(`${command[0]} in the pod exited with ${result.exitCode}: ${result.stderr.trim()}`);
    } catch (error) {
      failure = error;
    } finally {
      pass.end();
    }
    // The command's own failure says more than what its output did to the unpacking.
    await done.catch((error: unknown) => {
      failure ??= error;
    });
    if (failure !== undefined) throw failure;
  }

  async archive(
    customer: string,
    options: { key: Buffer; context: string; outFile: string; meta: Record<string, string>; sealed?: boolean },
  ): Promise<WrittenArchive> {
    const id = await this.#pod(customer);
    if (!id) throw new Error(`customer ${customer} has no running pod to read its state through`);
    const staging = join(this.#options.workDir, `pod-${customer}-${process.pid}-${Date.now()}`);
    const state = join(staging, 'state');
    await mkdir(state, { recursive: true, mode: 0o700 });
    try {
      const { mountPath } = this.#options;
      const unpack = new Unpack({
        cwd: state,
        strict: true,
        preserveOwner: false,
        filter: (_path, entry) => {
          const type = (entry as { type?: string }).type;
          return type === 'File' || type === 'Directory' || type === 'OldFile' || type === 'ContiguousFile';
        },
      }) as unknown as Writable;
      await this.#stream(id, ['tar', '-c', '-f', '-', '-C', mountPath, ...EXCLUDED.map((e) => `--exclude=${e}`), '.'], unpack);
      for (const rel of await sqliteFiles(state)) {
        await this.#stream(
          id,
          ['node', '-e', SQLITE_COPY_SCRIPT, `${mountPath}/${rel}`],
          createWriteStream(join(state, ...rel.split('/'))),
        );
        for (const suffix of ['-wal', '-shm', '-journal']) await rm(join(state, ...rel.split('/')) + suffix, { force: true });
      }
      return await writeArchive({
        stateDir: state,
        workDir: staging,
        key: options.key,
        context: options.context,
        outFile: options.outFile,
        meta: options.meta,
        ...(options.sealed === false ? { sealed: false } : {}),
      });
    } finally {
      await rm(staging, { recursive: true, force: true });
    }
  }

  #staged(restoreId: number): string {
    return join(this.#options.workDir, `restore-${restoreId}`);
  }

  #pods(): RestorePods {
    const pods = this.#options.restorePods;
    if (!pods) throw new Error('restoring into a customer on Kubernetes needs the restore pods of the runtime');
    return pods;
  }

  /** Runs one of the scripts above in the restore pod on `mountPath`; a failure is an error. */
  async #run(customer: string, what: string, script: string, restoreId: number, stdin?: Readable): Promise<void> {
    const args = ['sh', '-c', script, 'sh', this.#options.mountPath, String(restoreId)];
    const result = await this.#pods().exec(customer, args, stdin);
    if (result.exitCode !== 0)
      throw new Error(`${what} on the claim of ${customer} exited with ${result.exitCode}: ${result.stderr.trim()}`);
  }

  async stage(
    restoreId: number,
    customer: string,
    input: Readable,
    check: { keys: readonly Buffer[]; expectContext: string; sha256?: string | undefined },
  ): Promise<void> {
    const pods = this.#pods();
    const staged = this.#staged(restoreId);
    await stageArchive({
      input,
      keys: check.keys,
      expectContext: check.expectContext,
      targetDir: staged,
      workDir: this.#options.workDir,
      sha256: check.sha256,
      prepare: async () => {
        for (const name of await readdir(staged))
          if (name === RENDER_MARKER || RESERVED.some((pattern) => name.startsWith(pattern.slice(0, -1))))
            await rm(join(staged, name), { recursive: true, force: true });
      },
    });
    // Checked whole: only now onto the claim.
    await pods.open(customer, this.#options.mountPath);
    await this.#run(customer, 'unpacking the restored state', UPLOAD_SCRIPT, restoreId, Readable.from(tarStream(treeOf(staged))));
  }

  async swap(restoreId: number, customer: string): Promise<void> {
    const pods = this.#pods();
    // Again: nothing but the restore pod may have the claim (the assistant stays at 0 replicas).
    await pods.open(customer, this.#options.mountPath);
    await this.#run(customer, 'swapping the state', SWAP_SCRIPT, restoreId);
    await pods.close(customer);
    await rm(this.#staged(restoreId), { recursive: true, force: true });
  }

  async discard(restoreId: number, customer: string): Promise<void> {
    await rm(this.#staged(restoreId), { recursive: true, force: true });
    const pods = this.#options.restorePods;
    if (!pods) return;
    // Only through a restore pod still there (a failed stage); never one started for this alone,
    // which could hold the claim when the assistant starts again (what is left, the next stage sweeps).
    if (await pods.isOpen(customer)) await this.#run(customer, 'removing the staged state', DISCARD_SCRIPT, restoreId);
    await pods.close(customer);
  }
}

/** A staged folder as tar entries (folders and regular files, as extractArchive left it), parents first. */
async function* treeOf(root: string, rel = ''): AsyncGenerator<TarEntry> {
  const dir = rel === '' ? root : join(root, ...rel.split('/'));
  for (const name of (await readdir(dir)).sort()) {
    const path = rel === '' ? name : `${rel}/${name}`;
    const full = join(dir, name);
    const info = await lstat(full);
    if (info.isDirectory()) {
      yield { name: path, type: 'directory', mode: info.mode & 0o7777, mtimeMs: info.mtimeMs };
      yield* treeOf(root, path);
    } else if (info.isFile()) {
      // The controller's own staging folder (no container writes there); no link followed all the same.
      const openFile = () => open(full, constants.O_RDONLY | constants.O_NOFOLLOW);
      yield { name: path, type: 'file', open: openFile, mode: info.mode & 0o7777, mtimeMs: info.mtimeMs };
    }
  }
}

/** SQLite databases under `root` (relative POSIX paths), by their header. */
async function sqliteFiles(root: string): Promise<string[]> {
  const found: string[] = [];
  const visit = async (rel: string) => {
    const dir = rel === '' ? root : join(root, ...rel.split('/'));
    for (const name of (await readdir(dir)).sort()) {
      const path = rel === '' ? name : `${rel}/${name}`;
      const info = await lstat(join(dir, name));
      if (info.isDirectory()) await visit(path);
      else if (info.isFile() && (await isSqliteFile(join(dir, name), info.size))) found.push(path);
    }
  };
  await visit('');
  return found;
}
