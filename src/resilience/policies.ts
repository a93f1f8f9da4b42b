import {
  BrokenCircuitError,
  CircuitState,
  ConsecutiveBreaker,
  circuitBreaker,
  handleAll,
  IsolatedCircuitError,
  type CircuitBreakerPolicy,
} from 'cockatiel';
import pRetry from 'p-retry';
import type { FailureLog } from '../observability/failure-log.js';
import type { Logger } from '../observability/logger.js';
import type { Metrics } from '../observability/metrics.js';
import { CircuitOpenError, DependencyError, TimeoutError, type Guard, type GuardOptions } from './guard.js';
import {
  isRetryableModelProvider,
  isTransient,
  isTransientDocker,
  isTransientModelProvider,
  isTransientStripe,
  type TransientClassifier,
} from './transient.js';

/**
 * One policy per external dependency: per-attempt timeout, retries with exponential backoff and
 * jitter for transient failures only (p-retry), and a consecutive-failure circuit breaker
 * (cockatiel) around the whole retried call, so "N failed calls open it", not N attempts.
 *
 *   breaker( retry( timeout( fn ) ) )
 *
 * Errors that are answers (404, 409, validation, a port clash) pass through unchanged and count
 * as a success for the breaker: the dependency is up, it just said no. Transient failures that
 * survive the retries become a DependencyError naming the dependency (cause: the last error);
 * an open breaker fails fast with CircuitOpenError (a DependencyError) without calling out.
 */

export const DEPENDENCIES = ['stripe', 'telegram', 'docker', 'caddy', 'kubernetes', 'openai', 'anthropic', 'backup'] as const;
export type Dependency = (typeof DEPENDENCIES)[number];

export type BreakerState = 'closed' | 'halfOpen' | 'open';

/** Values of `blytz_circuit_breaker_state` (contract section 6). */
export const BREAKER_STATE_VALUE: Record<BreakerState, number> = { closed: 0, halfOpen: 1, open: 2 };

/** `outcome` label of `blytz_external_call_duration_seconds`, one sample per attempt. */
export type CallOutcome = 'success' | 'error' | 'transient_error' | 'timeout' | 'circuit_open';

export interface PolicyOptions {
  /** Per attempt. */
  timeoutMs: number;
  /** Retries after the first attempt, for transient failures only. */
  retries: number;
  /** First backoff; doubles per retry, randomized x1..x2 (jitter) so callers do not stampede. */
  minDelayMs: number;
  maxDelayMs: number;
  /** Consecutive failed calls (after their retries) that open the breaker. */
  failureThreshold: number;
  /** How long an open breaker fails fast before letting one trial call through (half-open). */
  halfOpenAfterMs: number;
  isTransient: TransientClassifier;
  /** Which transient failures are retried (default: all); the others still count against the breaker. */
  shouldRetry?: TransientClassifier;
}

/**
 * Why these numbers: Docker is local, but `stop` waits out the container's grace period, so its
 * timeout is generous; Caddy is local and fast; Stripe and Telegram are remote and rate limited,
 * so they back off longer and stay open longer; the Kubernetes API is usually in-cluster. Model
 * providers (the model gateway's upstreams) answer a stream's headers within seconds but a whole
 * JSON answer only when generated, so their per-call timeout is set per request (gateway.ts); a
 * request is retried only when it never left (isRetryableModelProvider); the
 * backup store moves whole archives.
 */
