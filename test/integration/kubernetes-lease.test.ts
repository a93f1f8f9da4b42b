import { CoordinationV1Api } from '@kubernetes/client-node';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { LeaseElector } from '../../src/kube-api/lease-elector.js';
import { createLogger } from '../../src/observability/logger.js';
import { Metrics } from '../../src/observability/metrics.js';
import { FakeKubeApi } from '../support/fake-kube-api.js';
import { KIT_SERVICE_ACCOUNT, kitRbac } from '../support/fake-kube/rbac.js';
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
    api.installRbac(kitRbac(), NS);
  });

  afterEach(async () => {
    for (const e of electors.splice(0)) await e.stop({ release: false });
  });

  afterAll(async () => {
    await api.stop();
  });

  const tokens = new Map<string, string>();
  function tokenOf(identity: string): string {
    let token = tokens.get(identity);
    if (token === undefined) {
      token = api.serviceAccountToken(NS, KIT_SERVICE_ACCOUNT);
      tokens.set(identity, token);
    }
    return token;
  }

  /**
   * A clock only the test moves, for the tests about expiry and the renew deadline: with it,
   * who steps down and who takes over follows the test's steps, not the machine's load.
   */
  function manualClock() {
    let time = Date.now();
    return { now: () => time, advance: (ms: number) => void (time += ms) };
  }

  function candidate(
    lease: string,
    identity: string,
    log: string[],
    now?: () => number,
  ): { elector: LeaseElector; metrics: Metrics } {
    const metrics = new Metrics({ defaultMetrics: false });
    const elector = new LeaseElector({
      // Each replica its own token of the kit's service account, so the API server can tell
      // their requests apart (and grants them only what the kit's Role does).
      kubeConfig: api.kubeConfig(tokenOf(identity)),
      namespace: NS,
      name: lease,
      identity,
      logger,
      metrics,
      // client-go's 15/10/2 s, scaled down so the test takes seconds, not minutes.
      leaseDurationMs: 1000,
      renewDeadlineMs: 600,
      retryPeriodMs: 100,
      ...(now ? { now } : {}),
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
    // The clock stands still: the handover can only come from the release, never from expiry.
    const clock = manualClock();
    const a = candidate(lease, 'pod-a', log, clock.now);
    const b = candidate(lease, 'pod-b', log, clock.now);
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
    const clock = manualClock();
    const a = candidate(lease, 'pod-a', log, clock.now);
    const b = candidate(lease, 'pod-b', log, clock.now);
    await a.elector.start();
    await b.elector.start();
    await a.elector.stop({ release: false }); // a crash: the Lease still names pod-a
    expect(api.object('leases', NS, lease)?.['spec']['holderIdentity']).toBe('pod-a');
    // Until the lease duration (1 s) has passed by b's clock, b only looks.
    const reads = () => api.requests.filter((r) => r.method === 'GET' && r.path.endsWith(`/leases/${lease}`)).length;
    const readsBefore = reads();
    clock.advance(999);
    await waitFor(() => reads() >= readsBefore + 3);
    expect(b.elector.isLeader()).toBe(false);
    clock.advance(1);
    await waitFor(() => b.elector.isLeader());
    expect(api.object('leases', NS, lease)?.['spec']['holderIdentity']).toBe('pod-b');
    expect(maxLeadersAtOnce(log)).toBe(1);
  });

  it('a leader that cannot renew steps down at the renew deadline', async () => {
    const lease = uniqueName('lease');
    const log: string[] = [];
    const clock = manualClock();
    const a = candidate(lease, 'pod-a', log, clock.now);
    await a.elector.start();
    expect(a.elector.isLeader()).toBe(true);
    const renewals = new RegExp(`/leases/${lease}$`);
    api.failNext('PUT', renewals, 500, 1000);
    const failed = () => api.requests.filter((r) => r.method === 'PUT' && renewals.test(r.path)).length;
    // Renewals fail, but the renew deadline (600 ms) has not passed by its clock: it still leads.
    await waitFor(() => failed() >= 3);
    expect(a.elector.isLeader()).toBe(true);
    clock.advance(600);
    await waitFor(() => !a.elector.isLeader());
    expect(log).toEqual(['pod-a:lead', 'pod-a:lost']);
  });

  it('sends acquireTime and renewTime as MicroTime (six fractional digits), which the API server requires', async () => {
    // What kube-apiserver answers a millisecond time with (it parses MicroTime as RFC3339Micro).
    const coordination = api.kubeConfig().makeApiClient(CoordinationV1Api);
    const refused = coordination.createNamespacedLease({
      namespace: NS,
      body: { metadata: { name: uniqueName('ms') }, spec: { holderIdentity: 'x', renewTime: new Date() } },
    });
    await expect(refused).rejects.toMatchObject({ code: 400 });

    const lease = uniqueName('lease');
    const a = candidate(lease, 'pod-a', []);
    await a.elector.start();
    expect(a.elector.isLeader()).toBe(true);
    const micro = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$/;
    const spec = api.object('leases', NS, lease)?.['spec'];
    expect(spec['acquireTime']).toMatch(micro);
    expect(spec['renewTime']).toMatch(micro);
    // Renewals (a replace of the read Lease) and the release keep the format.
    const renewed = spec['renewTime'];
    await waitFor(() => api.object('leases', NS, lease)?.['spec']['renewTime'] !== renewed);
    expect(api.object('leases', NS, lease)?.['spec']['acquireTime']).toMatch(micro);
    await a.elector.stop();
    expect(api.object('leases', NS, lease)?.['spec']).toMatchObject({
      holderIdentity: '',
      renewTime: expect.stringMatching(micro),
    });
  });

  it('a leader whose API calls hang steps down at its renew deadline, before a standby can take over', async () => {
    const lease = uniqueName('lease');
    const log: string[] = [];
    const clock = manualClock();
    const a = candidate(lease, 'pod-a', log, clock.now);
    const b = candidate(lease, 'pod-b', log, clock.now);
    await a.elector.start();
    await b.elector.start();
    expect(a.elector.isLeader()).toBe(true);
    // pod-a's connection to the API server wedges: its reads and renewals are never answered.
    const path = new RegExp(`/leases/${lease}$`);
    api.hangNext('GET', path, 1000, tokenOf('pod-a'));
    api.hangNext('PUT', path, 1000, tokenOf('pod-a'));
    await waitFor(() => api.hanging > 0);
    // The renew deadline (600 ms since its last renewal) passes by the clock: pod-a stops
    // leading although its calls never answer. The lease (1 s) has not expired for pod-b yet.
    clock.advance(600);
    await waitFor(() => log.includes('pod-a:lost'));
    expect(b.elector.isLeader()).toBe(false);
    clock.advance(400);
    await waitFor(() => b.elector.isLeader());
    expect(log.indexOf('pod-a:lost')).toBeLessThan(log.indexOf('pod-b:lead'));
    expect(maxLeadersAtOnce(log)).toBe(1);
    // Its hung calls were cut off, not left open: once no new call hangs, none stays hanging.
    api.clearHangs();
    await waitFor(() => api.hanging === 0);
  });
});
