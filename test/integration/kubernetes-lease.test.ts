import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { LeaseElector } from '../../src/kubernetes/lease-elector.js';
import { createLogger } from '../../src/observability/logger.js';
import { Metrics } from '../../src/observability/metrics.js';
import { FakeKubeApi } from '../support/fake-kube-api.js';
import { uniqueName } from '../support/fixtures.js';
import { waitFor } from '../support/wait-for.js';

const logger = createLogger({ level: 'silent' });
const NS = 'blytz-system';

describe('Lease leader election (coordination.k8s.io/v1 on the fake API server)', () => {
  let api: FakeKubeApi;
  const electors: LeaseElector[] = [];

  beforeAll(async () => {
    api = new FakeKubeApi();
    await api.start();
  });

  afterEach(async () => {
    for (const e of electors.splice(0)) await e.stop({ release: false });
  });

  afterAll(async () => {
    await api.stop();
  });

  function candidate(lease: string, identity: string, log: string[]): { elector: LeaseElector; metrics: Metrics } {
    const metrics = new Metrics({ defaultMetrics: false });
    const elector = new LeaseElector({
      kubeConfig: api.kubeConfig(),
      namespace: NS,
      name: lease,
      identity,
      logger,
      metrics,
      // client-go's 15/10/2 s, scaled down so the test takes seconds, not minutes.
      leaseDurationMs: 1000,
      renewDeadlineMs: 600,
      retryPeriodMs: 100,
    });
    elector.onChange((leading) => log.push(`${identity}:${leading ? 'lead' : 'lost'}`));
    electors.push(elector);
    return { elector, metrics };
  }

  function maxLeadersAtOnce(log: string[]): number {
    const leading = new Set<string>();
    let max = 0;
    for (const entry of log) {
      const [id = '', what] = entry.split(':');
      if (what === 'lead') leading.add(id);
      else leading.delete(id);
      max = Math.max(max, leading.size);
    }
    return max;
  }

  async function gauge(metrics: Metrics, lease: string): Promise<number | undefined> {
    const metric = await metrics.leaderStatus.get();
    return metric.values.find((v) => v.labels['name'] === lease)?.value;
  }

  it('one leads, the other stands by; a clean stop hands over without waiting for expiry', async () => {
    const lease = uniqueName('lease');
    const log: string[] = [];
    const a = candidate(lease, 'pod-a', log);
    const b = candidate(lease, 'pod-b', log);
    await a.elector.start();
    await b.elector.start();
    expect(a.elector.isLeader()).toBe(true);
    expect(b.elector.isLeader()).toBe(false);
    expect(await gauge(a.metrics, lease)).toBe(1);
    expect(await gauge(b.metrics, lease)).toBe(0);
    expect(api.object('leases', NS, lease)?.['spec']).toMatchObject({ holderIdentity: 'pod-a', leaseDurationSeconds: 1 });

    // b keeps standing by while a renews (several lease durations' worth of retries).
    const renewedBefore = api.object('leases', NS, lease)?.['metadata']['resourceVersion'];
    await waitFor(() => api.object('leases', NS, lease)?.['metadata']['resourceVersion'] !== renewedBefore);
    expect(b.elector.isLeader()).toBe(false);

    await a.elector.stop();
    expect(api.object('leases', NS, lease)?.['spec']['holderIdentity']).toBe('');
    await waitFor(() => b.elector.isLeader());
    expect(api.object('leases', NS, lease)?.['spec']).toMatchObject({ holderIdentity: 'pod-b', leaseTransitions: 1 });
    expect(await gauge(b.metrics, lease)).toBe(1);
    expect(await gauge(a.metrics, lease)).toBe(0);
    expect(maxLeadersAtOnce(log)).toBe(1);
  });

  it('a leader that dies without releasing is replaced once its lease expires', async () => {
    const lease = uniqueName('lease');
    const log: string[] = [];
    const a = candidate(lease, 'pod-a', log);
    const b = candidate(lease, 'pod-b', log);
    await a.elector.start();
    await b.elector.start();
    await a.elector.stop({ release: false }); // a crash: the Lease still names pod-a
    expect(api.object('leases', NS, lease)?.['spec']['holderIdentity']).toBe('pod-a');
    await waitFor(() => b.elector.isLeader());
    expect(api.object('leases', NS, lease)?.['spec']['holderIdentity']).toBe('pod-b');
    expect(maxLeadersAtOnce(log)).toBe(1);
  });

  it('a leader that cannot renew steps down within the renew deadline', async () => {
    const lease = uniqueName('lease');
    const log: string[] = [];
    const a = candidate(lease, 'pod-a', log);
    await a.elector.start();
    expect(a.elector.isLeader()).toBe(true);
    api.failNext('PUT', new RegExp(`/leases/${lease}$`), 500, 1000);
    await waitFor(() => !a.elector.isLeader());
    expect(log).toEqual(['pod-a:lead', 'pod-a:lost']);
  });
});
