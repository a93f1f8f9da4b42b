import { mkdir, readdir, lstat, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { PassThrough, type Readable, type Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createWriteStream } from 'node:fs';
import { Unpack } from 'tar';
import type { CustomerRuntime } from '../runtime/runtime.js';
import { writeArchive, type WrittenArchive } from './archive.js';
import { isSqliteFile } from './snapshot.js';
import type { CustomerStateSource } from './state-source.js';

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
 * The gateway keeps running throughout. Not yet: restoring into a Kubernetes customer (the claim
 * must be written while the assistant is stopped: a short-lived pod mounting it).
 */

export interface PodStateOptions {
  runtime: Pick<CustomerRuntime, 'listFor' | 'execStream'>;
  /** A folder of the controller's own for the staged copies. */
  workDir: string;
  /** Where the claim is mounted in the assistant container (the template's `mountPath`). */
  mountPath: string;
}

/** Scratch state OpenClaw rebuilds (as on Docker). */
const EXCLUDED = ['./tmp', './cache'];

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
  readonly restorable = false;
  readonly #options: PodStateOptions;

  constructor(options: PodStateOptions) {
    this.#options = options;
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
    const done = pipeline(pass, into);
    try {
      const result = await execStream.call(this.#options.runtime, id, command, pass);
      if (result.exitCode !== 0)
        throw new Error(`${command[0]} in the pod exited with ${result.exitCode}: ${result.stderr.trim()}`);
    } finally {
      pass.end();
    }
    await done;
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

  stage(_restoreId: number, _customer: string, _input: Readable): Promise<void> {
    return Promise.reject(new Error('restoring into a customer on Kubernetes is not supported yet'));
  }

  swap(): Promise<void> {
    return Promise.reject(new Error('restoring into a customer on Kubernetes is not supported yet'));
  }

  async discard(): Promise<void> {}
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
