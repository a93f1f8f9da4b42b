import { randomBytes } from 'node:crypto';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { Agent } from 'node:http';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type Docker from 'dockerode';
import { docker } from '../test/support/blytz-serve.js';
import { getWithHost as getWithHostHeader, type HostResponse } from '../test/support/http-get.js';
import { percentile } from './support.js';

/**
 * Helpers shared by the benchmarks that drive a real Docker engine and a real Caddy: HTTP GETs
 * with a Host header (node:http, fetch drops it), polling, bounded concurrency, cleanup by label,
 * and /proc readings of a process.
 */

/** Keep-alive sockets for polling: a fresh TCP connection per 10 ms poll would be the cost measured. */
const agent = new Agent({ keepAlive: true, maxSockets: 512 });

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** GET with `Host: host` over the keep-alive agent. */
export function getWithHost(port: number, host: string, path = '/', timeoutMs = 5000): Promise<HostResponse> {
  return getWithHostHeader(port, host, path, { timeoutMs, agent });
}

/** True when `host` on `port` answers 200 with `marker` in the body (an empty 200 from a server block with no route is not it). */
export async function answers(port: number, host: string, path: string, marker: string): Promise<boolean> {
  try {
    const res = await getWithHost(port, host, path);
    return res.status === 200 && res.body.includes(marker);
  } catch {
    return false;
  }
}

/** Polls every `intervalMs` (after the previous answer) until `check` holds; returns performance.now() of the first success. */
export async function pollUntil(check: () => Promise<boolean>, intervalMs: number, timeoutMs: number, what: string): Promise<number> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    if (await check()) return performance.now();
    if (performance.now() > deadline) throw new Error(`${what}: not reached within ${timeoutMs} ms`);
    await sleep(intervalMs);
  }
}

