import { createHash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { PassThrough, Readable, Transform, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { constants as zlibConstants, createZstdCompress, createZstdDecompress } from 'node:zlib';
import { Unpack } from 'tar';
import { createOpenStream, createSealStream } from './sealed-stream.js';
import { MANIFEST_FILE, removeStaging, takeSnapshot, type Snapshot, type SnapshotManifest } from './snapshot.js';
import { tarStream } from './tar-writer.js';

/**
 * A backup archive: the snapshot (snapshot.ts) as a tar stream, compressed with zstd (Node's
 * own zlib), sealed with the controller's key (sealed-stream.ts). `.tar.zst.blytz` on disk.
 *
 *   folder ─► snapshot ─► tar ─► zstd ─► seal ─► sha256 + size ─► file
 *   stream ─► sha256 + size ─► open (authenticates every chunk) ─► unzstd ─► tar extract ─► folder
 */

export const ARCHIVE_SUFFIX = '.tar.zst.blytz';
/** zstd level 3 (its default): most of the ratio for a fraction of the CPU of higher levels. */
const ZSTD_LEVEL = 3;

export interface WrittenArchive {
  sizeBytes: number;
  sha256: string;
  manifest: SnapshotManifest;
  /** Files left out because they changed into something else while being archived (see snapshot.ts). */
  skipped: string[];
}

/** Counts and hashes what passes through. */
function measure(): Transform & { result(): { sizeBytes: number; sha256: string } } {
  const hash = createHash('sha256');
  let size = 0;
  const stream = new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      hash.update(chunk);
      size += chunk.length;
      callback(null, chunk);
    },
  }) as Transform & { result(): { sizeBytes: number; sha256: string } };
  let digest: string | undefined;
  stream.result = () => ({ sizeBytes: size, sha256: (digest ??= hash.digest('hex')) });
  return stream;
}

export interface WriteArchiveOptions {
  stateDir: string;
  /** A folder of the controller's own; a subfolder is used and removed. */
  workDir: string;
  key: Buffer;
  /** Bound into the sealed header; a restore checks it (customer and backup id). */
  context: string;
  outFile: string;
  meta?: Record<string, string>;
  /** false: a plain `.tar.zst` (a customer's own export, which they open themselves). Default true. */
  sealed?: boolean;
}

/** Snapshots `stateDir` into `outFile` (mode 0600). `sealed: false` writes a plain .tar.zst (exports). */
export async function writeArchive(options: WriteArchiveOptions): Promise<WrittenArchive> {
  const staging = join(options.workDir, `staging-${process.pid}-${Date.now()}-${Math.random().toString(36).slice(2, 8)}`);
  try {
    const snapshot = await takeSnapshot({
      stateDir: options.stateDir,
      stagingDir: staging,
      context: options.context,
      ...(options.meta ? { meta: options.meta } : {}),
    });
    try {
      return await writeSnapshot(snapshot, options);
    } finally {
      await snapshot.close();
    }
  } finally {
    await removeStaging(staging);
  }
}

async function writeSnapshot(snapshot: Snapshot, options: WriteArchiveOptions): Promise<WrittenArchive> {
  const measured = measure();
  const stages: Array<NodeJS.ReadableStream | NodeJS.WritableStream | Transform> = [
    Readable.from(tarStream(snapshot.entries)),
    // 1 MiB output pieces: zlib's default 16 KiB makes many small hops to its thread pool.
    createZstdCompress({ chunkSize: 1024 * 1024, params: { [zlibConstants.ZSTD_c_compressionLevel]: ZSTD_LEVEL } }),
  ];
  if (options.sealed !== false) stages.push(createSealStream(options.key, options.context));
  stages.push(measured, createWriteStream(options.outFile, { mode: 0o600, flush: true }));
  await (pipeline as (...streams: unknown[]) => Promise<void>)(...stages);
  return { ...measured.result(), manifest: snapshot.manifest, skipped: snapshot.skipped };
}

