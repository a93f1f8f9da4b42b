import { Writable } from 'node:stream';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { createLogger } from '../../src/observability/logger.js';
import { Metrics } from '../../src/observability/metrics.js';
import { CircuitOpenError, DependencyError, TimeoutError } from '../../src/resilience/guard.js';
import { Policies, type PolicyOptions } from '../../src/resilience/policies.js';
import { httpStatusOf, isTransient, isTransientDocker, isTransientStripe } from '../../src/resilience/transient.js';

/** An error shaped like dockerode's / stripe's: the status is on `statusCode`. */
function httpError(statusCode: number, message = `HTTP ${statusCode}`): Error {
  return Object.assign(new Error(message), { statusCode });
}

function networkError(code = 'ECONNREFUSED'): Error {
  return Object.assign(new Error(`connect ${code} 127.0.0.1:2019`), { code, syscall: 'connect' });
}

const FAST: Partial<PolicyOptions> = {
  minDelayMs: 1,
  maxDelayMs: 2,
  retries: 2,
  failureThreshold: 3,
  halfOpenAfterMs: 1_000,
  timeoutMs: 1_000,
};

function setup(overrides: Partial<PolicyOptions> = {}) {
  const metrics = new Metrics({ defaultMetrics: false });
  const policies = new Policies({ metrics, overrides: { caddy: { ...FAST, ...overrides } } });
  return { metrics, policies, guard: policies.guard('caddy') };
}

async function breakerGauge(metrics: Metrics, dependency: string): Promise<number | undefined> {
  const { values } = await metrics.breakerState.get();
  return values.find((v) => v.labels['dependency'] === dependency)?.value;
}

async function callCount(metrics: Metrics, labels: { dependency: string; operation: string; outcome: string }): Promise<number> {
  const { values } = await metrics.externalCallDuration.get();
  const sample = values.find(
    (v) =>
      v.metricName === 'blytz_external_call_duration_seconds_count' &&
      v.labels['dependency'] === labels.dependency &&
      v.labels['operation'] === labels.operation &&
      v.labels['outcome'] === labels.outcome,
  );
  return sample?.value ?? 0;
}

/** Makes `threshold` calls fail transiently (each after its retries). */
async function openBreaker(guard: ReturnType<Policies['guard']>, threshold: number): Promise<void> {
  for (let i = 0; i < threshold; i++) {
    await expect(guard('getRoutes', () => Promise.reject(httpError(502)))).rejects.toBeInstanceOf(DependencyError);
  }
}

afterEach(() => {
  vi.useRealTimers();
});

