/**
 * How an adapter makes an external call: `guard('createContainer', (signal) => ...)`. The real
 * guard (resilience/policies.ts) adds a timeout, retries for transient failures, a circuit
 * breaker and metrics per dependency; adapters only see this function type.
 *
 * `options` is optional, so a plain `(operation, fn) => ...` stays a valid Guard.
 */
export type Guard = <T>(operation: string, fn: (signal: AbortSignal) => Promise<T>, options?: GuardOptions) => Promise<T>;

export interface GuardOptions {
  /**
   * false: never retried, because repeating it is not safe or not meaningful (an exec that may
   * already have had its effect, a create whose second attempt would only meet a name conflict).
   * Default true.
   */
  retry?: boolean;
  /** Per-attempt timeout for this call, overriding the dependency's default (a slow exec, a stop with grace period). */
  timeoutMs?: number;
}

/** No timeout, retry or breaker: for tests of an adapter on its own. */
export const unguarded: Guard = (_operation, fn) => fn(new AbortController().signal);

/** An external dependency failed or its breaker is open; names the dependency for status and /readyz. */
export class DependencyError extends Error {
  constructor(
    readonly dependency: string,
    readonly operation: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(`${dependency} ${operation}: ${message}`, options);
    this.name = 'DependencyError';
  }
}

/** The breaker of `dependency` is open: the call was not made. */
export class CircuitOpenError extends DependencyError {
  constructor(dependency: string, operation: string, options?: { cause?: unknown }) {
    super(dependency, operation, 'circuit breaker is open after repeated failures; failing fast', options);
    this.name = 'CircuitOpenError';
  }
}

/** One attempt took longer than its timeout (the attempt's signal is aborted with this reason). */
export class TimeoutError extends Error {
  constructor(
    readonly operation: string,
    readonly timeoutMs: number,
  ) {
    super(`${operation} did not finish within ${timeoutMs} ms`);
    this.name = 'TimeoutError';
  }
}

/**
 * The dependency an error comes from: a DependencyError's own, else one found along its `cause`
 * chain (a reconcile step that failed because Caddy did). Undefined for any other error.
 */
export function dependencyOf(error: unknown): string | undefined {
  let e: unknown = error;
  for (let depth = 0; depth < 5 && e instanceof Error; depth++) {
    if (e instanceof DependencyError) return e.dependency;
    e = e.cause;
  }
  return undefined;
}
