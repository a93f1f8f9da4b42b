import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { CoreV1Api } from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PLANS } from '../../src/domain/customer.js';
import { unguarded } from '../../src/resilience/guard.js';
import { KubernetesRuntime } from '../../src/runtime/kubernetes/kubernetes-runtime.js';
import { OwnedObjectsWatch } from '../../src/kube-api/owned-objects-watch.js';
import type { ContainerSpec } from '../../src/runtime/runtime.js';
import { renderMarkerPath } from '../../src/workspace/file-workspaces.js';
import { FakeKubeApi } from '../support/fake-kube-api.js';
import { uniqueName, stubHealth } from '../support/fixtures.js';
import { waitFor } from '../support/wait-for.js';

/**
 * OwnedObjectsWatch against the fake API server, driven by client-node's Watch: changes to our
 * Deployments, Services, NetworkPolicies and PVCs (not Secrets: the controller may not list or
 * watch them) become "look at customer X again"; a dropped watch
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
    // As the kit's controller: only what deploy/kubernetes/rbac.yaml grants.
    const controller = api.kitControllerConfig(NS);
    runtime = new KubernetesRuntime(unguarded, {
      kubeConfig: controller,
      namespace: NS,
      extraLabels: { 'cloud.blytz.instance': 'w' },
    });
    watch = new OwnedObjectsWatch({ kubeConfig: controller, ...runtime.ownedKinds(), minBackoffMs: 20, maxBackoffMs: 200 });
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
    // The render's record lives beside the customer folders, out of the container's reach.
    await mkdir(dirname(renderMarkerPath(root)), { recursive: true });
    await writeFile(renderMarkerPath(root), JSON.stringify({ files: [`${customer}.json`] }));
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

  it('watches the kinds the runtime writes, Secrets excepted (the kit grants no Secret list or watch), with our labels', () => {
    const watches = api.requests
      .filter((r) => r.watch)
      .map((r) => `${r.path}?${new URLSearchParams(r.query).get('labelSelector')}`);
    const selector = 'cloud.blytz.managed-by=blytz,cloud.blytz.instance=w';
    expect(watches.sort()).toEqual(
      [
        `/api/v1/namespaces/${NS}/persistentvolumeclaims?${selector}`,
        `/api/v1/namespaces/${NS}/services?${selector}`,
        `/apis/apps/v1/namespaces/${NS}/deployments?${selector}`,
        `/apis/networking.k8s.io/v1/namespaces/${NS}/networkpolicies?${selector}`,
      ].sort(),
    );
  });

  it('creating, scaling and deleting parts enqueues the customer; foreign objects do not', async () => {
    const customer = uniqueName('w');
    const id = await create(customer);
    await waitFor(() => seen(customer) >= 4, 5_000, 20); // PVC, Service, NetworkPolicy, Deployment
    let before = seen(customer);
    await api.kubeConfig().makeApiClient(CoreV1Api).deleteNamespacedService({ name: id, namespace: NS });
    await waitFor(() => seen(customer) > before, 5_000, 20);
    before = seen(customer);
    await runtime.start(id); // scaled up: the Deployment changes (and its status after it)
    await waitFor(() => seen(customer) > before, 5_000, 20);

    // A Service labelled with a customer but not made by us (no managed-by): never enqueued.
    const foreign = uniqueName('foreign');
    const core = api.kubeConfig().makeApiClient(CoreV1Api);
    await core.createNamespacedService({
      namespace: NS,
      body: { metadata: { name: 'not-ours', labels: { 'cloud.blytz.customer': foreign } }, spec: { ports: [{ port: 80 }] } },
    });
    // One of ours written after it, on the same watch: events come in order, so once this one is
    // seen, the foreign one would have been seen before it.
    const marker = uniqueName('marker');
    await core.createNamespacedService({
      namespace: NS,
      body: {
        metadata: {
          name: `blytz-${marker}`,
          labels: { 'cloud.blytz.managed-by': 'blytz', 'cloud.blytz.instance': 'w', 'cloud.blytz.customer': marker },
        },
        spec: { ports: [{ port: 80 }] },
      },
    });
    await waitFor(() => seen(marker) === 1, 5_000, 20);
    expect(seen(foreign)).toBe(0);
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
