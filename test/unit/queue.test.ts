import { afterEach, describe, expect, it, vi } from 'vitest';
import { Metrics } from '../../src/observability/metrics.js';
import { ExponentialBackoff, TokenBucket, WorkQueue, type QueueItem } from '../../src/controller/queue.js';

/** Takes every key that is ready now, in order, marking each done at once. */
async function drain(queue: WorkQueue): Promise<QueueItem[]> {
  const items: QueueItem[] = [];
  while (queue.length > 0) {
    const item = await queue.get();
    if (!item) break;
    items.push(item);
    queue.done(item.key);
  }
  return items;
}

async function metricValue(metrics: Metrics, name: string, labels: Record<string, string>): Promise<number> {
  const metric = (await metrics.registry.getMetricsAsJSON()).find((m) => m.name === name);
  const sample = metric?.values.find((v) => Object.entries(labels).every(([k, value]) => v.labels[k] === value));
  return sample?.value ?? 0;
}

afterEach(() => {
  vi.useRealTimers();
});

describe('WorkQueue', () => {
  it('queues a key at most once however often it is added', async () => {
    const queue = new WorkQueue({ name: 'test' });
    for (let i = 0; i < 10; i++) {
      queue.add('a');
      queue.add('b');
    }
    expect(queue.length).toBe(2);
    expect((await drain(queue)).map((i) => i.key)).toEqual(['a', 'b']);
    expect(queue.length).toBe(0);
  });

  it('never hands one key to two workers, and runs it again after a mid-processing add', async () => {
    const queue = new WorkQueue({ name: 'test' });
    queue.add('a');
    const first = await queue.get();
    expect(first?.key).toBe('a');

    queue.add('a'); // a change arrives while a worker holds the key
    queue.add('b');
    const second = await queue.get();
    expect(second?.key).toBe('b'); // not 'a': it is still being processed
    expect(queue.length).toBe(0);

    let third: QueueItem | undefined;
    const waiting = queue.get().then((item) => (third = item));
    await Promise.resolve();
    expect(third).toBeUndefined();

    queue.done('a');
    await waiting;
    expect(third?.key).toBe('a');
  });

  it('does not run a key again after done when nothing was added meanwhile', async () => {
    const queue = new WorkQueue({ name: 'test' });
    queue.add('a');
    const item = await queue.get();
    queue.done(item?.key ?? '');
    expect(queue.length).toBe(0);
    expect(queue.processing).toBe(0);
  });

  it('wakes a blocked get() when a key is added', async () => {
    const queue = new WorkQueue({ name: 'test' });
    const pending = queue.get();
    queue.add('x');
    await expect(pending).resolves.toEqual({ key: 'x', priority: 'live' });
  });

  it('adds a key after a delay, keeping the earlier of two delays', async () => {
    vi.useFakeTimers();
    const queue = new WorkQueue({ name: 'test' });
    queue.addAfter('a', 1000);
    queue.addAfter('a', 5000);
    await vi.advanceTimersByTimeAsync(999);
    expect(queue.length).toBe(0);
    await vi.advanceTimersByTimeAsync(1);
    expect(queue.length).toBe(1);
    expect((await drain(queue)).map((i) => i.key)).toEqual(['a']);
    await vi.advanceTimersByTimeAsync(10_000);
    expect(queue.length).toBe(0); // the later delay was dropped, not kept as a second add
  });

  it('backs off exponentially per key and starts over after forget', async () => {
    vi.useFakeTimers();
    const queue = new WorkQueue({ name: 'test', baseDelayMs: 10, maxDelayMs: 80 });
    const readyAfter = async (): Promise<number> => {
      queue.addRateLimited('a');
      let waited = 0;
      while (queue.length === 0) {
        await vi.advanceTimersByTimeAsync(1);
        waited++;
      }
      await drain(queue);
      return waited;
    };
    expect([await readyAfter(), await readyAfter(), await readyAfter(), await readyAfter(), await readyAfter()]).toEqual([
      10, 20, 40, 80, 80,
    ]);
    expect(queue.numRequeues('a')).toBe(5);
    queue.forget('a');
    expect(queue.numRequeues('a')).toBe(0);
    expect(await readyAfter()).toBe(10);
  });

  it('keeps backoff separate for each key', () => {
    const backoff = new ExponentialBackoff(5, 1_000_000);
    expect([backoff.when('a'), backoff.when('a'), backoff.when('a')]).toEqual([5, 10, 20]);
    expect(backoff.when('b')).toBe(5);
    for (let i = 0; i < 100; i++) backoff.when('c');
    expect(backoff.when('c')).toBe(1_000_000);
  });

  it('limits retries overall with a token bucket once the burst is spent', async () => {
    vi.useFakeTimers();
    // Backoff base 0 so only the bucket decides: burst 3, then 10 per second.
    const queue = new WorkQueue({ name: 'test', baseDelayMs: 0, qps: 10, burst: 3 });
    for (const key of ['a', 'b', 'c', 'd', 'e']) queue.addRateLimited(key);
    await vi.advanceTimersByTimeAsync(0);
    expect(queue.length).toBe(3);
    await vi.advanceTimersByTimeAsync(99);
    expect(queue.length).toBe(3);
    await vi.advanceTimersByTimeAsync(1);
    expect(queue.length).toBe(4);
    await vi.advanceTimersByTimeAsync(100);
    expect(queue.length).toBe(5);
  });

  it('refills the token bucket over time up to the burst', () => {
    let now = 0;
    const bucket = new TokenBucket(10, 2, () => now);
    expect([bucket.reserve(), bucket.reserve(), bucket.reserve()]).toEqual([0, 0, 100]);
    now = 10_000; // long idle: refills to the burst, not beyond
    expect([bucket.reserve(), bucket.reserve(), bucket.reserve()]).toEqual([0, 0, 100]);
  });

  it('serves live keys before resync keys, and upgrades a queued resync key on a live add', async () => {
    const queue = new WorkQueue({ name: 'test', resyncAgingMs: 60_000 });
    queue.add('r1', 'resync');
    queue.add('r2', 'resync');
    queue.add('l1', 'live');
    queue.add('r2', 'live');
    queue.add('l1', 'resync'); // does not downgrade
    expect(await drain(queue)).toEqual([
      { key: 'l1', priority: 'live' },
      { key: 'r2', priority: 'live' },
      { key: 'r1', priority: 'resync' },
    ]);
  });

  it('ages resync keys so steady live traffic cannot starve them', async () => {
    vi.useFakeTimers();
    const queue = new WorkQueue({ name: 'test', resyncAgingMs: 1000 });
    queue.add('r1', 'resync');
    queue.add('r2', 'resync');
    // Live keys keep arriving; before the resync keys age, only live keys are served.
    const served: string[] = [];
    const serveOne = async (liveKey: string): Promise<void> => {
      queue.add(liveKey, 'live');
      const item = await queue.get();
      if (!item) throw new Error('queue shut down');
      served.push(item.key);
      queue.done(item.key);
    };
    for (let i = 0; i < 3; i++) await serveOne(`early${i}`);
    expect(served).toEqual(['early0', 'early1', 'early2']);

    await vi.advanceTimersByTimeAsync(1000);
    served.length = 0;
    for (let i = 0; i < 4; i++) await serveOne(`late${i}`);
    // Once aged, resync and live keys alternate: both kinds make progress.
    expect(served).toEqual(['r1', 'late0', 'r2', 'late1']);
    expect(queue.length).toBe(2);
  });

  it('drains in-flight work on shutdown and drops the backlog', async () => {
    const queue = new WorkQueue({ name: 'test' });
    queue.add('a');
    queue.add('b');
    const item = await queue.get();
    const idle = new WorkQueue({ name: 'idle' });
    const blockedGet = idle.get();

    let drained: boolean | undefined;
    const shutdown = queue.shutDown(60_000).then((d) => (drained = d));
    queue.add('c'); // ignored after shutdown
    expect(queue.length).toBe(0);
    await expect(queue.get()).resolves.toBeUndefined();
    await Promise.resolve();
    expect(drained).toBeUndefined(); // 'a' is still in flight

    queue.done(item?.key ?? '');
    await shutdown;
    expect(drained).toBe(true);

    await idle.shutDown();
    await expect(blockedGet).resolves.toBeUndefined();
  });

  it('gives up draining at the deadline', async () => {
    vi.useFakeTimers();
    const queue = new WorkQueue({ name: 'test' });
    queue.add('hung');
    await queue.get();
    const shutdown = queue.shutDown(500);
    await vi.advanceTimersByTimeAsync(500);
    await expect(shutdown).resolves.toBe(false);
  });

  it('cancels delayed adds on shutdown', async () => {
    vi.useFakeTimers();
    const queue = new WorkQueue({ name: 'test' });
    queue.addAfter('a', 100);
    await queue.shutDown();
    await vi.advanceTimersByTimeAsync(1000);
    expect(queue.length).toBe(0);
  });

  it('reports workqueue metrics under its name', async () => {
    vi.useFakeTimers();
    const metrics = new Metrics({ defaultMetrics: false });
    const queue = new WorkQueue({ name: 'customers', metrics });
    const labels = { name: 'customers' };
    queue.add('a');
    queue.add('a');
    queue.add('b');
    expect(await metricValue(metrics, 'workqueue_adds_total', labels)).toBe(2);
    expect(await metricValue(metrics, 'workqueue_depth', labels)).toBe(2);

    const item = await queue.get();
    expect(await metricValue(metrics, 'workqueue_depth', labels)).toBe(1);
    await vi.advanceTimersByTimeAsync(1500);
    expect(await metricValue(metrics, 'workqueue_longest_running_processor_seconds', labels)).toBeGreaterThan(0);
    expect(await metricValue(metrics, 'workqueue_unfinished_work_seconds', labels)).toBeGreaterThan(0);
    queue.done(item?.key ?? '');
    expect(await metricValue(metrics, 'workqueue_longest_running_processor_seconds', labels)).toBe(0);

    queue.addRateLimited('c');
    expect(await metricValue(metrics, 'workqueue_retries_total', labels)).toBe(1);
    const text = await metrics.registry.metrics();
    expect(text).toMatch(/workqueue_queue_duration_seconds_count\{name="customers"\} 1/);
    expect(text).toMatch(/workqueue_work_duration_seconds_count\{name="customers"\} 1/);
  });
});
