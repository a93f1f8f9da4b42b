/**
 * How an adapter makes an external call: `guard('createContainer', (signal) => ...)`. The real
 * guard (resilience/policies.ts) adds a timeout, retries for transient failures, a circuit
 * breaker and metrics per dependency; adapters only see this function type.
 */
export type Guard = <T>(operation: string, fn: (signal: AbortSignal) => Promise<T>) => Promise<T>;

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