/** Runs `fn` over `items` with at most `limit` in flight; results in input order. */
export async function mapLimit<T, R>(items: readonly T[], limit: number, fn: (item: T, index: number) => Promise<R>): Promise<R[]> {
  const results = new Array<R>(items.length);
  let next = 0;
  const worker = async () => {
    for (;;) {
      const i = next++;
      if (i >= items.length) return;
      results[i] = await fn(items[i] as T, i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}

export interface Summary {
  n: number;
  p50: number;
  p95: number;
  p99: number;
  max: number;
  mean: number;
}

export function summarize(values: number[]): Summary {
  return {
    n: values.length,
    p50: percentile(values, 50),
    p95: percentile(values, 95),
    p99: percentile(values, 99),
    max: Math.max(...values),
    mean: values.reduce((a, b) => a + b, 0) / values.length,
  };
}

export function fmtMs(s: Summary): string {
  return `n=${s.n} p50=${s.p50.toFixed(0)} p95=${s.p95.toFixed(0)} p99=${s.p99.toFixed(0)} max=${s.max.toFixed(0)} ms`;
}

/** A short random id for names and labels of one run. */
export function runId(): string {
  return randomBytes(3).toString('hex');
}

/** The label every container a benchmark creates itself carries, so cleanup removes exactly those. */
export const BENCH_LABEL = 'cloud.blytz.bench';

/** Removes the containers carrying `label=value` (only those), `concurrency` at a time. */
export async function removeContainersByLabel(label: string, value: string, concurrency = 2): Promise<number> {
  const list = await docker.listContainers({ all: true, filters: { label: [`${label}=${value}`] } });
  await mapLimit(list, concurrency, (c) => docker.getContainer(c.Id).remove({ force: true }).catch(() => {}));
  // Customers' own networks (runtime/docker/networks.ts) stay until removed.
  const networks = await docker.listNetworks({ filters: { label: [`${label}=${value}`] } });
  await mapLimit(networks, concurrency, (n) => docker.getNetwork(n.Id).remove().catch(() => {}));
  return list.length;
}

/**
 * A folder laid out like a customer's data folder (`workspace/AGENTS.md`), readable by the
 * stub image's uid 1000, to bind-mount at /home/node/.openclaw.
 */
export function stubDataDir(marker: string, parent = tmpdir()): string {
  const dir = mkdtempSync(join(parent, 'blytz-bench-'));
  mkdirSync(join(dir, 'workspace'));
  writeFileSync(join(dir, 'workspace/AGENTS.md'), `# AGENTS.md\n\n${marker}\n`);
  chmodSync(dir, 0o755);
  chmodSync(join(dir, 'workspace'), 0o755);
  return dir;
}

/**
 * The create request of a plain container of the stub image: port 18789 published on
 * 127.0.0.1:<hostPort>, `dataDir` bind-mounted read-only, nothing else (no limits, no init).
 */
export function plainContainer(
  name: string,
  image: string,
  hostPort: number,
  dataDir: string,
  labels: Record<string, string>,
  restart?: 'unless-stopped',
): Docker.ContainerCreateOptions {
  return {
    name,
    Image: image,
    Labels: labels,
    ExposedPorts: { '18789/tcp': {} },
    HostConfig: {
      Mounts: [{ Type: 'bind', Source: dataDir, Target: '/home/node/.openclaw', ReadOnly: true }],
      PortBindings: { '18789/tcp': [{ HostIp: '127.0.0.1', HostPort: String(hostPort) }] },
      ...(restart ? { RestartPolicy: { Name: restart, MaximumRetryCount: 0 } } : {}),
    },
  };
}

/** A Caddy route: `host` -> reverse_proxy 127.0.0.1:<port>, addressable by `@id`. */
export function caddyRoute(id: string, host: string, port: number): Record<string, unknown> {
  return {
    '@id': id,
    match: [{ host: [host] }],
    handle: [{ handler: 'reverse_proxy', upstreams: [{ dial: `127.0.0.1:${port}` }] }],
    terminal: true,
  };
}

/** VmRSS of a process in bytes (/proc/<pid>/status). */
export function rssBytes(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) * 1024 : NaN;
}

/** utime + stime of a process in seconds (/proc/<pid>/stat fields 14 and 15; USER_HZ = 100 on Linux). */
export function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // The command name (field 2) is in parentheses and may hold spaces: split after the last ')'.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

/** Everyone's CPU time on this machine in seconds (/proc/stat: user+nice+system+irq+softirq+steal), to say how busy it was. */
export function machineBusySeconds(): number {
  const line = readFileSync('/proc/stat', 'utf8').split('\n')[0] ?? '';
  const [, user, nice, system, , , irq, softirq, steal] = line.trim().split(/\s+/).map(Number);
  return ((user ?? 0) + (nice ?? 0) + (system ?? 0) + (irq ?? 0) + (softirq ?? 0) + (steal ?? 0)) / 100;
}

/**
 * Host ports for the benchmarks' own containers and serve ranges: 61000-65535 lies above Linux's
 * ephemeral range (32768-60999), so no outgoing connection of another process holds one.
 */
export const BENCH_PORTS = {
  provision: { from: 61_000, to: 61_299 },
  provisionFloor: 61_400,
  drift: { from: 61_700, to: 61_749 },
  driftBaseline: 61_800,
  scale: { from: 62_000, to: 64_999 },
  realFloor: 61_900,
} as const;

function bindable(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', () => resolve(false));
    server.listen({ port, host: '127.0.0.1', exclusive: true }, () => server.close(() => resolve(true)));
  });
}

/** The first port from `from` upwards that can be bound on 127.0.0.1 right now, and not handed out before by this process. */
const handedOut = new Set<number>();
export async function freeHostPort(from: number): Promise<number> {
  for (let port = from; port < 65_536; port++) {
    if (handedOut.has(port)) continue;
    handedOut.add(port); // before the await: concurrent callers skip it
    if (await bindable(port)) return port;
    handedOut.delete(port);
  }
  throw new Error(`no free port from ${from}`);
}

/** Lets ports handed out by freeHostPort be handed out again (their containers are gone). */
export function releaseHostPorts(): void {
  handedOut.clear();
}
