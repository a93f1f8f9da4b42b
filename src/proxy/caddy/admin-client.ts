import { unguarded, type Guard } from '../../resilience/guard.js';
import { isTransient, isTransientStatus, type TransientClassifier } from '../../resilience/transient.js';

/**
 * A thin client for Caddy's admin API (https://caddyserver.com/docs/api) over Node's fetch.
 * Every call goes through the Guard (timeout, retry for transient failures, breaker, metrics).
 * Only http(s) admin URLs are supported (fetch cannot dial Caddy's unix-socket admin).
 */

/** Caddy answered with a status the caller did not expect. */
export class CaddyAdminError extends Error {
  constructor(
    readonly method: string,
    readonly path: string,
    /** The HTTP status Caddy answered with. */
    readonly status: number,
    /** Caddy's `{"error": "..."}` message, or the raw body. */
    readonly detail: string,
  ) {
    super(`caddy admin ${method} ${path}: ${status} ${detail}`);
    this.name = 'CaddyAdminError';
  }

  /**
   * Caddy answers 500 when it rejects a config change (a bad path, an index out of bounds, a
   * module that fails to provision) and the change is rolled back: an answer, not an outage.
   * Only 502-504/429/408 (a proxy in front of the admin, or overload) are worth retrying.
   */
  get transient(): boolean {
    return this.status !== 500 && isTransientStatus(this.status);
  }
}

/**
 * The transient rule for the `caddy` dependency: Caddy's config rejections are answers (see
 * CaddyAdminError.transient); network errors and timeouts are transient as usual.
 * Wire it as `isTransient` of the caddy policy in resilience/policies.ts.
 */
export const isTransientCaddy: TransientClassifier = (error) =>
  error instanceof CaddyAdminError ? error.transient : isTransient(error);

export interface CaddyResponse {
  status: number;
  /** Parsed JSON body; `undefined` for an empty body. */
  body: unknown;
}

export interface CaddyRequest {
  /** Name for the guard's metrics and logs (e.g. `patchRoute`). */
  operation: string;
  method: 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';
  /** Admin API path, e.g. `/config/apps/http/servers/blytz` or `/id/blytz-alice`. */
  path: string;
  body?: unknown;
  /** Statuses returned to the caller instead of thrown (e.g. 404 from `/id/...`). 200 always is. */
  accept?: number[];
  /**
   * false for writes that are not safe to repeat: an insert whose answer was lost may already
   * have been applied, and 2.6.2 would silently accept the duplicate `@id` a retry creates.
   */
  retry?: boolean;
}

export interface CaddyAdminClientOptions {
  adminUrl: string;
  guard?: Guard;
  /** Injected for tests (counting writes); defaults to the global fetch. */
  fetch?: typeof fetch;
}

export class CaddyAdminClient {
  readonly #base: string;
  readonly #guard: Guard;
  readonly #fetch: typeof fetch;

  constructor(options: CaddyAdminClientOptions) {
    this.#base = options.adminUrl.replace(/\/+$/, '');
    this.#guard = options.guard ?? unguarded;
    this.#fetch = options.fetch ?? ((input, init) => fetch(input, init));
  }

  async request(req: CaddyRequest): Promise<CaddyResponse> {
    const accept = new Set([200, ...(req.accept ?? [])]);
    return this.#guard(
      req.operation,
      async (signal) => {
        // Connection: close: Caddy replaces its admin server on every config change (2.6.2
        // `replaceLocalAdminServer`), closing idle keep-alive connections; a pooled socket
        // reused right after a write then fails with "other side closed" (seen in the tests).
        // One fresh local connection per call costs far less than that race.
        const headers: Record<string, string> = { Connection: 'close' };
        const init: RequestInit = { method: req.method, signal, headers };
        if (req.body !== undefined) {
          init.body = JSON.stringify(req.body);
          headers['Content-Type'] = 'application/json';
        }
        const res = await this.#fetch(`${this.#base}${req.path}`, init);
        // 2.6.2 sends the ETag of GET /config/ as an HTTP trailer, which fetch cannot read, so
        // optimistic concurrency (If-Match) is not used; writes are serialised by the caller.
        const text = await res.text();
        const body = parseBody(text);
        if (!accept.has(res.status)) throw new CaddyAdminError(req.method, req.path, res.status, errorText(body, text));
        return { status: res.status, body };
      },
      req.retry === false ? { retry: false } : undefined,
    );
  }
}

function parseBody(text: string): unknown {
  if (text.trim() === '') return undefined;
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return text;
  }
}

/** Caddy's error bodies are `{"error": "..."}`. */
export function errorText(body: unknown, raw = ''): string {
  if (body !== null && typeof body === 'object' && typeof (body as { error?: unknown }).error === 'string') {
    return (body as { error: string }).error;
  }
  return raw.slice(0, 300);
}

/**
 * Caddy's answer when a path goes through a key that does not exist ("invalid traversal path")
 * or past the end of an array ("array index out of bounds"): 400 on reads, 500 on writes (2.6.2).
 */
export function isMissingPath(res: CaddyResponse): boolean {
  return (res.status === 400 || res.status === 500) && /invalid traversal path|index out of bounds/.test(errorText(res.body));
}
