import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chownSync, closeSync, existsSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Docker from 'dockerode';
import pg from 'pg';
import { freePort, STUB_IMAGE } from './blytz-serve.js';
import { waitFor } from './wait-for.js';

/**
 * The chaos suite's own PostgreSQL cluster and Docker engine: the same binaries and flags
 * scripts/services.sh uses, but private (own data folder, port, socket, bridge), so restarting
 * them hits only the server under test, never another suite or process on the machine, and the
 * suite only ever stops processes it started itself (by pid).
 */

const PG_BIN = process.env['CHAOS_PG_BIN'] ?? newestPostgresBin();
/** A bridge of our own: a second engine on docker0 would hand out addresses the first already uses. */
const BRIDGE = 'blytzchaos0';
const BRIDGE_CIDR = '172.31.254.1/24';

export function assertRoot(): void {
  if (process.getuid?.() !== 0) {
    throw new Error(
      'the chaos suite must run as root: it starts its own dockerd (and a network bridge) and its own PostgreSQL cluster',
    );
  }
}

function newestPostgresBin(): string {
  const base = '/usr/lib/postgresql';
  const run = spawnSync('ls', [base], { encoding: 'utf8' });
  const version = run.stdout
    .split('\n')
    .filter((v) => /^\d+$/.test(v))
    .sort((a, b) => Number(a) - Number(b))
    .at(-1);
  return version ? join(base, version, 'bin') : '/usr/lib/postgresql/15/bin';
}

