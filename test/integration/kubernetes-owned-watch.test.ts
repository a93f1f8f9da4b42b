import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CoreV1Api } from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PLANS } from '../../src/domain/customer.js';
import { unguarded } from '../../src/resilience/guard.js';
import { KubernetesRuntime } from '../../src/runtime/kubernetes/kubernetes-runtime.js';
import { OwnedObjectsWatch } from '../../src/runtime/kubernetes/owned-objects-watch.js';
import type { ContainerSpec } from '../../src/runtime/runtime.js';
import { FakeKubeApi } from '../support/fake-kube-api.js';
import { uniqueName, stubHealth } from '../support/fixtures.js';
import { waitFor } from '../support/wait-for.js';

/**
 * OwnedObjectsWatch against the fake API server, driven by client-node's Watch: changes to our
 * Deployments, Services, Secrets and PVCs become "look at customer X again"; a dropped watch
 * resumes from its last version without a resync; a 410 relists and asks for one; a server
 * refusing watches is retried until it accepts them again.
 */
const NS = 'watched';

describe('OwnedObjectsWatch (the Kubernetes runtime world events)', () => {
  let api: FakeKubeApi;
  let runtime: KubernetesRuntime;
  let watch: OwnedObjectsWatch;
  let root: string;
  const enqueued: string[] = [];
  const resyncs: string[] = [];

  beforeAll(async () => {
    api = new FakeKubeApi({ bookmarkIntervalMs: 200 });
    api.simulateDeployments = true;
    await api.start();
    runtime = new KubernetesRuntime(unguarded, {
      kubeConfig: api.kubeConfig(),
      namespace: NS,
      extraLabels: { 'cloud.blytz.instance': 'w' },
    });
    watch = new OwnedObjectsWatch({ kubeConfig: api.kubeConfig(), ...runtime.ownedKinds(), minBackoffMs: 20, maxBackoffMs: 200 });
    await watch.start({ enqueue: (c) => enqueued.push(c), resync: (r) => resyncs.push(r) });
    await waitFor(() => api.watchCount() === 4, 10_000, 20);
    root = await mkdtemp(join(tmpdir(), 'blytz-watch-'));
  });

  afterAll(async () => {
    await watch?.stop();
    await api?.stop();
    await rm(root, { recursive: true, force: true });
  });

  async function create(customer: string): Promise<string> {
    await writeFile(join(root, `${customer}.json`), '{}');
    await writeFile(join(root, '.blytz-render.json'), JSON.stringify({ files: [`${customer}.json`] }));
    const spec: ContainerSpec = {
      customer,
      image: 'img',
      containerPort: 18789,
      hostPort: 30001,
      user: '1000:1000',
      mounts: [{ hostPath: root, containerPath: '/home/node/.openclaw', readOnly: false }],
      env: {},
      resources: PLANS.personal,
      ...stubHealth(),
      specHash: 'h1',
    };
    return runtime.create(spec);
  }

  const seen = (customer: string) => enqueued.filter((c) => c === customer).length;

  it('watches the four kinds the runtime writes, with our labels', () => {
    const watches = api.requests
      .filter((r) => r.watch)
      .map((r) => `${r.path}?${new URLSearchParams(r.query).get('labelSelector')}`);
    const selector = 'cloud.blytz.managed-by=blytz,cloud.blytz.instance=w';
    expect(watches.sort()).toEqual(
      [
        `/api/v1/namespaces/${NS}/persistentvolumeclaims?${selector}`,
        `/api/v1/namespaces/${NS}/secrets?${selector}`,
        `/api/v1/namespaces/${NS}/services?${selector}`,
        `/apis/apps/v1/namespaces/${NS}/deployments?${selector}`,
      ].sort(),
    );
  });

  it('creating, scaling and deleting parts enqueues the customer; foreign objects do not', async () => {
    const customer = uniqueName('w');
    const id = await create(customer);
    await waitFor(() => seen(customer) >= 4, 5_000, 20); // Secret, PVC, Deployment, Service
    let before = seen(customer);
    await api.kubeConfig().makeApiClient(CoreV1Api).deleteNamespacedService({ name: id, namespace: NS });
    await waitFor(() => seen(customer) > before, 5_000, 20);
    before = seen(customer);
    await runtime.start(id); // scaled up: the Deployment changes (and its status after it)
    await waitFor(() => seen(customer) > before, 5_000, 20);

    const total = enqueued.length;
    await api
      .kubeConfig()
      .makeApiClient(CoreV1Api)
      .createNamespacedService({
        namespace: NS,
        body: { metadata: { name: 'not-ours', labels: { 'cloud.blytz.customer': customer } }, spec: { ports: [{ port: 80 }] } },
      });
    await new Promise((r) => setTimeout(r, 300));
    expect(enqueued.length).toBe(total);
    expect(resyncs).toEqual([]);
  });

  it('a dropped watch resumes from its last version: what happened meanwhile arrives, no resync', async () => {
    const customer = uniqueName('w');
    api.breakWatches();
    const id = await create(customer); // while the watches are down
    await waitFor(() => seen(customer) >= 4 && api.watchCount() === 4, 5_000, 20);
    expect(resyncs).toEqual([]);
    await runtime.remove(id);
  });

  it('410 Gone relists and asks for a resync; events flow again afterwards', async () => {
    // Hold the watches down while something changes and history is compacted past it.
    api.rejectWatches = 503;
    api.breakWatches();
    const missed = uniqueName('w');
    await create(missed);
    api.compact();
    api.rejectWatches = undefined;
    // Each kind reopens from a compacted version, gets 410 and relists.
    await waitFor(() => resyncs.length >= 4 && api.watchCount() === 4, 5_000, 20);
    expect(resyncs[0]).toMatch(/watch expired \(410 Gone\)/);
    const customer = uniqueName('w');
    await create(customer);
    await waitFor(() => seen(customer) >= 4, 5_000, 20);
  });

  it('a server refusing watches (503) is retried with backoff until it accepts them', async () => {
    const before = api.requests.filter((r) => r.watch).length;
    api.rejectWatches = 503;
    api.breakWatches();
    // Each kind asks again while refused (backoff 20..200 ms) and does not give up: wait for that
    // rather than a fixed time, which a busy machine may not fit enough attempts into.
    const refusedSoFar = () => api.requests.filter((r) => r.watch).length - before;
    await waitFor(() => refusedSoFar() >= 8, 10_000, 20);
    expect(api.watchCount()).toBe(0);
    const refused = refusedSoFar();
    api.rejectWatches = undefined;
    await waitFor(() => api.watchCount() === 4, 5_000, 20);
    expect(refused).toBeGreaterThanOrEqual(8);
    const customer = uniqueName('w');
    await create(customer);
    await waitFor(() => seen(customer) >= 4, 5_000, 20);
  });

  it('stop closes every watch', async () => {
    await watch.stop();
    await waitFor(() => api.watchCount() === 0, 5_000, 20);
    expect(watch.open).toBe(0);
  });
});
