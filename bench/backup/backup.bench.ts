import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createReadStream, mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { it } from 'vitest';
import { FolderStateSource } from '../../src/backup/folder-state.js';
import { docker, STUB_IMAGE } from '../../test/support/blytz-serve.js';
import { report, type Figure } from '../support.js';

/**
 * Backup and restore of a customer's state folder (src/backup/) beside a plain `tar | zstd -3`
 * of the same folder in the same run, for a 100 MB and a 1 GB folder, and what a consistent
 * backup costs the customer in downtime:
 *
 * - backup: snapshot (SQLite through its online backup API), tar, zstd level 3, AES-256-GCM in
 *   1 MiB chunks, sha256, written to a file; baseline: `tar -cf - . | zstd -3 -T1` to a file.
 * - restore: open and check every chunk, unzstd, untar into a staging folder, swap it in;
 *   baseline: `zstd -dc | tar -x` into an empty folder.
 * - downtime: a separate process commits a small SQLite transaction every 2 ms (a gateway
 *   writing its state); the longest commit while a backup runs, beside the longest with no backup.
 *   Beside it, the other way to get a consistent copy: `docker pause` the assistant, copy, unpause:
 *   it is down for the whole copy.
 *
 * The folder mixes what an assistant's state holds: 20 % SQLite database, 40 % Markdown notes
 * (compressible), 40 % media (random bytes, incompressible).
 */

const MB = 1024 * 1024;
const SIZES = [100 * MB, 1024 * MB];
const NOTE_BYTES = 64 * 1024;
const MEDIA_BYTES = 8 * MB;

function makeState(dir: string, bytes: number): void {
  mkdirSync(join(dir, 'workspace', 'memory'), { recursive: true });
  mkdirSync(join(dir, 'media'), { recursive: true });
  mkdirSync(join(dir, 'state'), { recursive: true });
  writeFileSync(join(dir, 'openclaw.json'), JSON.stringify({ gateway: { auth: { mode: 'token', token: 'x'.repeat(40) } } }));
  const words = ['bread', 'oven', 'flour', 'customer', 'order', 'tuesday', 'delivery', 'sourdough', 'invoice', 'rye'];
  // 64 distinct notes, each file one of them under its own header: text that compresses like notes
  // do, without building every file line by line.
  const notes = Array.from({ length: 64 }, (_, n) => {
    const parts: string[] = [];
    let length = 0;
    while (length < NOTE_BYTES) {
      const line = `- ${words[(n + length) % 10]} ${randomBytes(6).toString('hex')} ${words[(n * 7 + length) % 10]} note ${length}\n`;
      parts.push(line);
      length += line.length;
    }
    return parts.join('').slice(0, NOTE_BYTES - 64);
  });
  for (let i = 0, written = 0; written < bytes * 0.4; i++, written += NOTE_BYTES) {
    writeFileSync(
      join(dir, 'workspace', 'memory', `note-${i}.md`),
      `# note ${i} ${randomBytes(16).toString('hex')}\n${notes[i % 64]}`,
    );
  }
  for (let i = 0, written = 0; written < bytes * 0.4; i++, written += MEDIA_BYTES) {
    writeFileSync(join(dir, 'media', `photo-${i}.bin`), randomBytes(MEDIA_BYTES));
  }
  const db = new DatabaseSync(join(dir, 'state', 'openclaw.sqlite'));
  db.exec('PRAGMA journal_mode = WAL; CREATE TABLE events (id INTEGER PRIMARY KEY, body TEXT NOT NULL)');
  const insert = db.prepare('INSERT INTO events (body) VALUES (?)');
  const rows = Math.ceil((bytes * 0.2) / 1024);
  const filler = '.'.repeat(600);
  const noise = randomBytes(1 << 20).toString('base64');
  db.exec('BEGIN');
  for (let i = 0; i < rows; i++) insert.run(`${words[i % 10]} ${noise.substr((i * 397) % (noise.length - 400), 400)} ${filler}`);
  db.exec('COMMIT');
  db.close();
}

function sh(command: string): number {
  const started = performance.now();
  execFileSync('sh', ['-c', command], { stdio: 'ignore' });
  return (performance.now() - started) / 1000;
}

function folderBytes(dir: string): number {
  return Number(execFileSync('du', ['-sb', dir]).toString().split('\t')[0]);
}

/** A separate process (a gateway) committing every 2 ms for `seconds`; resolves to its longest commit (ms). */
function writer(dbPath: string, seconds: number): Promise<{ maxMs: number; commits: number }> {
  const script = `
    const { DatabaseSync } = require('node:sqlite');
    const db = new DatabaseSync(${JSON.stringify(dbPath)}, { timeout: 60000 });
    const insert = db.prepare('INSERT INTO events (body) VALUES (?)');
    const end = Date.now() + ${seconds * 1000};
    let maxMs = 0, commits = 0;
    const tick = () => {
      if (Date.now() > end) { process.stdout.write(JSON.stringify({ maxMs, commits })); db.close(); return; }
      const t = performance.now();
      db.exec('BEGIN IMMEDIATE'); insert.run('live write ' + commits); db.exec('COMMIT');
      maxMs = Math.max(maxMs, performance.now() - t); commits++;
      setTimeout(tick, 2);
    };
    tick();`;
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.on('error', reject);
    child.on('close', () => resolve(JSON.parse(out) as { maxMs: number; commits: number }));
  });
}

