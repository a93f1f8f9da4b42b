import { request } from 'node:http';
import { AdminClient, ApiError, ServerUnreachableError, type ReadyzBody } from './client.js';
import { formatTable } from './format.js';
import { readTenantFirewall, tenantFirewallCheck } from '../runtime/docker/tenant-firewall.js';

/**
 * `blytz doctor`: one line per dependency. Postgres, the runtime (Docker or Kubernetes) and the
 * routes (Caddy or Ingresses) as the server sees them (its /readyz). When the server cannot be
 * reached, Docker and Caddy are checked from this machine with the same environment variables,
 * and the line says so. Stripe and Telegram: presence of configuration only. On Docker, the
 * host's tenant firewall (nftables): as the server reads it, or read here when the server is down.
 */

export type CheckStatus = 'ok' | 'warn' | 'FAIL' | 'unknown';

export interface DoctorLine {
  name: string;
  status: CheckStatus;
  message: string;
}

const LOCAL_TIMEOUT_MS = 3000;

export async function runDoctor(client: AdminClient, env: NodeJS.ProcessEnv = process.env): Promise<DoctorLine[]> {
  const lines: DoctorLine[] = [];
  let readyz: ReadyzBody | undefined;
  try {
    readyz = await client.readyz();
    lines.push({
      name: 'server',
      status: 'ok',
      message: `${client.server}${readyz.leader === undefined ? '' : readyz.leader ? ' (leads the controller)' : ' (not the controller leader)'}`,
    });
  } catch (error) {
    const message =
      error instanceof ServerUnreachableError ? error.message : `${client.server}/readyz: ${(error as Error).message}`;
    lines.push({ name: 'server', status: 'FAIL', message });
  }

  const fromServer = (name: string): DoctorLine | undefined => {
    const check = readyz?.checks[name];
    if (!check) return undefined;
    return check.status === 'ok'
      ? { name, status: 'ok', message: check.latencyMs === undefined ? 'reachable' : `reachable (${check.latencyMs} ms)` }
      : { name, status: 'FAIL', message: check.message ?? 'failing' };
  };

  if (readyz) {
    // Whatever the server depends on, by the names it reports: `docker` or `kubernetes` for the
    // runtime, `caddy` or `ingress` for routes.
    lines.push(
      fromServer('database') ?? { name: 'database', status: 'FAIL', message: 'the server does not report a database check' },
    );
    for (const name of Object.keys(readyz.checks)) if (name !== 'database') lines.push(fromServer(name) as DoctorLine);
  } else {
    // The server is down: check from here what the same environment points at.
    lines.push({ name: 'database', status: 'unknown', message: 'checked through the server, which is unreachable' });
    lines.push(
      env['BLYTZ_RUNTIME'] === 'kubernetes'
        ? { name: 'kubernetes', status: 'unknown', message: 'checked through the server, which is unreachable' }
        : await localDocker(env['DOCKER_HOST'] || 'unix:///var/run/docker.sock'),
    );
    lines.push(
      env['BLYTZ_ROUTES'] === 'ingress'
        ? { name: 'ingress', status: 'unknown', message: 'checked through the server, which is unreachable' }
        : await localCaddy(env['CADDY_ADMIN_URL'] || 'http://127.0.0.1:2019'),
    );
    if (env['BLYTZ_RUNTIME'] !== 'kubernetes') lines.push(await localTenantFirewall());
  }

  if (!readyz) {
    lines.push({ name: 'stripe', status: 'unknown', message: 'the server reports its configuration, and it is unreachable' });
    lines.push({ name: 'telegram', status: 'unknown', message: 'the server reports its configuration, and it is unreachable' });
  } else {
    try {
      for (const check of await client.diagnostics()) {
        const line: DoctorLine = {
          name: check.name,
          status: check.status === 'fail' ? 'FAIL' : check.status,
          message: check.message,
        };
        lines.push(check.name === 'tenant-firewall' && check.status === 'unknown' ? await tenantFirewallHere(line) : line);
      }
    } catch (error) {
      const message =
        error instanceof ApiError && error.status === 404
          ? 'the server does not report its configuration'
          : (error as Error).message;
      lines.push({ name: 'stripe', status: 'unknown', message });
      lines.push({ name: 'telegram', status: 'unknown', message });
    }
  }
  return lines;
}