describe('transient classification', () => {
  it('treats network errors, timeouts, 5xx, 429 and 408 as transient', () => {
    expect(isTransient(networkError('ECONNREFUSED'))).toBe(true);
    expect(isTransient(networkError('ECONNRESET'))).toBe(true);
    // fetch: TypeError('fetch failed') whose cause carries the socket error
    expect(isTransient(new TypeError('fetch failed', { cause: networkError('ECONNREFUSED') }))).toBe(true);
    expect(isTransient(new TimeoutError('op', 10))).toBe(true);
    for (const status of [500, 502, 503, 504, 429, 408]) expect(isTransient(httpError(status))).toBe(true);
    // @kubernetes/client-node's ApiException carries the status on a numeric `code`
    expect(isTransient(Object.assign(new Error('boom'), { code: 503 }))).toBe(true);
  });

  it('treats answers (4xx) and programming errors as not transient', () => {
    for (const status of [400, 401, 403, 404, 409, 410, 422]) expect(isTransient(httpError(status))).toBe(false);
    expect(isTransient(new TypeError('x is not a function'))).toBe(false);
    expect(isTransient(new Error('plain'))).toBe(false);
    expect(isTransient(new DependencyError('docker', 'op', 'already wrapped'))).toBe(false);
  });

  it('docker: a port clash is a 500 but not transient', () => {
    expect(
      isTransientDocker(
        httpError(500, '(HTTP code 500) server error - Bind for 127.0.0.1:31000 failed: port is already allocated'),
      ),
    ).toBe(false);
    expect(isTransientDocker(httpError(500, 'listen tcp4 127.0.0.1:31000: bind: address already in use'))).toBe(false);
    expect(isTransientDocker(httpError(500, 'server error'))).toBe(true);
    expect(isTransientDocker(httpError(404, 'no such container'))).toBe(false);
    expect(
      isTransientDocker(Object.assign(new Error('connect ENOENT /var/run/docker.sock'), { code: 'ENOENT', syscall: 'connect' })),
    ).toBe(true);
  });

  it('stripe: by error type as well as status', () => {
    expect(isTransientStripe(Object.assign(new Error('conn'), { type: 'StripeConnectionError' }))).toBe(true);
    expect(isTransientStripe(Object.assign(new Error('rate'), { type: 'StripeRateLimitError', statusCode: 429 }))).toBe(true);
    expect(isTransientStripe(Object.assign(new Error('card'), { type: 'StripeCardError', statusCode: 402 }))).toBe(false);
    expect(isTransientStripe(Object.assign(new Error('idem'), { type: 'StripeIdempotencyError', statusCode: 400 }))).toBe(false);
  });

  it('reads the status from the usual places', () => {
    expect(httpStatusOf(Object.assign(new Error(), { status: 429 }))).toBe(429);
    expect(httpStatusOf(Object.assign(new Error(), { response: { status: 404 } }))).toBe(404);
    expect(httpStatusOf(new Error('outer', { cause: httpError(503) }))).toBe(503);
    expect(httpStatusOf(new Error('none'))).toBeUndefined();
  });
});