it('backup and restore beside tar | zstd, and the downtime of a consistent backup', async () => {
  const figures: Figure[] = [];
  const root = mkdtempSync(join(tmpdir(), 'blytz-backup-bench-'));
  const key = randomBytes(32);
  try {
    for (const size of SIZES) {
      const label = size >= 1024 * MB ? '1 GB' : '100 MB';
      const base = join(root, label.replace(' ', ''));
      const customers = join(base, 'customers');
      const dir = join(customers, 'bench');
      makeState(dir, size);
      execFileSync('sync');
      const bytes = folderBytes(dir);
      const source = new FolderStateSource({ customersDir: customers, workDir: join(base, 'work'), owner: undefined });

      // Backup, then the plain baseline on the same folder.
      const archive = join(base, 'archive.blytz');
      let started = performance.now();
      const written = await source.archive('bench', { key, context: 'bench', outFile: archive, meta: {} });
      const backupSeconds = (performance.now() - started) / 1000;
      const plain = join(base, 'plain.tar.zst');
      const tarSeconds = sh(`tar -C ${dir} -cf - . | zstd -3 -T1 -q -o ${plain}`);
      figures.push(
        {
          name: `${label}: backup time`,
          value: backupSeconds,
          unit: 's',
          baseline: { name: 'tar | zstd -3', value: tarSeconds },
        },
        {
          name: `${label}: backup throughput`,
          value: bytes / MB / backupSeconds,
          unit: 'MB/s',
          baseline: { name: 'tar | zstd -3', value: bytes / MB / tarSeconds },
          note: `folder ${(bytes / MB).toFixed(0)} MB`,
        },
        {
          name: `${label}: archive size`,
          value: written.sizeBytes / MB,
          unit: 'MB',
          baseline: { name: 'tar | zstd -3', value: statSync(plain).size / MB },
          note: 'encrypted; 16 bytes of tag per 1 MiB chunk',
        },
      );

      // Restore into the same customer (stage, check, swap), then the plain baseline.
      started = performance.now();
      await source.stage(1, 'bench', createReadStream(archive), { keys: [key], expectContext: 'bench', sha256: written.sha256 });
      await source.swap(1, 'bench');
      const restoreSeconds = (performance.now() - started) / 1000;
      await source.discard(1);
      const untarTo = join(base, 'untar');
      mkdirSync(untarTo);
      const untarSeconds = sh(`zstd -dc ${plain} | tar -C ${untarTo} -xf -`);
      figures.push(
        {
          name: `${label}: restore time`,
          value: restoreSeconds,
          unit: 's',
          baseline: { name: 'zstd -dc | tar -x', value: untarSeconds },
        },
        {
          name: `${label}: restore throughput`,
          value: bytes / MB / restoreSeconds,
          unit: 'MB/s',
          baseline: { name: 'zstd -dc | tar -x', value: bytes / MB / untarSeconds },
        },
      );

      if (size === SIZES[0]) {
        // Downtime: a writer alone, then a writer while a backup runs.
        const dbPath = join(dir, 'state', 'openclaw.sqlite');
        const alone = await writer(dbPath, 3);
        const during = writer(dbPath, 3);
        await new Promise((r) => setTimeout(r, 300));
        await source.archive('bench', { key, context: 'bench', outFile: join(base, 'again.blytz'), meta: {} });
        const busy = await during;
        figures.push({
          name: 'longest gateway commit during a backup (online backup API: no stop)',
          value: busy.maxMs,
          unit: 'ms',
          baseline: { name: 'with no backup', value: alone.maxMs },
          note: `${busy.commits} commits in 3 s during, ${alone.commits} alone`,
        });
        // The alternative: freeze the assistant (docker pause) for a consistent plain copy.
        const container = await docker.createContainer({
          Image: STUB_IMAGE,
          name: `blytz-bench-pause-${process.pid}`,
          Labels: { 'cloud.blytz.bench': 'backup' },
        });
        try {
          await container.start();
          started = performance.now();
          await container.pause();
          sh(`tar -C ${dir} -cf - . | zstd -3 -T1 -q -o ${join(base, 'paused.tar.zst')}`);
          await container.unpause();
          const pausedSeconds = (performance.now() - started) / 1000;
          figures.push({
            name: `${label}: downtime of a consistent backup`,
            value: 0,
            unit: 's',
            note: `the gateway keeps running (its longest commit above); pausing the container for a plain copy instead stops it for ${pausedSeconds.toFixed(2)} s`,
          });
        } finally {
          await container.remove({ force: true });
        }
      }
      rmSync(base, { recursive: true, force: true });
    }
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
  report('backup', 'Backups: a state folder backed up and restored', figures, {
    method:
      'src/backup/ FolderStateSource on a folder of 20 % SQLite (WAL), 40 % Markdown, 40 % random media; baselines `tar | zstd -3 -T1` and `zstd -dc | tar -x` on the same folder in the same run; downtime: a separate process committing every 2 ms, its longest commit with and without a backup running, and `docker pause` + plain copy + `docker unpause` for comparison.',
  });
});
