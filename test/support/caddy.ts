import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { leaseFreePorts, releaseLease } from './port-lease.js';
import { waitFor } from './wait-for.js';

/**
 * A real Caddy per test file, on its own ports, never the machine's default one (admin 2019).
 *
 * Caddy 2.6.2 binds its listeners with SO_REUSEPORT, so starting it on a port another Caddy
 * already holds does NOT fail: both would answer, at random. Ports are therefore leased (lock
 * files, see freePorts), checked free with an exclusive bind, and spread over 32000-32499 by
 * vitest worker; the admin port is also checked to answer with this Caddy's own marker.
 *
 * Each Caddy gets its own HOME/XDG folders: `caddy run` autosaves its config to
 * $XDG_CONFIG_HOME/caddy/autosave.json, which must not overwrite the default Caddy's.
 */

const CADDY_BIN = process.env['CADDY_BIN'] ?? '/usr/bin/caddy';
const PORT_LOW = 32000;
const PORT_HIGH = 32499;

export interface TestCaddy {
  adminUrl: string;
  adminPort: number;
  /** Free ports for server blocks (`listen: ":<port>"`): the one under test, foreign ones, ... */
  listenPorts: [number, number, number];
  /** The admin-only config: Caddy with nothing configured (the "empty" Caddy). */
  emptyConfig(): Record<string, unknown>;
  /**
   * fetch against the admin API on a fresh connection: Caddy restarts its admin server on every
   * config change, so a pooled keep-alive socket can be closed under a request.
   */
  admin(path: string, init?: RequestInit): Promise<Response>;
  /** GET /config/ (the whole config). */
  config(): Promise<unknown>;
  /** POST /load: replaces the whole config, as an operator or another tool could. */
  load(config: unknown): Promise<void>;
  /** SIGKILL, then start again with the empty config (no --resume): "Caddy restarted empty". */
  restartEmpty(): Promise<void>;
  /** Caddy's log so far (for assertion messages). */
  log(): string;
  stop(): Promise<void>;
}

/** Another process took our admin port between the free-port check and Caddy's bind. */
class PortTakenError extends Error {}

export async function startCaddy(): Promise<TestCaddy> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await startCaddyOnce();
    } catch (error) {
      if (!(error instanceof PortTakenError) || attempt >= 5) throw error;
    }
  }
}

async function startCaddyOnce(): Promise<TestCaddy> {
  const dir = mkdtempSync(path.join(tmpdir(), 'blytz-caddy-'));
  const [adminPort, a, b, c] = (await freePorts(4)) as [number, number, number, number];
  const adminUrl = `http://127.0.0.1:${adminPort}`;
  // The marker `@id` tells our Caddy apart from another one sharing the port (SO_REUSEPORT);
  // it stays in every "empty" config the tests load.
  const marker = `test-caddy-${randomBytes(6).toString('hex')}`;
  const admin = (p: string, init: RequestInit = {}) =>
    fetch(`${adminUrl}${p}`, {
      ...init,
      headers: { ...(init.headers as Record<string, string> | undefined), Connection: 'close' },
    });
  const emptyConfig = () => ({ admin: { listen: `127.0.0.1:${adminPort}`, '@id': marker } });
  const configFile = path.join(dir, 'caddy.json');
  const logFile = path.join(dir, 'caddy.log');
  writeFileSync(configFile, JSON.stringify(emptyConfig()));

  let child: ChildProcess | undefined;
  const launch = async () => {
    const fd = openSync(logFile, 'a');
    try {
      child = spawn(CADDY_BIN, ['run', '--config', configFile], {
        stdio: ['ignore', fd, fd],
        env: { ...process.env, HOME: dir, XDG_CONFIG_HOME: path.join(dir, 'config'), XDG_DATA_HOME: path.join(dir, 'data') },
      });
    } finally {
      closeSync(fd);
    }
    const started = child;
    await waitFor(async () => {
      if (started.exitCode !== null) throw new Error(`caddy exited (${started.exitCode}): ${readLog()}`);
      const res = await admin('/config/');
      return res.ok;
    }, 15_000);
    // The kernel spreads connections over every process on a shared port: several answers,
    // all from ours, make a shared port very unlikely to go unnoticed.
    for (let i = 0; i < 8; i++) {
      const res = await admin(`/id/${marker}`);
      await res.text();
      if (res.status !== 200) throw new PortTakenError(`admin port ${adminPort} is shared with another process`);
    }
  };
  const kill = async (signal: NodeJS.Signals) => {
    const running = child;
    child = undefined;
    if (!running || running.exitCode !== null || running.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => running.once('exit', () => resolve()));
    running.kill(signal);
    const timer = setTimeout(() => running.kill('SIGKILL'), 5_000);
    await exited;
    clearTimeout(timer);
  };
  const readLog = () => {
    try {
      return readFileSync(logFile, 'utf8').slice(-4000);
    } catch {
      return '';
    }
  };

  // If the test process dies without afterAll, do not leave this Caddy running.
  const killOnExit = () => child?.kill('SIGKILL');
  process.once('exit', killOnExit);

  try {
    await launch();
  } catch (error) {
    process.off('exit', killOnExit);
    await kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
    release([adminPort, a, b, c]);
    throw error;
  }

  return {
    adminUrl,
    adminPort,
    listenPorts: [a, b, c],
    emptyConfig,
    admin,
    config: async () => (await admin('/config/')).json(),
    load: async (config) => {
      const res = await admin('/load', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify(config),
      });
      if (!res.ok) throw new Error(`caddy /load: ${res.status} ${await res.text()}`);
    },
    restartEmpty: async () => {
      await kill('SIGKILL');
      await launch();
    },
    log: readLog,
    stop: async () => {
      process.off('exit', killOnExit);
      await kill('SIGTERM');
      rmSync(dir, { recursive: true, force: true });
      release([adminPort, a, b, c]);
    },
  };
}

/**
 * `count` distinct ports in 32000-32499, each leased to this process and free right now.
 *
 * A bind check alone is not enough: a listen port is bound only when a test loads a config,
 * seconds later, and with SO_REUSEPORT a second Caddy taking it in between would not fail. So
 * every port handed out is also leased (port-lease.ts). The leases end with `stop()` (or this
 * process).
 */
async function freePorts(count: number): Promise<number[]> {
  const worker = Number(process.env['VITEST_POOL_ID'] ?? '1');
  // 25 slots of 20 ports; a worker starts in its own slot and walks on from there.
  const start = ((worker - 1) % 25) * 20 + Math.floor(Math.random() * 20);
  return leaseFreePorts(count, { from: PORT_LOW, to: PORT_HIGH }, start);
}

function release(ports: number[]): void {
  for (const port of ports) releaseLease(String(port));
}
