import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chownSync, existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import Docker from 'dockerode';
import { startCaddy, type TestCaddy } from './caddy.js';
import { getWithHost } from './http-get.js';
import { lease, leaseFreePorts, releaseLease } from './port-lease.js';
import { waitFor } from './wait-for.js';

/**
 * The built `blytz serve` as a user runs it, isolated from every other test on this machine:
 * its own Caddy, its own data folder, its own host port range, and its own
 * `cloud.blytz.instance` label, so its orphan sweep never touches another test's containers.
 */

export const ROOT = resolve(import.meta.dirname, '../..');
export const BLYTZ = join(ROOT, 'bin/blytz');
export const STUB_IMAGE = 'blytz/assistant-stub:dev';

export interface ServeOptions {
  databaseUrl: string;
  env?: Record<string, string>;
  /** Share a Caddy between two replicas. */
  caddy?: TestCaddy;
  dataDir?: string;
  instance?: string;
  portRange?: { from: number; to: number };
  /**
   * Run `blytz serve` as this uid:gid, as a shipped kit would (the tests run as root, which hides
   * every file-permission problem); the data folder is made theirs. Needs root.
   */
  user?: { uid: number; gid: number };
}

export interface Served {
  url: string;
  port: number;
  dataDir: string;
  instance: string;
  caddy: TestCaddy;
  /** `:<port>` Caddy serves customer hosts on. */
  caddyListenPort: number;
  adminToken: string;
  child: ChildProcess;
  env: Record<string, string>;
  log(): string;
  /** SIGTERM and wait; SIGKILL with `kill: true`. Caddy and the data folder are kept (restart). */
  stopProcess(options?: { kill?: boolean }): Promise<void>;
  /** Starts the process again with the same settings. */
  restart(): Promise<void>;
  /** Stops everything, removes this instance's containers and folders. */
  stop(): Promise<void>;
}

/**
 * BLYTZ_ROLLOUT_START_TIMEOUT_SECONDS for the rollout tests: how long an updated container may
 * take to become healthy before the rollout counts it failed. Short, so a never-healthy image is
 * given up in seconds; long enough that a good one is never given up on CI's loaded 2-core
 * machine, where stopping the old container, starting the new one and its first health answer
 * take a few seconds (the 8 s used before left a margin of about two).
 */
export const ROLLOUT_START_TIMEOUT_SECONDS = '20';

/** The environment minus anything from the developer's shell that would change what blytz does. */
export function baseEnv(): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (v === undefined || k.startsWith('BLYTZ_') || k.startsWith('STRIPE_') || k.startsWith('TELEGRAM_')) continue;
    if (['DATABASE_URL', 'PORT', 'HOST', 'CADDY_ADMIN_URL', 'DOCKER_HOST', 'LOG_LEVEL'].includes(k)) continue;
    env[k] = v;
  }
  return env;
}

/**
 * A port for a server a test starts (a serve's PORT, a fake service's), leased (port-lease.ts) in
 * 28000-28999 until this process ends. Not a port the kernel hands out (bind to 0, close, bind
 * later): that is in the ephemeral range, where any outgoing connection on this machine (a
 * sampler through Caddy, Caddy to an upstream) may take it as its local port in between, or
 * between a serve's stop and its restart on the same port, and the bind then fails.
 */
export async function freePort(): Promise<number> {
  const [port] = (await leaseFreePorts(1, { from: 28_000, to: 28_999 })) as [number];
  return port;
}

/**
 * Customer containers' host ports for one serve: a slot of 100 in 61000-65499, leased
 * (port-lease.ts) until `releasePortSlot` or the end of this process, so two serves running at
 * once (the e2e and e2e-openclaw projects run side by side) never publish the same port. Above the
 * kernel's ephemeral range (32768-60999): a port in it can be the local end of any outgoing
 * connection on this machine, which makes Docker's bind fail ("address already in use") and the
 * customer move (a PortClash warning the test did not ask for).
 */
export function portSlot(): { from: number; to: number } {
  const slots = 45;
  const first = Math.floor(Math.random() * slots);
  for (let i = 0; i < slots; i++) {
    const from = 61_000 + ((first + i) % slots) * 100;
    if (lease(`slot-${from}`)) return { from, to: from + 99 };
  }
  throw new Error('every host port slot in 61000-65499 is leased by a live test process');
}

export function releasePortSlot(range: { from: number }): void {
  releaseLease(`slot-${range.from}`);
}

