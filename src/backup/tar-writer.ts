import type { FileHandle } from 'node:fs/promises';

/**
 * A minimal POSIX tar (pax) writer for what a snapshot holds: folders and regular files, each
 * file read through a handle its entry opens (so one archive can take a file from the customer's
 * folder, reached without following a link, and the consistent copy of a SQLite database from a
 * staging folder under the same name). Anything else (links, devices, FIFOs) is never written.
 * Archives are read back with the `tar` package.
 *
 * Why not the `tar` package for writing too: it packs one folder tree as it is on disk, and a
 * snapshot is a tree assembled from two places.
 */

export interface TarEntry {
  /** Relative POSIX path inside the archive; folders end without a slash. */
  name: string;
  type: 'file' | 'directory';
  /**
   * For files: opens the bytes to archive, or undefined when the file is no longer a regular
   * file (the entry is then left out). Called once, when the entry's turn comes.
   */
  open?: () => Promise<FileHandle | undefined>;
  mode: number;
  mtimeMs: number;
}

const BLOCK = 512;
const READ_BYTES = 256 * 1024;

function octal(value: number, width: number): string {
  return `${value.toString(8).padStart(width - 1, '0')}\0`;
}

function header(name: string, type: '0' | '5' | 'x', size: number, mode: number, mtimeSeconds: number): Buffer {
  const block = Buffer.alloc(BLOCK);
  block.write(name, 0, 100, 'utf8');
  block.write(octal(mode & 0o7777, 8), 100, 'ascii');
  block.write(octal(0, 8), 108, 'ascii'); // uid: owners are set on restore, never taken from the archive
  block.write(octal(0, 8), 116, 'ascii'); // gid
  block.write(octal(size, 12), 124, 'ascii');
  block.write(octal(Math.max(0, Math.floor(mtimeSeconds)), 12), 136, 'ascii');
  block.write('        ', 148, 'ascii'); // checksum placeholder: spaces while summing
  block.write(type, 156, 'ascii');
  block.write('ustar\u000000', 257, 'binary');
  let sum = 0;
  for (const byte of block) sum += byte;
  block.write(octal(sum, 7), 148, 'ascii');
  block[155] = 0x20;
  return block;
}

/** A pax extended header record: "<len> <key>=<value>\n", where len counts itself. */
function paxRecord(key: string, value: string): string {
  const body = ` ${key}=${value}\n`;
  let length = Buffer.byteLength(body) + 1;
  while (String(length).length + Buffer.byteLength(body) !== length) length = String(length).length + Buffer.byteLength(body);
  return `${length}${body}`;
}

function padding(size: number): Buffer {
  const rest = size % BLOCK;
  return Buffer.alloc(rest === 0 ? 0 : BLOCK - rest);
}

/** Headers for one entry: a pax header first when the name or size does not fit ustar. */
function entryHeaders(entry: TarEntry, size: number): Buffer[] {
  const name = entry.type === 'directory' ? `${entry.name}/` : entry.name;
  const records: string[] = [];
  if (Buffer.byteLength(name) > 100) records.push(paxRecord('path', name));
  if (size > 0o77777777777) records.push(paxRecord('size', String(size)));
  const out: Buffer[] = [];
  if (records.length > 0) {
    const pax = Buffer.from(records.join(''), 'utf8');
    out.push(header('PaxHeader', 'x', pax.length, 0o644, entry.mtimeMs / 1000), pax, padding(pax.length));
  }
  const shortName = Buffer.byteLength(name) > 100 ? Buffer.from(name).subarray(0, 100).toString('utf8') : name;
  out.push(
    header(shortName, entry.type === 'directory' ? '5' : '0', size > 0o77777777777 ? 0 : size, entry.mode, entry.mtimeMs / 1000),
  );
  return out;
}

/**
 * The archive's bytes. A file is read through one open handle, and exactly the size it had when
 * opened: a file that grows meanwhile is cut there, one that shrinks is padded with zeros (only
 * files a running assistant rewrites in place can do either; its SQLite databases are copied
 * through SQLite's backup API before this runs).
 */
export async function* tarStream(entries: Iterable<TarEntry> | AsyncIterable<TarEntry>): AsyncGenerator<Buffer> {
  for await (const entry of entries) {
    if (entry.type === 'directory') {
      yield* entryHeaders(entry, 0);
      continue;
    }
    if (!entry.open) throw new Error(`tar entry ${entry.name} has no source`);
    const handle = await entry.open();
    if (!handle) continue; // not a regular file any more: left out
    try {
      const stat = await handle.stat();
      if (!stat.isFile()) continue; // swapped for something else since it was listed: skipped
      const size = stat.size;
      yield* entryHeaders(entry, size);
      let written = 0;
      while (written < size) {
        const buffer = Buffer.allocUnsafe(Math.min(READ_BYTES, size - written));
        const { bytesRead } = await handle.read(buffer, 0, buffer.length, written);
        if (bytesRead === 0) {
          yield Buffer.alloc(size - written);
          written = size;
          break;
        }
        written += bytesRead;
        yield bytesRead === buffer.length ? buffer : buffer.subarray(0, bytesRead);
      }
      yield padding(size);
    } finally {
      await handle.close();
    }
  }
  yield Buffer.alloc(BLOCK * 2);
}