export const DEFAULT_POLICIES: Readonly<Record<Dependency, PolicyOptions>> = {
  docker: {
    timeoutMs: 30_000,
    retries: 2,
    minDelayMs: 200,
    maxDelayMs: 2_000,
    failureThreshold: 5,
    halfOpenAfterMs: 10_000,
    isTransient: isTransientDocker,
  },
  caddy: {
    timeoutMs: 5_000,
    retries: 2,
    minDelayMs: 100,
    maxDelayMs: 1_000,
    failureThreshold: 5,
    halfOpenAfterMs: 5_000,
    isTransient,
  },
  stripe: {
    timeoutMs: 20_000,
    retries: 2,
    minDelayMs: 500,
    maxDelayMs: 4_000,
    failureThreshold: 5,
    halfOpenAfterMs: 30_000,
    isTransient: isTransientStripe,
  },
  telegram: {
    timeoutMs: 10_000,
    retries: 2,
    minDelayMs: 300,
    maxDelayMs: 3_000,
    failureThreshold: 5,
    halfOpenAfterMs: 15_000,
    isTransient,
  },
  kubernetes: {
    timeoutMs: 15_000,
    retries: 3,
    minDelayMs: 200,
    maxDelayMs: 3_000,
    failureThreshold: 5,
    halfOpenAfterMs: 10_000,
    isTransient,
  },
  openai: {
    timeoutMs: 600_000,
    retries: 2,
    minDelayMs: 100,
    maxDelayMs: 1_000,
    failureThreshold: 5,
    halfOpenAfterMs: 15_000,
    isTransient: isTransientModelProvider,
    shouldRetry: isRetryableModelProvider,
  },
  anthropic: {
    timeoutMs: 600_000,
    retries: 2,
    minDelayMs: 100,
    maxDelayMs: 1_000,
    failureThreshold: 5,
    halfOpenAfterMs: 15_000,
    isTransient: isTransientModelProvider,
    shouldRetry: isRetryableModelProvider,
  },
  // The backup archive store (a local folder, or S3): uploads are large, so each attempt may take
  // long (an upload passes its own longer timeout); a store that is down opens the breaker after
  // three failed backups, and one trial goes through every 30 s.
  backup: {
    timeoutMs: 60_000,
    retries: 2,
    minDelayMs: 500,
    maxDelayMs: 5_000,
    failureThreshold: 3,
    halfOpenAfterMs: 30_000,
    isTransient,
  },
};

export interface PoliciesOptions {
  metrics?: Pick<Metrics, 'breakerState' | 'externalCallDuration'>;
  logger?: Pick<Logger, 'warn' | 'info' | 'debug'>;
  /** Told of every successful call, so a dependency's failure streak ends with one line. */
  failureLog?: Pick<FailureLog, 'success'>;
  /** Per-dependency changes to the defaults (tests use short delays). */
  overrides?: Partial<Record<Dependency, Partial<PolicyOptions>>>;
}