export async function startServe(options: ServeOptions): Promise<Served> {
  if (!existsSync(join(ROOT, 'dist/cli/main.js'))) throw new Error('dist/ is missing: run `make build` first');
  const caddy = options.caddy ?? (await startCaddy());
  const ownsCaddy = !options.caddy;
  const port = await freePort();
  const dataDir = options.dataDir ?? mkdtempSync(join(tmpdir(), 'blytz-e2e-'));
  if (options.user) chownSync(dataDir, options.user.uid, options.user.gid);
  const instance = options.instance ?? `e2e-${randomBytes(4).toString('hex')}`;
  const caddyListenPort = caddy.listenPorts[0];
  const range = options.portRange ?? portSlot();
  const adminToken = `e2e-admin-${randomBytes(12).toString('hex')}`;
  const env: Record<string, string> = {
    ...baseEnv(),
    DATABASE_URL: options.databaseUrl,
    PORT: String(port),
    HOST: '127.0.0.1',
    BLYTZ_DATA_DIR: dataDir,
    BLYTZ_INSTANCE: instance,
    BLYTZ_ADMIN_TOKEN: adminToken,
    CADDY_ADMIN_URL: caddy.adminUrl,
    BLYTZ_CADDY_LISTEN: `:${caddyListenPort}`,
    BLYTZ_CUSTOMER_IMAGE: STUB_IMAGE,
    BLYTZ_PUBLIC_SCHEME: 'http',
    BLYTZ_PORT_RANGE: `${range.from}-${range.to}`,
    BLYTZ_ROUTE_SWEEP_SECONDS: '1',
    LOG_LEVEL: 'info',
    ...options.env,
  };
  let log = '';
  let child: ChildProcess;
  const launch = async () => {
    child = spawn(BLYTZ, ['serve'], {
      cwd: ROOT,
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
      ...(options.user ? { uid: options.user.uid, gid: options.user.gid } : {}),
    });
    child.stdout?.on('data', (d: Buffer) => (log += d.toString()));
    child.stderr?.on('data', (d: Buffer) => (log += d.toString()));
    const started = child;
    try {
      await waitFor(async () => {
        if (started.exitCode !== null) throw new Error(`blytz serve exited with ${started.exitCode}`);
        return (await fetch(`http://127.0.0.1:${port}/healthz`)).ok;
      }, 60_000);
    } catch (error) {
      started.kill('SIGKILL');
      throw new Error(`blytz serve did not start: ${(error as Error).message}\n${log.slice(-4000)}`, { cause: error });
    }
  };
  await launch();
  const stopProcess = async (opts: { kill?: boolean } = {}) => {
    const running = child;
    if (running.exitCode !== null || running.signalCode !== null) return;
    const exited = new Promise((r) => running.once('exit', r));
    running.kill(opts.kill ? 'SIGKILL' : 'SIGTERM');
    await exited;
  };
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    dataDir,
    instance,
    caddy,
    caddyListenPort,
    adminToken,
    get child() {
      return child;
    },
    env,
    log: () => log,
    stopProcess,
    restart: launch,
    stop: async () => {
      await stopProcess();
      await removeInstanceContainers(instance);
      if (ownsCaddy) await caddy.stop();
      if (!options.portRange) releasePortSlot(range);
      if (!options.dataDir) rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

export const docker = new Docker({ socketPath: '/var/run/docker.sock' });

/** This instance's containers, as `docker ps -a` would list them. */
export async function instanceContainers(instance: string, customer?: string): Promise<Docker.ContainerInfo[]> {
  const labels = [`cloud.blytz.instance=${instance}`];
  if (customer) labels.push(`cloud.blytz.customer=${customer}`);
  return docker.listContainers({ all: true, filters: { label: labels } });
}

export async function removeInstanceContainers(instance: string): Promise<void> {
  for (const c of await instanceContainers(instance))
    await docker
      .getContainer(c.Id)
      .remove({ force: true })
      .catch(() => {});
  // And the customers' networks (each customer has its own).
  for (const n of await docker.listNetworks({ filters: { label: [`cloud.blytz.instance=${instance}`] } }))
    await docker
      .getNetwork(n.Id)
      .remove()
      .catch(() => {});
}

/**
 * GET through Caddy's listen port with the customer's Host header, like curl -H 'Host: ...'.
 * node:http, not fetch: fetch silently drops a Host header, so Caddy would match nothing.
 */
export async function throughCaddy(served: Served, host: string, path = '/'): Promise<{ status: number; body: string }> {
  const { status, body } = await getWithHost(served.caddyListenPort, host, path);
  return { status, body };
}

/**
 * Tags the stub image as `image`: the same content under another name, so a new spec hash (a
 * fleet change) whose containers still come up healthy.
 */
export function tagStubImage(image: string): void {
  execFileSync('docker', ['tag', STUB_IMAGE, image]);
}

/** Builds `image` from the stub with a command that never listens: its containers never become healthy. */
export function buildNeverHealthyImage(image: string): void {
  const tmp = `blytz-never-healthy-${randomBytes(4).toString('hex')}`;
  execFileSync('docker', ['create', '--name', tmp, STUB_IMAGE]);
  try {
    execFileSync('docker', ['commit', '--change', 'CMD ["sleep","3600"]', tmp, image]);
  } finally {
    execFileSync('docker', ['rm', '-f', tmp]);
  }
}

/** What one `blytz` command did: its exit code and everything it printed. */
export interface BlytzRun {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Runs the built `blytz ARGS` as a user would (the test's environment plus `env`, `input` on its
 * stdin) and resolves to its exit code and output, whatever the code: tests assert on failures too.
 */
export function runBlytz(args: string[], options: { env?: Record<string, string>; input?: string } = {}): Promise<BlytzRun> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(BLYTZ, args, { cwd: ROOT, env: { ...baseEnv(), ...options.env }, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolvePromise({ code: code ?? -1, stdout, stderr }));
    child.stdin.end(options.input ?? '');
  });
}

/** Runs `blytz ARGS` against the served admin API as an operator would; resolves to its stdout. */
export async function operatorCli(served: Served, ...args: string[]): Promise<string> {
  const { stdout } = await promisify(execFile)(BLYTZ, [...args, '--server', served.url], {
    cwd: ROOT,
    env: { ...baseEnv(), BLYTZ_ADMIN_TOKEN: served.adminToken },
  });
  return stdout;
}

/** The error with the end of the server's log appended: what a failed wait needs to be understood. */
export function withServerLog(served: Served, error: unknown): Error {
  return new Error(`${(error as Error).message}\n${served.log().slice(-4000)}`, { cause: error });
}