export interface ExtractOptions {
  input: Readable;
  keys: readonly Buffer[];
  /** The context the archive must carry (its customer and backup id). */
  expectContext?: string;
  /** An empty folder to extract into. */
  targetDir: string;
  /** Owner of everything extracted (the container's uid:gid); undefined: whoever runs this. */
  owner?: { uid: number; gid: number } | undefined;
  /** When given, the archive's sha256 must be this (checked once all of it was read). */
  sha256?: string | undefined;
}

/**
 * A restore's staging: `extractArchive` into `targetDir` (a folder of `workDir`, started again from
 * nothing after a crash mid-fetch), then `prepare` on the unpacked tree. On any failure the
 * staging goes, so a bad archive leaves nothing behind.
 */
export async function stageArchive(
  options: ExtractOptions & { workDir: string; prepare: () => Promise<void> },
): Promise<void> {
  const { workDir, prepare, ...extract } = options;
  await mkdir(workDir, { recursive: true, mode: 0o700 });
  await rm(extract.targetDir, { recursive: true, force: true });
  try {
    await extractArchive(extract);
    await prepare();
  } catch (error) {
    // The tar reader may still be finishing a file it had begun when the archive failed: retry.
    await rm(extract.targetDir, { recursive: true, force: true, maxRetries: 10, retryDelay: 50 }).catch(() => {});
    throw error;
  }
}

export class ArchiveChecksumError extends Error {
  constructor(expected: string, actual: string) {
    super(`archive checksum ${actual} does not match the recorded ${expected}: the stored object was changed`);
    this.name = 'ArchiveChecksumError';
  }
}

/**
 * Opens, checks and unpacks an archive into `targetDir`. Only folders and regular files are
 * created, never outside `targetDir` (the tar reader refuses absolute and `..` paths); the
 * owner comes from `owner`, never from the archive. Throws ArchiveIntegrityError for an archive
 * that was changed, truncated or sealed with another key; whatever was extracted before the bad
 * chunk stays in `targetDir`, which the caller discards.
 */
export async function extractArchive(options: ExtractOptions): Promise<SnapshotManifest | undefined> {
  await mkdir(options.targetDir, { recursive: true, mode: 0o700 });
  const measured = measure();
  const unpack = new Unpack({
    cwd: options.targetDir,
    strict: true,
    // Owners come from the caller, never from the archive.
    preserveOwner: false,
    ...(options.owner ? { uid: options.owner.uid, gid: options.owner.gid } : {}),
    // Only what a snapshot writes: a hand-made archive with links or devices gets none of them.
    filter: (_path, entry) => {
      const type = (entry as { type?: string }).type;
      return type === 'File' || type === 'Directory' || type === 'OldFile' || type === 'ContiguousFile';
    },
  }) as unknown as Writable;
  await pipeline(
    options.input,
    measured,
    createOpenStream(options.keys, options.expectContext === undefined ? {} : { expectContext: options.expectContext }),
    createZstdDecompress({ chunkSize: 1024 * 1024 }),
    unpack,
  );
  const { sha256 } = measured.result();
  if (options.sha256 && options.sha256 !== sha256) throw new ArchiveChecksumError(options.sha256, sha256);
  const manifestPath = join(options.targetDir, MANIFEST_FILE);
  const manifest = await readFile(manifestPath, 'utf8')
    .then((text) => JSON.parse(text) as SnapshotManifest)
    .catch(() => undefined);
  await rm(manifestPath, { force: true });
  return manifest;
}

/** A stream that yields nothing until `source` resolves (storage `get` is async). */
export function deferred(source: Promise<Readable>): Readable {
  const out = new PassThrough();
  source.then(
    (stream) => {
      stream.on('error', (error) => out.destroy(error));
      stream.pipe(out);
    },
    (error: unknown) => out.destroy(error as Error),
  );
  return out;
}