function toBreakerState(state: CircuitState): BreakerState {
  switch (state) {
    case CircuitState.Closed:
      return 'closed';
    case CircuitState.HalfOpen:
      return 'halfOpen';
    default:
      return 'open'; // Open, and Isolated (held open by hand)
  }
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** The result of the breaker-wrapped part: an answer that is not a success is carried out, not thrown. */
type Settled<T> = { value: T } | { answer: unknown };

export class DependencyPolicy {
  readonly #breaker: CircuitBreakerPolicy;
  readonly #options: PolicyOptions;
  readonly #metrics: PoliciesOptions['metrics'];
  readonly #failureLog: PoliciesOptions['failureLog'];

  constructor(
    readonly dependency: Dependency,
    options: PolicyOptions,
    metrics?: PoliciesOptions['metrics'],
    logger?: PoliciesOptions['logger'],
    failureLog?: PoliciesOptions['failureLog'],
  ) {
    this.#options = options;
    this.#metrics = metrics;
    this.#failureLog = failureLog;
    this.#breaker = circuitBreaker(handleAll, {
      halfOpenAfter: options.halfOpenAfterMs,
      breaker: new ConsecutiveBreaker(options.failureThreshold),
    });
    metrics?.breakerState.set({ dependency }, BREAKER_STATE_VALUE.closed);
    let previous: BreakerState = 'closed';
    this.#breaker.onStateChange((state) => {
      const name = toBreakerState(state);
      metrics?.breakerState.set({ dependency }, BREAKER_STATE_VALUE[name]);
      // Opening and closing are news; the open -> half-open -> open cycle of a dependency that
      // stays down (every halfOpenAfterMs) is not: it shows in the metric and /readyz.
      if (name === 'open' && previous === 'closed')
        logger?.warn({ dependency }, `circuit breaker for ${dependency} opened: failing fast for ${options.halfOpenAfterMs} ms`);
      else if (name === 'closed') logger?.info({ dependency }, `circuit breaker for ${dependency} closed`);
      else logger?.debug({ dependency }, `circuit breaker for ${dependency} is ${name}`);
      previous = name;
    });
  }

  get state(): BreakerState {
    return toBreakerState(this.#breaker.state);
  }

  /** The Guard adapters of this dependency receive. */
  readonly guard: Guard = (operation, fn, options) => this.#call(operation, fn, options);

  async #call<T>(operation: string, fn: (signal: AbortSignal) => Promise<T>, options: GuardOptions = {}): Promise<T> {
    const { isTransient: transient, shouldRetry = transient } = this.#options;
    const timeoutMs = options.timeoutMs ?? this.#options.timeoutMs;
    let settled: Settled<T>;
    try {
      settled = await this.#breaker.execute(async (): Promise<Settled<T>> => {
        try {
          const value = await pRetry(() => this.#attempt(operation, fn, timeoutMs), {
            retries: options.retry === false ? 0 : this.#options.retries,
            factor: 2,
            minTimeout: this.#options.minDelayMs,
            maxTimeout: this.#options.maxDelayMs,
            randomize: true,
            shouldRetry: ({ error }) => transient(error) && shouldRetry(error),
          });
          return { value };
        } catch (error) {
          if (transient(error)) throw error; // counts against the breaker
          return { answer: error };
        }
      });
    } catch (error) {
      if (error instanceof BrokenCircuitError || error instanceof IsolatedCircuitError) {
        this.#observe(operation, 'circuit_open', 0);
        throw new CircuitOpenError(this.dependency, operation, {
          cause: this.#breaker.lastFailure && 'error' in this.#breaker.lastFailure ? this.#breaker.lastFailure.error : error,
        });
      }
      throw new DependencyError(this.dependency, operation, messageOf(error), { cause: error });
    }
    if ('answer' in settled) throw settled.answer;
    return settled.value;
  }

  /** One call with its own timeout; the signal handed to `fn` is aborted when it expires. */
  async #attempt<T>(operation: string, fn: (signal: AbortSignal) => Promise<T>, timeoutMs: number): Promise<T> {
    const controller = new AbortController();
    const started = performance.now();
    let timer: NodeJS.Timeout | undefined;
    // fn may ignore its signal, so the timeout also wins the race on its own.
    const expired = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        const error = new TimeoutError(operation, timeoutMs);
        controller.abort(error);
        reject(error);
      }, timeoutMs);
    });
    try {
      const value = await Promise.race([fn(controller.signal), expired]);
      this.#observe(operation, 'success', performance.now() - started);
      this.#failureLog?.success(this.dependency);
      return value;
    } catch (caught) {
      // An fn that honours the signal may reject with its own AbortError first: report the timeout.
      const error =
        controller.signal.aborted && controller.signal.reason instanceof TimeoutError ? controller.signal.reason : caught;
      const outcome: CallOutcome =
        error instanceof TimeoutError ? 'timeout' : this.#options.isTransient(error) ? 'transient_error' : 'error';
      this.#observe(operation, outcome, performance.now() - started);
      throw error;
    } finally {
      clearTimeout(timer);
    }
  }

  #observe(operation: string, outcome: CallOutcome, ms: number): void {
    this.#metrics?.externalCallDuration.observe({ dependency: this.dependency, operation, outcome }, ms / 1000);
  }
}

/** All dependencies' policies; `main` creates one and hands each adapter its guard. */
export class Policies {
  readonly #policies: Record<Dependency, DependencyPolicy>;

  constructor(options: PoliciesOptions = {}) {
    const make = (dependency: Dependency) =>
      new DependencyPolicy(
        dependency,
        { ...DEFAULT_POLICIES[dependency], ...options.overrides?.[dependency] },
        options.metrics,
        options.logger,
        options.failureLog,
      );
    this.#policies = {
      stripe: make('stripe'),
      telegram: make('telegram'),
      docker: make('docker'),
      caddy: make('caddy'),
      kubernetes: make('kubernetes'),
      openai: make('openai'),
      anthropic: make('anthropic'),
      backup: make('backup'),
    };
  }

  policy(dependency: Dependency): DependencyPolicy {
    return this.#policies[dependency];
  }

  guard(dependency: Dependency): Guard {
    return this.#policies[dependency].guard;
  }

  /** For /readyz `breakers`. */
  states(): Record<string, BreakerState> {
    return Object.fromEntries(DEPENDENCIES.map((d) => [d, this.#policies[d].state]));
  }
}
