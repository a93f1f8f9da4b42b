import { afterEach, describe, expect, it } from 'vitest';
import { Metrics } from '../../src/observability/metrics.js';
import {
  Controller,
  NotLeaderError,
  ReconcileTimeoutError,
  TerminalError,
  isTerminal,
  type ControllerOptions,
  type Reconciler,
} from '../../src/controller/controller.js';
import type { Leadership } from '../../src/controller/leadership.js';
import { changeFeedSource } from '../../src/controller/change-feed-source.js';
import type { ChangeFeed, ChangeListener } from '../../src/store/change-feed.js';
import { waitFor } from '../support/wait-for.js';

const controllers: Controller[] = [];

afterEach(async () => {
  await Promise.all(controllers.splice(0).map((c) => c.stop()));
});

function makeController(
  reconcile: Reconciler['reconcile'],
  { listKeys = async () => [], invalidate, ...options }: Partial<ControllerOptions> & Partial<Omit<Reconciler, 'reconcile'>> = {},
): { controller: Controller; metrics: Metrics } {
  const metrics = new Metrics({ defaultMetrics: false });
  const controller = new Controller({
    name: 'test',
    reconciler: { reconcile, listKeys, ...(invalidate ? { invalidate } : {}) },
    workers: 4,
    resyncSeconds: 0,
    drainTimeoutMs: 1000,
    metrics,
    queue: { baseDelayMs: 1, maxDelayMs: 50 },
    ...options,
  });
  controllers.push(controller);
  return { controller, metrics };
}

async function count(metrics: Metrics, name: string, labels: Record<string, string> = {}): Promise<number> {
  const metric = (await metrics.registry.getMetricsAsJSON()).find((m) => m.name === name);
  const sample = metric?.values.find((v) => Object.entries(labels).every(([k, value]) => v.labels[k] === value));
  return sample?.value ?? 0;
}