describe('retries', () => {
  it('retries a transient failure and returns the eventual result', async () => {
    const { guard, metrics } = setup();
    let calls = 0;
    const result = await guard('getRoutes', async () => {
      calls += 1;
      if (calls < 3) throw httpError(503);
      return 'ok';
    });
    expect(result).toBe('ok');
    expect(calls).toBe(3);
    expect(await callCount(metrics, { dependency: 'caddy', operation: 'getRoutes', outcome: 'transient_error' })).toBe(2);
    expect(await callCount(metrics, { dependency: 'caddy', operation: 'getRoutes', outcome: 'success' })).toBe(1);
  });

  it('does not retry an answer: a 404 passes through unchanged, once', async () => {
    const { guard, metrics } = setup();
    const notFound = httpError(404);
    let calls = 0;
    await expect(
      guard('getRoute', async () => {
        calls += 1;
        throw notFound;
      }),
    ).rejects.toBe(notFound);
    expect(calls).toBe(1);
    expect(await callCount(metrics, { dependency: 'caddy', operation: 'getRoute', outcome: 'error' })).toBe(1);
  });

  it('gives up after the retries with a DependencyError naming the dependency, cause = last error', async () => {
    const { guard } = setup({ retries: 3 });
    let calls = 0;
    const last = httpError(500, 'still down');
    const error = await guard('putRoute', async () => {
      calls += 1;
      throw calls === 4 ? last : httpError(500);
    }).catch((e: unknown) => e);
    expect(calls).toBe(4);
    expect(error).toBeInstanceOf(DependencyError);
    expect((error as DependencyError).dependency).toBe('caddy');
    expect((error as DependencyError).operation).toBe('putRoute');
    expect((error as DependencyError).message).toContain('caddy');
    expect((error as DependencyError).cause).toBe(last);
  });

  it('shouldRetry limits which transient failures are retried; the others still count against the breaker', async () => {
    // The model providers' rule: only a request that never left is sent again.
    const { guard, policies } = setup({ shouldRetry: (e) => (e as { syscall?: string }).syscall === 'connect' });
    let calls = 0;
    await expect(
      guard('chat', async () => {
        calls += 1;
        if (calls === 1) throw networkError();
        return 'answered';
      }),
    ).resolves.toBe('answered');
    expect(calls).toBe(2);
    calls = 0;
    for (let i = 0; i < 3; i++) {
      await expect(
        guard('chat', async () => {
          calls += 1;
          throw httpError(500);
        }),
      ).rejects.toBeInstanceOf(DependencyError);
    }
    expect(calls).toBe(3);
    expect(policies.states()['caddy']).toBe('open');
  });

  it('retry: false makes a single attempt', async () => {
    const { guard } = setup();
    let calls = 0;
    await expect(
      guard(
        'exec',
        async () => {
          calls += 1;
          throw httpError(503);
        },
        { retry: false },
      ),
    ).rejects.toBeInstanceOf(DependencyError);
    expect(calls).toBe(1);
  });

  it('times out an attempt, aborts its signal, and retries it', async () => {
    const { guard, metrics } = setup({ timeoutMs: 20, retries: 1 });
    const signals: AbortSignal[] = [];
    const error = await guard('slow', (signal) => {
      signals.push(signal);
      return new Promise<never>(() => {}); // never settles, ignores the signal
    }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(DependencyError);
    expect((error as DependencyError).cause).toBeInstanceOf(TimeoutError);
    expect(signals).toHaveLength(2);
    expect(signals.every((s) => s.aborted && s.reason instanceof TimeoutError)).toBe(true);
    expect(await callCount(metrics, { dependency: 'caddy', operation: 'slow', outcome: 'timeout' })).toBe(2);
  });

  it('reports a timeout even when fn rejects with its own AbortError first', async () => {
    const { guard } = setup({ timeoutMs: 20, retries: 0 });
    const error = await guard(
      'fetch',
      (signal) =>
        new Promise<never>((_, reject) => {
          signal.addEventListener('abort', () => reject(new DOMException('aborted', 'AbortError')));
        }),
    ).catch((e: unknown) => e);
    expect((error as DependencyError).cause).toBeInstanceOf(TimeoutError);
  });
});

describe('circuit breaker', () => {
  it('opens after consecutive failed calls and then fails fast without calling out', async () => {
    const { guard, policies, metrics } = setup({ failureThreshold: 3 });
    expect(policies.states()).toEqual({
      stripe: 'closed',
      telegram: 'closed',
      docker: 'closed',
      caddy: 'closed',
      kubernetes: 'closed',
      openai: 'closed',
      anthropic: 'closed',
      backup: 'closed',
    });
    expect(await breakerGauge(metrics, 'caddy')).toBe(0);

    await openBreaker(guard, 3);
    expect(policies.states()['caddy']).toBe('open');
    expect(policies.states()['docker']).toBe('closed'); // one breaker per dependency
    expect(await breakerGauge(metrics, 'caddy')).toBe(2);

    let called = false;
    const error = await guard('getRoutes', async () => {
      called = true;
      return 'never';
    }).catch((e: unknown) => e);
    expect(called).toBe(false);
    expect(error).toBeInstanceOf(CircuitOpenError);
    expect(error).toBeInstanceOf(DependencyError);
    expect((error as DependencyError).dependency).toBe('caddy');
    expect((error as Error).message).toMatch(/^caddy getRoutes: circuit breaker is open/);
    expect(await callCount(metrics, { dependency: 'caddy', operation: 'getRoutes', outcome: 'circuit_open' })).toBe(1);
  });

  it('answers (4xx) do not count as failures and reset the count', async () => {
    const { guard, policies } = setup({ failureThreshold: 3 });
    for (let i = 0; i < 10; i++) {
      await expect(guard('getRoute', () => Promise.reject(httpError(404)))).rejects.toMatchObject({ statusCode: 404 });
    }
    expect(policies.states()['caddy']).toBe('closed');
    await openBreaker(guard, 2);
    await expect(guard('getRoute', () => Promise.reject(httpError(409)))).rejects.toMatchObject({ statusCode: 409 });
    await openBreaker(guard, 2);
    expect(policies.states()['caddy']).toBe('closed'); // 2 + answer + 2: never 3 in a row
  });

  it('goes half-open after halfOpenAfter, lets one trial call through, and closes when it succeeds', async () => {
    vi.useFakeTimers({ toFake: ['Date'] }); // the breaker reads Date.now(); everything else runs for real
    const { guard, policies, metrics } = setup({ failureThreshold: 3, halfOpenAfterMs: 10_000 });
    await openBreaker(guard, 3);
    await expect(guard('getRoutes', async () => 'x')).rejects.toBeInstanceOf(CircuitOpenError);

    vi.setSystemTime(Date.now() + 10_001);
    let finishTrial!: (value: string) => void;
    const trial = guard('getRoutes', () => new Promise<string>((resolve) => (finishTrial = resolve)));
    await vi.waitUntil(() => finishTrial !== undefined);
    expect(policies.states()['caddy']).toBe('halfOpen');
    expect(await breakerGauge(metrics, 'caddy')).toBe(1);

    finishTrial('back');
    expect(await trial).toBe('back');
    expect(policies.states()['caddy']).toBe('closed');
    expect(await breakerGauge(metrics, 'caddy')).toBe(0);
    expect(await guard('getRoutes', async () => 'ok')).toBe('ok');
  });

  it('logs the first opening and the closing, the open/half-open cycle in between at debug, and tells the failure log of successes', async () => {
    vi.useFakeTimers({ toFake: ['Date'] });
    const lines: Array<[string, string]> = [];
    const LEVELS: Record<number, string> = { 20: 'debug', 30: 'info', 40: 'warn' };
    const logger = createLogger({
      level: 'debug',
      destination: new Writable({
        write(chunk: Buffer, _encoding, callback) {
          const { level, msg } = JSON.parse(chunk.toString()) as { level: number; msg: string };
          lines.push([LEVELS[level] ?? String(level), msg]);
          callback();
        },
      }),
    });
    const successes: string[] = [];
    const policies = new Policies({
      logger,
      failureLog: { success: (dependency) => void successes.push(dependency) },
      overrides: { caddy: { ...FAST, failureThreshold: 3, halfOpenAfterMs: 10_000, retries: 0 } },
    });
    const guard = policies.guard('caddy');
    await openBreaker(guard, 3);
    for (let cycle = 0; cycle < 3; cycle++) {
      vi.setSystemTime(Date.now() + 10_001);
      await expect(guard('getRoutes', () => Promise.reject(networkError()))).rejects.toBeInstanceOf(DependencyError);
    }
    expect(successes).toEqual([]);
    vi.setSystemTime(Date.now() + 10_001);
    expect(await guard('getRoutes', async () => 'back')).toBe('back');
    expect(successes).toEqual(['caddy']);
    expect(lines).toEqual([
      ['warn', 'circuit breaker for caddy opened: failing fast for 10000 ms'],
      ...Array.from({ length: 3 }, () => [
        ['debug', 'circuit breaker for caddy is halfOpen'],
        ['debug', 'circuit breaker for caddy is open'],
      ]).flat(),
      ['debug', 'circuit breaker for caddy is halfOpen'],
      ['info', 'circuit breaker for caddy closed'],
    ]);
  });

  it('reopens when the half-open trial fails', async () => {
    vi.useFakeTimers({ toFake: ['Date'] });
    const { guard, policies, metrics } = setup({ failureThreshold: 3, halfOpenAfterMs: 10_000, retries: 0 });
    await openBreaker(guard, 3);
    vi.setSystemTime(Date.now() + 10_001);
    await expect(guard('getRoutes', () => Promise.reject(networkError()))).rejects.toBeInstanceOf(DependencyError);
    expect(policies.states()['caddy']).toBe('open');
    expect(await breakerGauge(metrics, 'caddy')).toBe(2);
    await expect(guard('getRoutes', async () => 'x')).rejects.toBeInstanceOf(CircuitOpenError);
  });
});
