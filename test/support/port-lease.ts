import { linkSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';

/**
 * Leases on host ports shared by every test process on this machine (parallel vitest projects
 * and files, other engineers' runs): a lock file per key naming the holding process. A bind check
 * alone cannot reserve a port that is bound only seconds later (a Caddy listener, a customer
 * container's published port), so whoever hands such a port out leases it first. A lease whose
 * process is gone is taken over. Leases end with `releaseLease` or with this process.
 */

const LEASE_DIR = path.join(tmpdir(), 'blytz-test-ports');
const held = new Set<string>();
process.once('exit', () => {
  for (const key of [...held]) releaseLease(key);
});

/** Takes the lease on `key` for this process; false when a live process holds it. */
export function lease(key: string): boolean {
  mkdirSync(LEASE_DIR, { recursive: true });
  const file = path.join(LEASE_DIR, key);
  for (let attempt = 0; attempt < 2; attempt++) {
    if (createWithPid(file)) {
      held.add(key);
      return true;
    }
    const holder = Number(readFileSafe(file));
    if (holder === process.pid || isAlive(holder)) return false;
    // Its process is gone: move the stale file aside under a name of our own. Only one taker's
    // rename succeeds; and a file renamed away that turns out to name a live process (another
    // taker's fresh lease, made between our read and our rename) goes back where it was.
    const aside = `${file}.stale-${process.pid}`;
    try {
      renameSync(file, aside);
    } catch {
      continue;
    }
    const moved = Number(readFileSafe(aside));
    if (isAlive(moved)) {
      try {
        linkSync(aside, file);
      } catch {
        // A third process leased it in the moment it was away: the live holder and that one
        // both believe they hold it. Three processes racing on one stale key within microseconds
        // is rare enough to leave be.
      }
      rmSync(aside, { force: true });
      return false;
    }
    rmSync(aside, { force: true });
  }
  return false;
}

/**
 * `count` distinct ports in `range`, each leased to this process and free right now (on loopback
 * and on every address), walking from `start` (an offset into the range; random by default).
 * Release them with `releaseLease(String(port))`, or they go with this process.
 */
export async function leaseFreePorts(
  count: number,
  range: { from: number; to: number },
  start = Math.floor(Math.random() * (range.to - range.from + 1)),
): Promise<number[]> {
  const span = range.to - range.from + 1;
  const ports: number[] = [];
  for (let i = 0; i < span && ports.length < count; i++) {
    const port = range.from + ((start + i) % span);
    if (!lease(String(port))) continue;
    if ((await isFree(port, '127.0.0.1')) && (await isFree(port, '0.0.0.0'))) ports.push(port);
    else releaseLease(String(port));
  }
  if (ports.length < count) {
    for (const port of ports) releaseLease(String(port));
    throw new Error(`no ${count} free ports in ${range.from}-${range.to}`);
  }
  return ports;
}

function isFree(port: number, host: string): Promise<boolean> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.once('error', () => resolve(false));
    server.listen({ port, host, exclusive: true }, () => server.close(() => resolve(true)));
  });
}

export function releaseLease(key: string): void {
  if (!held.delete(key)) return;
  rmSync(path.join(LEASE_DIR, key), { force: true });
}

/**
 * Creates `file` holding this process's id, atomically: written under a private name first, then
 * linked into place (link fails when the name exists). A plain exclusive create would show
 * another process an empty file for a moment, which reads as a dead holder.
 */
function createWithPid(file: string): boolean {
  const draft = `${file}.draft-${process.pid}`;
  writeFileSync(draft, String(process.pid));
  try {
    linkSync(draft, file);
    return true;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    return false;
  } finally {
    rmSync(draft, { force: true });
  }
}

function isAlive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0); // signal 0: existence check only
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function readFileSafe(file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return '';
  }
}
