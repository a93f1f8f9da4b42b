import { DependencyError, TimeoutError } from './guard.js';

/**
 * Which failures are worth retrying, and count against a dependency's circuit breaker.
 * Transient: the dependency did not answer (network errors, timeouts) or said "not now"
 * (5xx, 429, 408). Everything else (404, 409, 400, 401, validation) is an answer: retrying
 * changes nothing, it says nothing about the dependency's health, and the caller must see the
 * error unchanged to handle it.
 */
export type TransientClassifier = (error: unknown) => boolean;

// Socket-level failures seen from Node's net/http, undici (fetch) and DNS.
const NETWORK_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ECONNABORTED',
  'ETIMEDOUT',
  'EPIPE',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENETDOWN',
  'EAI_AGAIN',
  'ENOTFOUND',
  'UND_ERR_CONNECT_TIMEOUT',
  'UND_ERR_HEADERS_TIMEOUT',
  'UND_ERR_BODY_TIMEOUT',
  'UND_ERR_SOCKET',
  'UND_ERR_CLOSED',
]);

interface ErrorLike {
  code?: unknown;
  status?: unknown;
  statusCode?: unknown;
  syscall?: unknown;
  type?: unknown;
  message?: unknown;
  response?: { status?: unknown; statusCode?: unknown };
  cause?: unknown;
}

/** The error and its causes, outermost first (bounded: cause chains can be cyclic). */
function chain(error: unknown): ErrorLike[] {
  const out: ErrorLike[] = [];
  let current: unknown = error;
  while (current !== null && typeof current === 'object' && out.length < 6) {
    out.push(current as ErrorLike);
    current = (current as ErrorLike).cause;
  }
  return out;
}

function asStatus(value: unknown): number | undefined {
  return typeof value === 'number' && value >= 100 && value <= 599 ? value : undefined;
}

/**
 * The HTTP status an error carries: `statusCode` (dockerode, stripe), `status` (fetch wrappers),
 * numeric `code` (@kubernetes/client-node's ApiException) or `response.status`.
 */
export function httpStatusOf(error: unknown): number | undefined {
  for (const e of chain(error)) {
    const status =
      asStatus(e.statusCode) ??
      asStatus(e.status) ??
      asStatus(e.code) ??
      asStatus(e.response?.status) ??
      asStatus(e.response?.statusCode);
    if (status !== undefined) return status;
  }
  return undefined;
}

export function isNetworkError(error: unknown): boolean {
  return chain(error).some(
    (e) =>
      (typeof e.code === 'string' && NETWORK_CODES.has(e.code)) ||
      // A failed connect is always "not there right now", whatever its code (ENOENT for a
      // Unix socket that is being recreated by a restarting engine).
      e.syscall === 'connect',
  );
}

export function isTransientStatus(status: number): boolean {
  return status >= 500 || status === 429 || status === 408;
}

/** The default rule: timeouts, network errors, 5xx, 429 and 408. */
export const isTransient: TransientClassifier = (error) => {
  if (error instanceof DependencyError) return false; // already decided by an inner guard
  if (error instanceof TimeoutError) return true;
  const status = httpStatusOf(error);
  if (status !== undefined) return isTransientStatus(status);
  return isNetworkError(error);
};

const PORT_CLASH = /port is already allocated|address already in use/i;

/**
 * Docker: a port clash is a 500, but retrying cannot help: the caller must pick another port.
 * (runtime's PortClashError carries no status, so the default rule already passes it through.)
 */
export const isTransientDocker: TransientClassifier = (error) => {
  if (chain(error).some((e) => typeof e.message === 'string' && PORT_CLASH.test(e.message))) return false;
  return isTransient(error);
};

export function isPortClashMessage(message: string): boolean {
  return PORT_CLASH.test(message);
}

/**
 * Model providers (the model gateway's upstreams): a 5xx (529 "overloaded" included), a timeout or
 * a network error counts against the breaker; a 429 is the provider's answer for this caller
 * (rate limit, quota) and says nothing about its health.
 */
export const isTransientModelProvider: TransientClassifier = (error) => {
  if (error instanceof DependencyError) return false;
  if (error instanceof TimeoutError) return true;
  const status = httpStatusOf(error);
  if (status !== undefined) return status >= 500;
  return isNetworkError(error);
};

// Failures before a connection existed: the request never reached the provider.
const NOT_CONNECTED_CODES = new Set([
  'ECONNREFUSED',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENETDOWN',
  'EAI_AGAIN',
  'ENOTFOUND',
  'UND_ERR_CONNECT_TIMEOUT',
]);

/**
 * Which model provider failures the gateway retries itself: only those where nothing was sent.
 * A model request is not idempotent (a repeat is generated and billed again), so a 5xx or a
 * timeout goes back to the assistant, whose SDK retries with its own back-off, as it would
 * against the provider.
 */
export const isRetryableModelProvider: TransientClassifier = (error) =>
  !(error instanceof DependencyError) &&
  chain(error).some((e) => e.syscall === 'connect' || (typeof e.code === 'string' && NOT_CONNECTED_CODES.has(e.code)));

/** Stripe: its error classes name the kind of failure even when no status is present. */
export const isTransientStripe: TransientClassifier = (error) => {
  const type = chain(error)[0]?.type;
  if (type === 'StripeConnectionError' || type === 'StripeRateLimitError' || type === 'StripeAPIError') return true;
  // An idempotency-key clash is a programming error, not a passing condition.
  if (type === 'StripeIdempotencyError') return false;
  return isTransient(error);
};