/** A leadership the test flips by hand. */
class ManualLeadership implements Leadership {
  leading = false;
  readonly #listeners = new Set<(leading: boolean) => void>();
  isLeader(): boolean {
    return this.leading;
  }
  onChange(listener: (leading: boolean) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }
  set(leading: boolean): void {
    this.leading = leading;
    for (const listener of this.#listeners) listener(leading);
  }
}

const tick = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

describe('Controller', () => {
  it('backs off a failing key and recovers, resetting its backoff', async () => {
    let calls = 0;
    let retriesSeenOnSuccess = -1;
    const { controller, metrics } = makeController(async (key) => {
      calls++;
      if (calls <= 3) throw new Error(`boom ${calls}`);
      retriesSeenOnSuccess = controller.queue?.numRequeues(key) ?? -1;
    });
    await controller.start();
    controller.enqueue('a');
    await waitFor(async () => (await count(metrics, 'controller_runtime_reconcile_total', { result: 'success' })) === 1);
    expect(calls).toBe(4);
    expect(retriesSeenOnSuccess).toBe(3); // three failures counted: backoff grew 1, 2, 4 ms
    expect(controller.queue?.numRequeues('a')).toBe(0); // forgotten on success
    expect(await count(metrics, 'controller_runtime_reconcile_total', { result: 'error' })).toBe(3);
    expect(await count(metrics, 'controller_runtime_reconcile_errors_total')).toBe(3);
    expect(await count(metrics, 'workqueue_retries_total', { name: 'test' })).toBe(3);
  });

  it('keeps a worker alive when reconcile throws synchronously or throws a non-Error', async () => {
    const done: string[] = [];
    const { controller } = makeController(
      ((key: string) => {
        if (key === 'sync-throw') throw new Error('thrown before any promise');
        // Not every library rejects with an Error.
        if (key === 'throw-string') return Promise.reject('not an Error');
        done.push(key);
        return Promise.resolve();
      }) as Reconciler['reconcile'],
      { workers: 1, queue: { baseDelayMs: 10_000 } },
    );
    await controller.start();
    controller.enqueue('sync-throw');
    controller.enqueue('throw-string');
    controller.enqueue('good');
    await waitFor(() => done.includes('good'));
    controller.enqueue('good-again');
    await waitFor(() => done.includes('good-again'));
  });

  it('aborts a hung reconcile at the timeout, counts an error and frees the worker without overlapping the key', async () => {
    const calls = new Map<string, number>();
    let release: () => void = () => {};
    let hungSignal: AbortSignal | undefined;
    const { controller, metrics } = makeController(
      async (key, signal) => {
        calls.set(key, (calls.get(key) ?? 0) + 1);
        if (key === 'hung' && calls.get(key) === 1) {
          hungSignal = signal;
          // Ignores its signal: the worst case.
          await new Promise<void>((resolve) => (release = resolve));
        }
      },
      { workers: 2, reconcileTimeoutMs: 20, queue: { baseDelayMs: 1 } },
    );
    await controller.start();
    controller.enqueue('hung');
    await waitFor(async () => (await count(metrics, 'controller_runtime_reconcile_total', { result: 'error' })) === 1);
    expect(hungSignal?.aborted).toBe(true);
    expect(hungSignal?.reason).toBeInstanceOf(ReconcileTimeoutError);

    // The abandoned call still runs: a new change to 'hung' waits for it, while other keys proceed.
    controller.enqueue('hung');
    controller.enqueue('other');
    await waitFor(() => calls.get('other') === 1);
    expect(calls.get('hung')).toBe(1);

    release();
    await waitFor(() => calls.get('hung') === 2);
  });

  it('does not retry a terminal error, even when wrapped', async () => {
    const calls = new Map<string, number>();
    const { controller, metrics } = makeController(
      async (key) => {
        calls.set(key, (calls.get(key) ?? 0) + 1);
        if (key === 'terminal') throw new TerminalError('template missing');
        if (key === 'wrapped') throw new Error('apply failed', { cause: new TerminalError('bad spec') });
      },
      // One worker and no backoff delay: a retry would be queued before the marker below.
      { workers: 1, queue: { baseDelayMs: 0 } },
    );
    await controller.start();
    controller.enqueue('terminal');
    controller.enqueue('wrapped');
    await waitFor(async () => (await count(metrics, 'controller_runtime_reconcile_errors_total')) === 2);
    controller.enqueue('marker');
    await waitFor(() => calls.get('marker') === 1);
    expect(calls.get('terminal')).toBe(1);
    expect(calls.get('wrapped')).toBe(1);
    expect(await count(metrics, 'workqueue_retries_total', { name: 'test' })).toBe(0);

    // A later change looks again.
    controller.enqueue('terminal');
    await waitFor(() => calls.get('terminal') === 2);
  });

  it('recognises terminal errors through the cause chain only', () => {
    expect(isTerminal(new TerminalError('x'))).toBe(true);
    expect(isTerminal(new Error('a', { cause: new Error('b', { cause: new TerminalError('c') }) }))).toBe(true);
    expect(isTerminal(new Error('plain'))).toBe(false);
    expect(isTerminal('string')).toBe(false);
  });

  it('reconciles each of 100 keys only a handful of times for a burst of 1,000 changes', async () => {
    const calls = new Map<string, number>();
    let concurrentSameKey = false;
    const active = new Set<string>();
    const { controller } = makeController(async (key) => {
      if (active.has(key)) concurrentSameKey = true;
      active.add(key);
      calls.set(key, (calls.get(key) ?? 0) + 1);
      await tick();
      active.delete(key);
    });
    await controller.start();
    for (let i = 0; i < 1000; i++) controller.enqueue(`customer-${i % 100}`);
    await waitFor(() => calls.size === 100 && controller.queue?.length === 0 && controller.queue.processing === 0);
    const counts = [...calls.values()];
    // Once queued, plus at most once more for changes that arrived while it was being reconciled.
    expect(Math.max(...counts)).toBeLessThanOrEqual(2);
    expect(counts.reduce((a, b) => a + b, 0)).toBeLessThan(200);
    expect(concurrentSameKey).toBe(false);
  });

  it('requeues after the requested delay', async () => {
    let calls = 0;
    const { controller, metrics } = makeController(async () => {
      calls++;
      return calls === 1 ? { requeueAfterMs: 5 } : undefined;
    });
    await controller.start();
    controller.enqueue('a');
    await waitFor(() => calls === 2);
    expect(await count(metrics, 'controller_runtime_reconcile_total', { result: 'requeue_after' })).toBe(1);
    await waitFor(async () => (await count(metrics, 'controller_runtime_reconcile_total', { result: 'success' })) === 1);
  });

  it('resyncs every listed key at start and periodically', async () => {
    let listings = 0;
    const seen = new Map<string, number>();
    const { controller } = makeController(
      async (key) => {
        seen.set(key, (seen.get(key) ?? 0) + 1);
      },
      {
        resyncSeconds: 0.02,
        listKeys: async () => {
          listings++;
          return ['a', 'b', 'c'];
        },
      },
    );
    await controller.start();
    await waitFor(() => listings >= 3 && [...seen.values()].every((n) => n >= 2) && seen.size === 3);
  });

  it('retries a resync whose listing failed', async () => {
    let listings = 0;
    const seen = new Set<string>();
    const { controller } = makeController(
      async (key) => {
        seen.add(key);
      },
      {
        listKeys: async () => {
          listings++;
          if (listings === 1) throw new Error('database down');
          return ['a'];
        },
      },
    );
    await controller.start();
    await waitFor(() => seen.has('a'), 5000);
  });

  it('reconcileNow resolves after a reconcile that started after the call', async () => {
    const gates: Array<() => void> = [];
    const { controller } = makeController(() => new Promise<void>((resolve) => gates.push(resolve)));
    await controller.start();
    controller.enqueue('a');
    await waitFor(() => gates.length === 1);
    let resolvedAt: Date | undefined;
    const now = controller.reconcileNow('a').then((at) => (resolvedAt = at));
    gates[0]?.(); // the run that started before the call finishes: not enough
    await waitFor(() => gates.length === 2);
    expect(resolvedAt).toBeUndefined();
    gates[1]?.();
    await now;
    expect(resolvedAt).toBeInstanceOf(Date);
  });

  it("never overlaps a new term's reconcile with one abandoned by the previous term", async () => {
    const leadership = new ManualLeadership();
    leadership.leading = true;
    const calls: string[] = [];
    let release: () => void = () => {};
    const { controller } = makeController(
      async (key) => {
        calls.push(key);
        // The first reconcile of k ignores its signal and outlives its term.
        if (key === 'k' && calls.filter((c) => c === 'k').length === 1) await new Promise<void>((resolve) => (release = resolve));
      },
      { leadership, workers: 1 },
    );
    await controller.start();
    controller.enqueue('k');
    await waitFor(() => calls.includes('k'));
    leadership.set(false);
    leadership.set(true);
    controller.enqueue('k');
    controller.enqueue('marker');
    await waitFor(() => calls.includes('marker'));
    expect(calls.filter((c) => c === 'k')).toHaveLength(1); // deferred, and the worker was not blocked
    release();
    await waitFor(() => calls.filter((c) => c === 'k').length === 2);
  });

  it('runs workers only while leading and stops them at once when leadership is lost', async () => {
    const leadership = new ManualLeadership();
    const signals: AbortSignal[] = [];
    const calls: string[] = [];
    const { controller } = makeController(
      async (key, signal) => {
        calls.push(key);
        signals.push(signal);
        if (key === 'slow') await new Promise<void>(() => {}); // ignores the signal
      },
      { leadership, listKeys: async () => ['listed'] },
    );
    await controller.start();
    controller.enqueue('ignored');
    await expect(controller.reconcileNow('x')).rejects.toBeInstanceOf(NotLeaderError);
    expect(controller.working).toBe(false);

    leadership.set(true);
    await waitFor(() => calls.includes('listed')); // a new term starts with a resync
    expect(calls).not.toContain('ignored');

    controller.enqueue('slow');
    await waitFor(() => calls.includes('slow'));
    const pending = controller.reconcileNow('later');
    const slowSignal = signals[signals.length - 1];
    leadership.set(false);
    // Synchronously aborted by the leadership callback, whatever the reconcile does.
    expect(slowSignal?.aborted).toBe(true);
    expect(controller.working).toBe(false);
    await expect(pending).rejects.toBeInstanceOf(NotLeaderError);
    controller.enqueue('while-standby');

    leadership.set(true);
    await waitFor(() => calls.filter((k) => k === 'listed').length === 2);
    expect(calls).not.toContain('while-standby');
  });

  it('lets in-flight work finish on stop within the drain deadline', async () => {
    let gate: () => void = () => {};
    let signal: AbortSignal | undefined;
    let finished = false;
    const { controller } = makeController(async (_key, s) => {
      signal = s;
      await new Promise<void>((resolve) => (gate = resolve));
      finished = true;
    });
    await controller.start();
    controller.enqueue('a');
    await waitFor(() => signal !== undefined);
    const stopping = controller.stop();
    await tick();
    expect(signal?.aborted).toBe(false);
    gate();
    await stopping;
    expect(finished).toBe(true);
    expect(controller.working).toBe(false);
  });

  it('starts and stops its sources and feeds the change feed into the queue', async () => {
    let listener: ChangeListener | undefined;
    let stopped = 0;
    const feed: ChangeFeed = {
      start: async (l) => {
        listener = l;
      },
      stop: async () => {
        stopped++;
      },
    };
    let listings = 0;
    const seen: string[] = [];
    const { controller } = makeController(
      async (key) => {
        seen.push(key);
      },
      {
        sources: [changeFeedSource(feed)],
        listKeys: async () => {
          listings++;
          return [];
        },
      },
    );
    await controller.start();
    await controller.start(); // idempotent
    expect(listener).toBeDefined();
    listener?.onChange('changed');
    await waitFor(() => seen.includes('changed'));
    await waitFor(() => listings === 1);
    listener?.onGap('reconnected');
    await waitFor(() => listings === 2);
    await controller.stop();
    await controller.stop();
    expect(stopped).toBe(1);
  });

  it("has the reconciler forget a key's cached state before a live event or reconcileNow queues it", async () => {
    let listener: ChangeListener | undefined;
    const feed: ChangeFeed = {
      start: async (l) => {
        listener = l;
      },
      stop: async () => {},
    };
    // Each reconcile records whether its key had been invalidated since the last one.
    const invalidated = new Set<string>();
    const reconciled: Array<{ key: string; invalidated: boolean }> = [];
    const { controller } = makeController(
      async (key) => {
        reconciled.push({ key, invalidated: invalidated.delete(key) });
      },
      { sources: [changeFeedSource(feed)], listKeys: async () => ['listed'], invalidate: (key) => invalidated.add(key) },
    );
    await controller.start();
    await waitFor(() => reconciled.some((r) => r.key === 'listed'));
    listener?.onChange('changed');
    await waitFor(() => reconciled.some((r) => r.key === 'changed'));
    await controller.reconcileNow('asked');
    // A resync is no event: the listing itself is fresh, nothing is invalidated for it.
    expect(reconciled).toEqual([
      { key: 'listed', invalidated: false },
      { key: 'changed', invalidated: true },
      { key: 'asked', invalidated: true },
    ]);
  });

  it('reports worker metrics', async () => {
    let gate: () => void = () => {};
    const { controller, metrics } = makeController(() => new Promise<void>((resolve) => (gate = resolve)), { workers: 3 });
    await controller.start();
    expect(await count(metrics, 'controller_runtime_max_concurrent_reconciles', { controller: 'test' })).toBe(3);
    controller.enqueue('a');
    await waitFor(async () => (await count(metrics, 'controller_runtime_active_workers', { controller: 'test' })) === 1);
    gate();
    await waitFor(async () => (await count(metrics, 'controller_runtime_active_workers', { controller: 'test' })) === 0);
    const text = await metrics.registry.metrics();
    expect(text).toMatch(/controller_runtime_reconcile_time_seconds_count\{controller="test"\} 1/);
  });
});
