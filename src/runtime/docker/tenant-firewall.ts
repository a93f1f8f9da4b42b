import { execFile } from 'node:child_process';
import type { Logger } from '../../observability/logger.js';
import type { Metrics } from '../../observability/metrics.js';

/**
 * Whether this host's tenant firewall is loaded: the nftables table of
 * `deploy/host/blytz-tenants.nft` (`inet blytz_tenants`). On Docker, a network per customer is
 * not isolation by itself (docs/security.md, section 4): without the table, a customer's
 * container reaches other customers' gateways and the host's own ports (blytz's API, Caddy's
 * admin API, Postgres), and nothing else notices. So `blytz serve` reads it at start and every
 * few minutes (logs, a metric, `blytz doctor`), and `blytz doctor` reads it itself when the
 * server is down.
 *
 * Read with `nft list table inet blytz_tenants`, which needs CAP_NET_ADMIN: blytz on a Docker
 * host runs as root, but where it does not (or nft is not installed, e.g. blytz in a container),
 * the answer is "unknown", said as such, never "loaded".
 */

export const TENANT_TABLE = 'blytz_tenants';
export const TENANT_RULESET_FILE = 'deploy/host/blytz-tenants.nft';

export type TenantFirewallState = 'loaded' | 'missing' | 'incomplete' | 'unknown';
export const TENANT_FIREWALL_STATES: readonly TenantFirewallState[] = ['loaded', 'missing', 'incomplete', 'unknown'];

export interface TenantFirewallStatus {
  state: TenantFirewallState;
  /** One line for an operator: what was found and, unless loaded, what to run. */
  message: string;
}

/** What running nft gave: its exit and output, or why it could not run. */
export interface NftOutcome {
  /** The spawn's error code when nft did not run at all (ENOENT: not installed), or ETIMEDOUT. */
  errorCode?: string | undefined;
  exitCode: number | null;
  stdout: string;
  stderr: string;
}

/**
 * The rules without which the table does not isolate anything, by chain: the hook line, then
 * rules as `nft list` prints them (comments left out).
 */
const REQUIRED: Readonly<Record<string, readonly string[]>> = {
  forward: [
    'type filter hook forward',
    'iifname "bz-*" oifname "bz-*" drop',
    'iifname "bz-*" oifname "docker0" drop',
    'iifname "bz-*" oifname "br-*" drop',
  ],
  input: ['type filter hook input', 'drop'],
};

const LOAD_HINT = `load it as root: nft -f ${TENANT_RULESET_FILE}, and at boot (docs/deploy.md)`;

/** The rule lines of each chain in `nft list table` output, comments removed, whitespace collapsed. */
export function chainRules(listing: string): Map<string, string[]> {
  const chains = new Map<string, string[]>();
  let current: string[] | undefined;
  for (const raw of listing.split('\n')) {
    const line = raw
      .replace(/\s+comment\s+"(?:[^"\\]|\\.)*"\s*$/, '')
      .replace(/\s+/g, ' ')
      .trim();
    const opened = /^chain (\S+) \{$/.exec(line);
    if (opened) {
      current = [];
      chains.set(opened[1] as string, current);
    } else if (line === '}') current = undefined;
    else if (current && line !== '') current.push(line);
  }
  return chains;
}

/** What nft's answer says about the table (pure). */
export function judgeTenantFirewall(outcome: NftOutcome, table = TENANT_TABLE): TenantFirewallStatus {
  const name = `inet ${table}`;
  if (outcome.errorCode === 'ENOENT')
    return {
      state: 'unknown',
      message: `unknown: nft is not installed here (or not on PATH), so the tenant firewall (${name}) cannot be read; check on the Docker host: nft list table ${name}`,
    };
  if (outcome.errorCode !== undefined)
    return { state: 'unknown', message: `unknown: nft list table ${name} did not run (${outcome.errorCode})` };
  if (outcome.exitCode !== 0) {
    if (/operation not permitted|permission denied/i.test(outcome.stderr))
      return {
        state: 'unknown',
        message: `unknown: not permitted to read nftables (needs root or CAP_NET_ADMIN); check as root: nft list table ${name}`,
      };
    if (/no such file or directory/i.test(outcome.stderr))
      return {
        state: 'missing',
        message: `the tenant firewall (nftables table ${name}) is not loaded: customer containers can reach each other and this host's ports; ${LOAD_HINT}`,
      };
    const first = outcome.stderr.split('\n').find((l) => l.trim() !== '') ?? `exit ${outcome.exitCode}`;
    return { state: 'unknown', message: `unknown: nft list table ${name} failed: ${first.trim()}` };
  }
  const chains = chainRules(outcome.stdout);
  const absent: string[] = [];
  for (const [chain, rules] of Object.entries(REQUIRED)) {
    const found = chains.get(chain);
    if (!found) {
      absent.push(`chain ${chain}`);
      continue;
    }
    for (const rule of rules)
      if (!found.some((line) => line === rule || (rule.startsWith('type ') && line.startsWith(rule))))
        absent.push(`${chain}: ${rule}`);
  }
  if (absent.length > 0)
    return {
      state: 'incomplete',
      message: `the tenant firewall (nftables table ${name}) is loaded but lacks ${absent.join('; ')}: reload it as root: nft -f ${TENANT_RULESET_FILE}`,
    };
  return { state: 'loaded', message: `nftables table ${name} is loaded (customers kept apart and off the host's ports)` };
}

