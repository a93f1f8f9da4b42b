import { maskSecrets } from './logger.js';

/**
 * Readiness checks: each names a dependency and throws when it is not usable. `/readyz` runs
 * them all at once, each bounded by a timeout, and answers 503 when any fails.
 */
export type HealthCheck = (signal: AbortSignal) => Promise<void>;

export interface HealthReport {
  status: 'ok' | 'fail';
  checks: Record<string, { status: 'ok' | 'fail'; message?: string; latencyMs: number }>;
}

export class HealthChecks {
  readonly #checks = new Map<string, HealthCheck>();

  add(name: string, check: HealthCheck): void {
    this.#checks.set(name, check);
  }

  async run(timeoutMs = 2000): Promise<HealthReport> {
    const entries = await Promise.all(
      [...this.#checks].map(async ([name, check]) => {
        const started = performance.now();
        const signal = AbortSignal.timeout(timeoutMs);
        try {
          await Promise.race([
            check(signal),
            new Promise((_, reject) =>
              signal.addEventListener('abort', () => reject(new Error(`no answer within ${timeoutMs} ms`))),
            ),
          ]);
          return [name, { status: 'ok' as const, latencyMs: Math.round(performance.now() - started) }] as const;
        } catch (error) {
          return [
            name,
            // /readyz answers anyone: a dependency's error text is masked like a log line (a
            // connection string or token inside it never leaves).
            {
              status: 'fail' as const,
              message: maskSecrets((error as Error).message),
              latencyMs: Math.round(performance.now() - started),
            },
          ] as const;
        }
      }),
    );
    const checks = Object.fromEntries(entries);
    const status = entries.every(([, r]) => r.status === 'ok') ? 'ok' : 'fail';
    return { status, checks };
  }
}
