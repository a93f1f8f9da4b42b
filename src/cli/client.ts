import { existsSync, readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { localUrl, secretFromEnv } from '../config.js';
import { adminTokenFile } from '../data-dir.js';
import type { BillingInfo, CustomerSpecView, CustomerStatus, FieldError } from '../domain/customer.js';
import type { PoolObject } from '../domain/pool.js';
import type { ModelUsageAnswer } from '../models/usage-view.js';
import { CliError } from './errors.js';

/**
 * The operator verbs' HTTP client for the admin API (contract section 3.2), like kubectl's
 * REST client: it knows paths and the Status error shape, nothing about tables or files.
 */

export const DEFAULT_SERVER = 'http://127.0.0.1:8080';

/**
 * The server this environment configures: `HOST` and `PORT` as `blytz serve` reads them (the
 * token likewise comes from its data folder), else DEFAULT_SERVER.
 */
export function defaultServer(env: NodeJS.ProcessEnv = process.env): string {
  const port = env['PORT'];
  if (!port && !env['HOST']) return DEFAULT_SERVER;
  return localUrl(env['HOST'] || '127.0.0.1', port && /^\d{1,5}$/.test(port) ? Number(port) : 8080);
}
const CUSTOMERS = '/apis/blytz.cloud/v1alpha1/customers';
const POOLS = '/apis/blytz.cloud/v1alpha1/pools';
const REQUEST_TIMEOUT_MS = 30_000;
// A reconcile may wait for a container to start; the server bounds it, this is a backstop.
const RECONCILE_TIMEOUT_MS = 180_000;

/** A Customer as the admin API returns it: secrets only as "is set" flags. */
export interface CustomerObject {
  apiVersion: string;
  kind: 'Customer';
  metadata: {
    name: string;
    labels?: Record<string, string>;
    generation: number;
    resourceVersion: string;
    creationTimestamp: string;
  };
  spec: CustomerSpecView;
  status: CustomerStatus & { billing?: BillingInfo };
}

export interface CustomerEventObject {
  type: string;
  reason: string;
  message: string;
  count: number;
  firstTimestamp: string;
  lastTimestamp: string;
}

/** `GET .../customers/:name/model-usage`. */
export type ModelUsageObject = ModelUsageAnswer;

export interface ReadyzBody {
  status: string;
  checks: Record<string, { status: 'ok' | 'fail'; message?: string; latencyMs?: number }>;
  leader?: boolean;
}

export interface IntegrationCheckBody {
  name: string;
  /** unknown: could not be checked from where the server runs (says why). */
  status: 'ok' | 'warn' | 'fail' | 'unknown';
  message: string;
}

/** A Status answer from the server (or a stand-in for a non-Status error body). */
export class ApiError extends CliError {
  constructor(
    readonly status: number,
    readonly reason: string,
    message: string,
    readonly causes: FieldError[] = [],
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

export class ServerUnreachableError extends CliError {
  constructor(
    readonly server: string,
    detail: string,
  ) {
    super(
      `cannot reach the blytz server at ${server} (${detail}): is \`blytz serve\` running there? Pass --server URL to use another one`,
    );
    this.name = 'ServerUnreachableError';
  }
}

export interface ConnectionOptions {
  server?: string | undefined;
  token?: string | undefined;
  /** `--allow-plain-http`: send the token over http:// to a server that is not on this machine. */
  allowPlainHttp?: boolean | undefined;
}

/**
 * `--server`, else the default; `--token`, else BLYTZ_ADMIN_TOKEN (or _FILE), else the data
 * directory's file. The admin token opens every customer's settings: it is sent in the clear
 * only to this machine's loopback, unless the operator says the path is safe (an SSH tunnel, a
 * private network) with `--allow-plain-http`.
 */
export function resolveConnection(
  options: ConnectionOptions,
  env: NodeJS.ProcessEnv = process.env,
): { server: string; token: string | undefined } {
  const server = (options.server ?? defaultServer(env)).replace(/\/+$/, '');
  if (!/^https?:\/\/[^/]+/.test(server)) throw new CliError(`--server must be an http(s) URL, not "${server}"`, 2);
  const token = resolveToken(options, env);
  if (token !== undefined && !options.allowPlainHttp && sendsInTheClear(server)) {
    throw new CliError(
      `refusing to send the admin token over plain HTTP to ${new URL(server).host}, where anyone on the way can read it: use an https:// server URL, or pass --allow-plain-http if the path is private (an SSH tunnel, a private network)`,
      2,
    );
  }
  return { server, token };
}

function resolveToken(options: ConnectionOptions, env: NodeJS.ProcessEnv): string | undefined {
  if (options.token) return options.token;
  const fromEnv = secretFromEnv(env, 'BLYTZ_ADMIN_TOKEN');
  if (fromEnv.problem) throw new CliError(fromEnv.problem, 2);
  if (fromEnv.value) return fromEnv.value;
  // Read only: generating a token is the server's job, a fresh one here would never match.
  const file = adminTokenFile(env['BLYTZ_DATA_DIR'] || './data');
  if (existsSync(file)) return readFileSync(file, 'utf8').trim();
  return undefined;
}

/** An http:// URL whose host is not this machine's loopback (127.0.0.0/8, ::1, localhost). */
export function sendsInTheClear(server: string): boolean {
  const url = new URL(server);
  if (url.protocol !== 'http:') return false;
  const host = url.hostname.replace(/^\[|\]$/g, '').toLowerCase();
  if (host === 'localhost' || host.endsWith('.localhost') || host === '::1') return false;
  return !(isIP(host) === 4 && host.startsWith('127.'));
}

export class AdminClient {
  constructor(
    readonly server: string,
    readonly token: string | undefined,
  ) {}

  static from(options: ConnectionOptions): AdminClient {
    const { server, token } = resolveConnection(options);
    return new AdminClient(server, token);
  }

  async listCustomers(labelSelector?: string): Promise<CustomerObject[]> {
    const items: CustomerObject[] = [];
    let token: string | undefined;
    do {
      const query = new URLSearchParams({ limit: '500' });
      if (labelSelector) query.set('labelSelector', labelSelector);
      if (token) query.set('continue', token);
      const page = await this.#request<{ items: CustomerObject[]; metadata: { continue?: string } }>(
        'GET',
        `${CUSTOMERS}?${query}`,
      );
      items.push(...page.items);
      token = page.metadata.continue;
    } while (token);
    return items;
  }

  /** The customer, or undefined when the server has none by that name. */
  async getCustomer(name: string): Promise<CustomerObject | undefined> {
    try {
      return await this.#request<CustomerObject>('GET', customerPath(name));
    } catch (error) {
      if (error instanceof ApiError && error.status === 404) return undefined;
      throw error;
    }
  }

  /** `warnings`: what the server said beside accepting it (its `Warning` headers), for the operator. */
  async applyCustomer(
    name: string,
    manifest: unknown,
  ): Promise<{ customer: CustomerObject; created: boolean; warnings: string[] }> {
    const { body, status, warnings } = await this.#send<CustomerObject>('PUT', customerPath(name), manifest);
    return { customer: body, created: status === 201, warnings };
  }

  async deleteCustomer(name: string): Promise<CustomerObject> {
    return this.#request<CustomerObject>('DELETE', customerPath(name));
  }

  async listEvents(name: string): Promise<CustomerEventObject[]> {
    const list = await this.#request<{ items: CustomerEventObject[] }>('GET', `${customerPath(name)}/events`);
    return list.items;
  }

  /** Undefined when the server does not offer it (an older server: 404 with no customer named). */
  async modelUsage(name: string): Promise<ModelUsageObject | undefined> {
    try {
      return await this.#request<ModelUsageObject>('GET', `${customerPath(name)}/model-usage`);
    } catch (error) {
      if (error instanceof ApiError && error.status === 404) return undefined;
      throw error;
    }
  }

  async rotateModelKey(name: string): Promise<{ rotatedAt: string; rendered: boolean }> {
    return this.#request<{ rotatedAt: string; rendered: boolean }>(
      'POST',
      `${customerPath(name)}/model-key/rotate`,
      undefined,
      RECONCILE_TIMEOUT_MS,
    );
  }

  async reconcile(name: string): Promise<{ handledAt: string }> {
    return this.#request<{ handledAt: string }>('POST', `${customerPath(name)}/reconcile`, undefined, RECONCILE_TIMEOUT_MS);
  }

  /** The current fleet rollouts (see src/cli/rollout.ts for their shape). */
  async rollouts<T>(): Promise<T[]> {
    return (await this.#request<{ items: T[] }>('GET', '/apis/blytz.cloud/v1alpha1/rollouts')).items;
  }

  async rolloutAction<T>(
    action: 'pause' | 'resume' | 'undo',
    options: { restoreState?: boolean } = {},
  ): Promise<{ affected: number; items: T[] }> {
    const body = options.restoreState ? { restoreState: true } : undefined;
    return this.#request<{ affected: number; items: T[] }>('POST', `/apis/blytz.cloud/v1alpha1/rollouts/${action}`, body);
  }

  async createBackup<T>(customer: string): Promise<T> {
    return this.#request<T>('POST', `${customerPath(customer)}/backups`);
  }

  async getBackup<T>(id: number): Promise<T> {
    return this.#request<T>('GET', `/apis/blytz.cloud/v1alpha1/backups/${id}`);
  }

  /** Backups (newest first) and restores, of one customer or of all. */
  async listBackups<B, R>(customer?: string): Promise<{ items: B[]; restores: R[] }> {
    const query = customer ? `?customer=${encodeURIComponent(customer)}` : '';
    return this.#request<{ items: B[]; restores: R[] }>('GET', `/apis/blytz.cloud/v1alpha1/backups${query}`);
  }

  async restoreBackup<T>(id: number, customer?: string): Promise<T> {
    return this.#request<T>('POST', `/apis/blytz.cloud/v1alpha1/backups/${id}/restore`, customer ? { customer } : {});
  }

  async getRestore<T>(id: number): Promise<T> {
    return this.#request<T>('GET', `/apis/blytz.cloud/v1alpha1/restores/${id}`);
  }

  /** Every plan's warm pool (size 0 for plans never set). */
  async listPools(): Promise<PoolObject[]> {
    return (await this.#request<{ items: PoolObject[] }>('GET', POOLS)).items;
  }

  async getPool(plan: string): Promise<PoolObject | undefined> {
    try {
      return await this.#request<PoolObject>('GET', `${POOLS}/${encodeURIComponent(plan)}`);
    } catch (error) {
      if (error instanceof ApiError && error.status === 404) return undefined;
      throw error;
    }
  }

  async applyPool(plan: string, manifest: unknown): Promise<{ pool: PoolObject; created: boolean }> {
    const { status, body } = await this.#send<PoolObject>('PUT', `${POOLS}/${encodeURIComponent(plan)}`, manifest);
    return { pool: body, created: status === 201 };
  }

  /** `/readyz` is public and answers 503 with the same body when a check fails. */
  async readyz(): Promise<ReadyzBody> {
    const res = await this.#fetch('GET', '/readyz', undefined, REQUEST_TIMEOUT_MS, false);
    const text = await res.text();
    try {
      return JSON.parse(text) as ReadyzBody;
    } catch {
      throw new CliError(`${this.server}/readyz answered ${res.status} without a JSON body: is this a blytz server?`);
    }
  }

  async diagnostics(): Promise<IntegrationCheckBody[]> {
    const body = await this.#request<{ integrations: IntegrationCheckBody[] }>('GET', '/apis/blytz.cloud/v1alpha1/diagnostics');
    return body.integrations;
  }

  async #request<T>(method: string, path: string, body?: unknown, timeoutMs = REQUEST_TIMEOUT_MS): Promise<T> {
    return (await this.#send<T>(method, path, body, timeoutMs)).body;
  }

  async #send<T>(
    method: string,
    path: string,
    body?: unknown,
    timeoutMs = REQUEST_TIMEOUT_MS,
  ): Promise<{ status: number; body: T; warnings: string[] }> {
    const res = await this.#fetch(method, path, body, timeoutMs, true);
    const text = await res.text();
    let parsed: unknown;
    try {
      parsed = text ? JSON.parse(text) : undefined;
    } catch {
      parsed = undefined;
    }
    if (!res.ok) throw toApiError(res.status, parsed, text);
    return { status: res.status, body: parsed as T, warnings: warningTexts(res.headers.get('warning')) };
  }

  async #fetch(method: string, path: string, body: unknown, timeoutMs: number, authenticated: boolean): Promise<Response> {
    const headers: Record<string, string> = { accept: 'application/json' };
    if (authenticated) {
      if (!this.token) {
        throw new CliError(
          'no admin token: pass --token, set BLYTZ_ADMIN_TOKEN, or run where $BLYTZ_DATA_DIR/admin-token (written by `blytz serve`) is readable',
        );
      }
      headers['authorization'] = `Bearer ${this.token}`;
    }
    if (body !== undefined) headers['content-type'] = 'application/json';
    try {
      return await fetch(`${this.server}${path}`, {
        method,
        headers,
        signal: AbortSignal.timeout(timeoutMs),
        ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
      });
    } catch (error) {
      throw new ServerUnreachableError(this.server, describeFetchError(error));
    }
  }
}

function customerPath(name: string): string {
  return `${CUSTOMERS}/${encodeURIComponent(name)}`;
}

function toApiError(status: number, body: unknown, text: string): ApiError {
  const s = body as
    | { kind?: string; reason?: string; message?: string; details?: { causes?: FieldError[] }; error?: { message?: string } }
    | undefined;
  if (s?.kind === 'Status') {
    let message = s.message ?? `request failed with ${status}`;
    if (status === 401)
      message = `the server refused the admin token (401): check --token, BLYTZ_ADMIN_TOKEN or $BLYTZ_DATA_DIR/admin-token`;
    return new ApiError(status, s.reason ?? 'Unknown', message, s.details?.causes ?? []);
  }
  const message = s?.error?.message ?? (text.slice(0, 200) || `request failed with ${status}`);
  return new ApiError(status, status === 404 ? 'NotFound' : 'Unknown', `the server answered ${status}: ${message}`);
}

/** fetch's TypeError hides the reason in `cause`; the code (ECONNREFUSED, ENOTFOUND) is what helps. */
function describeFetchError(error: unknown): string {
  const e = error as { name?: string; message?: string; cause?: { code?: string; message?: string } };
  if (e.name === 'TimeoutError') return 'no answer in time';
  if (e.cause?.code === 'ECONNREFUSED') return 'connection refused';
  return e.cause?.code ?? e.cause?.message ?? e.message ?? String(error);
}

/**
 * The texts of `Warning` headers (`299 - "text"`, several joined by ", " as fetch joins them),
 * as kubectl prints an API server's warnings. Exported for its test.
 */
export function warningTexts(header: string | null): string[] {
  if (!header) return [];
  return [...header.matchAll(/\d{3} \S+ "((?:[^"\\]|\\.)*)"/g)].map((m) => (m[1] ?? '').replace(/\\(.)/g, '$1'));
}