export interface ReadTenantFirewallOptions {
  /** The command that runs nft (default `['nft']`; a test runs it as another user). */
  command?: readonly string[];
  table?: string;
  timeoutMs?: number;
}

/** Runs `nft list table inet <table>` and judges the answer; never throws. */
export async function readTenantFirewall(options: ReadTenantFirewallOptions = {}): Promise<TenantFirewallStatus> {
  const [program, ...prefix] = options.command ?? ['nft'];
  const table = options.table ?? TENANT_TABLE;
  const outcome = await new Promise<NftOutcome>((resolve) => {
    execFile(
      program as string,
      [...prefix, 'list', 'table', 'inet', table],
      { timeout: options.timeoutMs ?? 5000, maxBuffer: 1024 * 1024, encoding: 'utf8' },
      (error, stdout, stderr) => {
        const failure = error as (NodeJS.ErrnoException & { killed?: boolean; code?: number | string }) | null;
        if (!failure) return resolve({ exitCode: 0, stdout, stderr });
        if (typeof failure.code === 'string') return resolve({ errorCode: failure.code, exitCode: null, stdout, stderr });
        if (failure.killed) return resolve({ errorCode: 'ETIMEDOUT', exitCode: null, stdout, stderr });
        resolve({ exitCode: typeof failure.code === 'number' ? failure.code : null, stdout, stderr });
      },
    );
  });
  return judgeTenantFirewall(outcome, table);
}

/**
 * `blytz serve` on Docker: reads the firewall at start and every `intervalMs` (someone may flush
 * the host's ruleset later), keeps the metric `blytz_tenant_firewall{state}` (1 for the state
 * found), and logs when the state changes: an error while isolation is off, a warning while it
 * cannot be read.
 */
export class TenantFirewallWatch {
  readonly #read: () => Promise<TenantFirewallStatus>;
  readonly #logger: Logger;
  readonly #metrics: Pick<Metrics, 'tenantFirewall'>;
  #last: TenantFirewallStatus | undefined;
  #timer: NodeJS.Timeout | undefined;

  constructor(deps: { read: () => Promise<TenantFirewallStatus>; logger: Logger; metrics: Pick<Metrics, 'tenantFirewall'> }) {
    this.#read = deps.read;
    this.#logger = deps.logger;
    this.#metrics = deps.metrics;
  }

  /** The last state read (undefined before the first). */
  get last(): TenantFirewallStatus | undefined {
    return this.#last;
  }

  /** Reads it now, reports it, and returns it. */
  async check(): Promise<TenantFirewallStatus> {
    const status = await this.#read();
    for (const state of TENANT_FIREWALL_STATES) this.#metrics.tenantFirewall.set({ state }, state === status.state ? 1 : 0);
    if (status.state !== this.#last?.state) {
      const fields = { tenantFirewall: status.state };
      if (status.state === 'loaded') this.#logger.info(fields, status.message);
      else if (status.state === 'unknown') this.#logger.warn(fields, `tenant isolation cannot be checked: ${status.message}`);
      else this.#logger.error(fields, `TENANT ISOLATION IS OFF: ${status.message}`);
    }
    this.#last = status;
    return status;
  }

  start(intervalMs: number): void {
    this.#timer = setInterval(() => void this.check().catch(() => {}), intervalMs);
    this.#timer.unref();
  }

  stop(): void {
    clearInterval(this.#timer);
  }
}

/** The line `GET .../diagnostics` (and so `blytz doctor`) shows for it. */
export function tenantFirewallCheck(status: TenantFirewallStatus): {
  name: string;
  status: 'ok' | 'fail' | 'unknown';
  message: string;
} {
  return {
    name: 'tenant-firewall',
    status: status.state === 'loaded' ? 'ok' : status.state === 'unknown' ? 'unknown' : 'fail',
    message: status.message,
  };
}