/** Failures and unknowns both fail `doctor`: an unchecked dependency is not a healthy one. */
export function doctorFailed(lines: DoctorLine[]): boolean {
  return lines.some((l) => l.status === 'FAIL' || l.status === 'unknown');
}

export function formatDoctor(lines: DoctorLine[]): string {
  return `${formatTable(
    ['CHECK', 'STATUS', 'MESSAGE'],
    lines.map((l) => [l.name, l.status, l.message]),
  )}\n`;
}

async function localTenantFirewall(): Promise<DoctorLine> {
  const check = tenantFirewallCheck(await readTenantFirewall());
  return {
    name: check.name,
    status: check.status === 'fail' ? 'FAIL' : check.status,
    message: `${check.message} (checked from this machine)`,
  };
}

/**
 * The server could not read the host's nftables (the kits run it without CAP_NET_ADMIN): run as
 * root on the Docker host, `blytz doctor` reads it itself and says so; otherwise the server's
 * "unknown" stands.
 */
async function tenantFirewallHere(fromServer: DoctorLine): Promise<DoctorLine> {
  const here = await localTenantFirewall();
  if (here.status === 'unknown') return fromServer;
  return { ...here, message: `${here.message}; the server could not read it: ${fromServer.message}` };
}

async function localDocker(dockerHost: string): Promise<DoctorLine> {
  const where = `checked from this machine at DOCKER_HOST=${dockerHost}`;
  let target: { socketPath: string } | { host: string; port: number };
  if (dockerHost.startsWith('unix://')) target = { socketPath: dockerHost.slice('unix://'.length) };
  else {
    const url = new URL(dockerHost.replace(/^tcp:/, 'http:'));
    target = { host: url.hostname, port: Number(url.port || 2375) };
  }
  try {
    const status = await new Promise<number>((resolve, reject) => {
      const req = request({ ...target, path: '/_ping', method: 'GET', timeout: LOCAL_TIMEOUT_MS }, (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      });
      req.on('timeout', () => req.destroy(new Error('no answer in time')));
      req.on('error', reject);
      req.end();
    });
    return status === 200
      ? { name: 'docker', status: 'ok', message: `reachable (${where})` }
      : { name: 'docker', status: 'FAIL', message: `/_ping answered ${status} (${where})` };
  } catch (error) {
    return { name: 'docker', status: 'FAIL', message: `${errorCode(error)} (${where}): is the Docker engine running?` };
  }
}

async function localCaddy(adminUrl: string): Promise<DoctorLine> {
  const where = `checked from this machine at CADDY_ADMIN_URL=${adminUrl}`;
  try {
    const res = await fetch(`${adminUrl.replace(/\/+$/, '')}/config/`, { signal: AbortSignal.timeout(LOCAL_TIMEOUT_MS) });
    await res.body?.cancel();
    return res.ok
      ? { name: 'caddy', status: 'ok', message: `admin API reachable (${where})` }
      : { name: 'caddy', status: 'FAIL', message: `admin API answered ${res.status} (${where})` };
  } catch (error) {
    return { name: 'caddy', status: 'FAIL', message: `admin API unreachable: ${errorCode(error)} (${where}): is Caddy running?` };
  }
}

function errorCode(error: unknown): string {
  const e = error as { name?: string; code?: string; message?: string; cause?: { code?: string; message?: string } };
  if (e.name === 'TimeoutError') return 'no answer in time';
  return e.cause?.code ?? e.code ?? e.cause?.message ?? e.message ?? String(error);
}