function run(cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.status}): ${r.stderr || r.stdout}`);
  return r.stdout;
}

// ---- PostgreSQL ---------------------------------------------------------------------------

export interface ChaosPostgres {
  /** postgres://... of the database blytz uses. */
  url: string;
  port: number;
  /**
   * `pg_ctl restart -m fast`, as `pg_ctlcluster 15 main restart` does; with `downMs`, stop, stay
   * down that long, start. Resolves once it accepts connections.
   */
  restart(downMs?: number): Promise<void>;
  stop(): Promise<void>;
}

export async function startChaosPostgres(database = 'blytz_chaos'): Promise<ChaosPostgres> {
  const dir = mkdtempSync(join(tmpdir(), 'blytz-chaos-pg-'));
  chownSync(dir, uidOf('postgres'), gidOf('postgres'));
  const data = join(dir, 'data');
  const port = await freePort();
  const asPostgres = (args: string[]) => run('runuser', ['-u', 'postgres', '--', ...args]);
  asPostgres([join(PG_BIN, 'initdb'), '-D', data, '-A', 'trust', '-U', 'postgres', '--no-sync']);
  const options = `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200`;
  const pgCtl = (...args: string[]) => asPostgres([join(PG_BIN, 'pg_ctl'), '-D', data, '-l', join(dir, 'log'), '-w', ...args]);
  pgCtl('-o', options, 'start');
  const admin = new pg.Client({ host: '127.0.0.1', port, user: 'postgres', database: 'postgres' });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${database}`);
  await admin.end();
  const ready = () =>
    waitFor(async () => {
      const c = new pg.Client({ host: '127.0.0.1', port, user: 'postgres', database: 'postgres' });
      await c.connect();
      await c.end();
      return true;
    }, 30_000);
  return {
    url: `postgres://postgres@127.0.0.1:${port}/${database}`,
    port,
    restart: async (downMs = 0) => {
      if (downMs <= 0) {
        pgCtl('-m', 'fast', '-o', options, 'restart');
      } else {
        pgCtl('-m', 'fast', 'stop');
        await new Promise((resolve) => setTimeout(resolve, downMs));
        pgCtl('-o', options, 'start');
      }
      await ready();
    },
    stop: async () => {
      try {
        pgCtl('-m', 'immediate', 'stop');
      } catch {
        // already stopped
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

function uidOf(user: string): number {
  return Number(run('id', ['-u', user]).trim());
}
function gidOf(user: string): number {
  return Number(run('id', ['-g', user]).trim());
}

// ---- Docker engine ------------------------------------------------------------------------

export interface ChaosDocker {
  /** unix:///... for DOCKER_HOST. */
  host: string;
  docker: Docker;
  /**
   * Restarts the engine as an operator would (SIGTERM, wait for it to exit, start it again with
   * the same flags, wait for the socket). Containers with restart policy unless-stopped come back.
   */
  restart(): Promise<{ downMs: number }>;
  log(): string;
  stop(): Promise<void>;
}

export async function startChaosDocker(): Promise<ChaosDocker> {
  ensureBridge();
  const dir = mkdtempSync(join(tmpdir(), 'blytz-chaos-docker-'));
  const socket = join(dir, 'docker.sock');
  const logFile = join(dir, 'dockerd.log');
  const docker = new Docker({ socketPath: socket });
  let child: ChildProcess | undefined;
  const args = [
    '--storage-driver=vfs',
    '--iptables=false',
    '--ip6tables=false',
    `--data-root=${join(dir, 'root')}`,
    `--exec-root=${join(dir, 'exec')}`,
    `--pidfile=${join(dir, 'docker.pid')}`,
    `--host=unix://${socket}`,
    `--bridge=${BRIDGE}`,
  ];
  const launch = async () => {
    const fd = openSync(logFile, 'a');
    try {
      child = spawn('dockerd', args, { stdio: ['ignore', fd, fd] });
    } finally {
      closeSync(fd);
    }
    const started = child;
    await waitFor(async () => {
      if (started.exitCode !== null) throw new Error(`dockerd exited (${started.exitCode}): ${readLog()}`);
      await docker.ping();
      return true;
    }, 60_000, 100);
  };
  const kill = async (signal: NodeJS.Signals, graceMs: number) => {
    const running = child;
    child = undefined;
    if (!running || running.exitCode !== null || running.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => running.once('exit', () => resolve()));
    running.kill(signal);
    const timer = setTimeout(() => running.kill('SIGKILL'), graceMs);
    await exited;
    clearTimeout(timer);
  };
  const readLog = () => (existsSync(logFile) ? readFileSync(logFile, 'utf8').slice(-4000) : '');
  const killOnExit = () => child?.kill('SIGKILL');
  process.once('exit', killOnExit);

  await launch();
  // The stand-in customer image, copied from the machine's engine (nothing can be pulled).
  await copyImage(new Docker({ socketPath: '/var/run/docker.sock' }), docker, STUB_IMAGE);

  return {
    host: `unix://${socket}`,
    docker,
    restart: async () => {
      const started = Date.now();
      // dockerd stops running containers on shutdown (10 s grace each, in parallel).
      await kill('SIGTERM', 60_000);
      await launch();
      return { downMs: Date.now() - started };
    },
    log: readLog,
    stop: async () => {
      process.off('exit', killOnExit);
      const all = await docker.listContainers({ all: true }).catch(() => []);
      await Promise.all(all.map((c) => docker.getContainer(c.Id).remove({ force: true }).catch(() => {})));
      await kill('SIGTERM', 30_000);
      rmSync(dir, { recursive: true, force: true });
      spawnSync('ip', ['link', 'del', BRIDGE]);
    },
  };
}

function ensureBridge(): void {
  if (spawnSync('ip', ['link', 'show', BRIDGE]).status === 0) return;
  run('ip', ['link', 'add', 'name', BRIDGE, 'type', 'bridge']);
  run('ip', ['addr', 'add', BRIDGE_CIDR, 'dev', BRIDGE]);
  run('ip', ['link', 'set', BRIDGE, 'up']);
}

async function copyImage(from: Docker, to: Docker, image: string): Promise<void> {
  const tar = await from.getImage(image).get().catch((error: unknown) => {
    throw new Error(`image ${image} is missing on the machine's Docker engine: run \`make test-image\` (${(error as Error).message})`);
  });
  const loaded = await to.loadImage(tar);
  await new Promise<void>((resolve, reject) => {
    to.modem.followProgress(loaded, (error: Error | null) => (error ? reject(error) : resolve()));
  });
}
