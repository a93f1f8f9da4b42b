import type { Logger } from './logger.js';

/**
 * Repeated failures of one dependency, collapsed. While Caddy (or Docker, or Stripe) is down,
 * every route sweep and every reconcile fails the same way; logging each one would bury
 * everything else under one stack trace per second. Instead, per dependency:
 *
 * - the first failure: one warn line with the error's message (no stack: a refused connection
 *   has nothing to say in one, and errors that are not a dependency's are logged by their caller
 *   with theirs);
 * - while failures go on: at most one warn line per window, saying how many failed since the
 *   last line; the window doubles each time (10 s, 20 s, 40 s ... 5 min);
 * - the first success after that: one info line saying it answers again, and for how long it
 *   did not.
 *
 * The clock is injected, so tests need no timers.
 */

export interface FailureLogOptions {
  now?: () => number;
  /** Quiet period after the first line of a streak; doubled after every later line. */
  firstWindowMs?: number;
  maxWindowMs?: number;
}

interface Streak {
  since: number;
  failures: number;
  /** Failures since the last line written. */
  unreported: number;
  lastLineAt: number;
  windowMs: number;
}

export class FailureLog {
  readonly #logger: Pick<Logger, 'warn' | 'info'>;
  readonly #now: () => number;
  readonly #firstWindowMs: number;
  readonly #maxWindowMs: number;
  readonly #streaks = new Map<string, Streak>();

  constructor(logger: Pick<Logger, 'warn' | 'info'>, options: FailureLogOptions = {}) {
    this.#logger = logger;
    this.#now = options.now ?? Date.now;
    this.#firstWindowMs = options.firstWindowMs ?? 10_000;
    this.#maxWindowMs = options.maxWindowMs ?? 300_000;
  }

  /** `what` says what was being done ("route sweep failed"); `fields` go into the line as they are. */
  failure(dependency: string, what: string, error: unknown, fields: Record<string, unknown> = {}): void {
    const now = this.#now();
    const message = errorMessage(error);
    const streak = this.#streaks.get(dependency);
    if (!streak) {
      this.#streaks.set(dependency, { since: now, failures: 1, unreported: 0, lastLineAt: now, windowMs: this.#firstWindowMs });
      this.#logger.warn({ ...fields, dependency, failure: message }, `${what}: ${message}`);
      return;
    }
    streak.failures++;
    streak.unreported++;
    if (now - streak.lastLineAt < streak.windowMs) return;
    const quiet = now - streak.lastLineAt;
    const count = streak.unreported;
    streak.unreported = 0;
    streak.lastLineAt = now;
    streak.windowMs = Math.min(streak.windowMs * 2, this.#maxWindowMs);
    this.#logger.warn(
      { ...fields, dependency, failure: message, failures: streak.failures, failingForMs: now - streak.since },
      `${dependency} still failing: ${count} more ${count === 1 ? 'failure' : 'failures'} in ${duration(quiet)} ` +
        `(latest: ${what}: ${message}); next report in ${duration(streak.windowMs)} unless it recovers`,
    );
  }

  /** A call to `dependency` worked: ends its streak, with one line if there was one. Cheap when none. */
  success(dependency: string): void {
    const streak = this.#streaks.get(dependency);
    if (!streak) return;
    this.#streaks.delete(dependency);
    const failingForMs = this.#now() - streak.since;
    this.#logger.info(
      { dependency, failures: streak.failures, failingForMs },
      `${dependency} answers again after ${streak.failures} ${streak.failures === 1 ? 'failure' : 'failures'} over ${duration(failingForMs)}`,
    );
  }

  /** Whether `dependency` is in a failure streak. */
  failing(dependency: string): boolean {
    return this.#streaks.has(dependency);
  }
}

function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** `850ms`, `12s`, `3m20s`, `2h5m`: short and exact enough for a log line. */
export function duration(ms: number): string {
  if (ms < 1000) return `${Math.max(0, Math.round(ms))}ms`;
  const seconds = Math.round(ms / 1000);
  if (seconds < 60) return `${seconds}s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return seconds % 60 === 0 ? `${minutes}m` : `${minutes}m${seconds % 60}s`;
  const hours = Math.floor(minutes / 60);
  return minutes % 60 === 0 ? `${hours}h` : `${hours}h${minutes % 60}m`;
}
