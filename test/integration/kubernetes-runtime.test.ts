import { AppsV1Api, CoreV1Api, NetworkingV1Api } from '@kubernetes/client-node';
import { NetworkPolicy } from 'kubernetes-models/networking.k8s.io/v1/NetworkPolicy';
import { mkdtemp, mkdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { pairingApprover } from '../../src/controller/customer/pairing.js';
import { MERGE_PATCH } from '../../src/kube-api/client.js';
import { PLANS } from '../../src/domain/customer.js';
import { unguarded } from '../../src/resilience/guard.js';
import { ContainerNotRunningError, ExecTimeoutError } from '../../src/runtime/exec-output.js';
import { KubernetesRuntime } from '../../src/runtime/kubernetes/kubernetes-runtime.js';
import { KubernetesWorkspaces } from '../../src/runtime/kubernetes/kubernetes-workspaces.js';
import { objectName } from '../../src/kube-api/customer-object-meta.js';
import type { ContainerSpec } from '../../src/runtime/runtime.js';
import { renderMarkerPath } from '../../src/workspace/file-workspaces.js';
import type { Workspaces } from '../../src/workspace/workspace.js';
import { FakeKubeApi, type FakeExecCall, type FakeExecResult } from '../support/fake-kube-api.js';
import { uniqueName, stubHealth } from '../support/fixtures.js';
import { waitFor } from '../support/wait-for.js';

const NS = 'customers';
type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

describe('Kubernetes runtime (fake API server driven by @kubernetes/client-node)', () => {
  let api: FakeKubeApi;
  let runtime: KubernetesRuntime;
  let root: string;

  beforeAll(async () => {
    api = new FakeKubeApi();
    api.simulateDeployments = true;
    await api.start();
    runtime = new KubernetesRuntime(unguarded, {
      // As the kit's controller: only what deploy/kubernetes/rbac.yaml grants.
      kubeConfig: api.kitControllerConfig(NS),
      namespace: NS,
      extraLabels: { 'cloud.blytz.instance': 'k8s-test' },
    });
    root = await mkdtemp(join(tmpdir(), 'blytz-k8s-'));
  });

  afterAll(async () => {
    await api.stop();
    await rm(root, { recursive: true, force: true });
  });

  beforeEach(() => {
    api.requests.length = 0;
  });

  /** A rendered workspace folder as FileWorkspaces leaves it (files, and the render marker beside it). */
  async function workspace(customer: string, files: Record<string, string>): Promise<string> {
    const dir = join(root, customer);
    for (const [path, content] of Object.entries(files)) {
      await mkdir(join(dir, path, '..'), { recursive: true });
      await writeFile(join(dir, path), content);
    }
    // The marker lives beside the customer folders, where no container writes (FileWorkspaces).
    await mkdir(dirname(renderMarkerPath(dir)), { recursive: true });
    await writeFile(renderMarkerPath(dir), JSON.stringify({ contentHash: 'x', template: 't', files: Object.keys(files) }));
    return dir;
  }

  function spec(customer: string, dir: string, specHash: string, hostPort = 30001): ContainerSpec {
    return {
      customer,
      image: 'blytz/assistant-stub:dev',
      containerPort: 18789,
      hostPort,
      user: '1000:1000',
      mounts: [
        { hostPath: dir, containerPath: '/home/node/.openclaw', readOnly: false },
        { hostPath: join(dir, 'openclaw.json'), containerPath: '/home/node/.openclaw/openclaw.json', readOnly: true },
      ],
      env: { TZ: 'UTC' },
      resources: PLANS.personal,
      ...stubHealth(),
      specHash,
    };
  }

  const runningPods = (id: string) =>
    api.objects('pods', NS).filter((p) => p['metadata']['name'].startsWith(`${id}-`) && !p['metadata']['deletionTimestamp']);

  /** What the planner does: remove again while something of the customer is listed (its NetworkPolicy outlives its pods). */
  async function removeUntilGone(id: string, customer: string): Promise<void> {
    await waitFor(async () => {
      await runtime.remove(id);
      return (await runtime.listFor(customer)).length === 0;
    });
  }

  const deployment = (customer: string): Json | undefined =>
    api.object('deployments', NS, objectName(customer)) as Json | undefined;

  it('creates Secret, PVC, Service and a stopped Deployment, all with the contract labels', async () => {
    const customer = uniqueName('k');
    const dir = await workspace(customer, { 'workspace/AGENTS.md': '# agents', 'openclaw.json': '{"token":"t0p"}' });
    const id = await runtime.create(spec(customer, dir, 'hash-1'));
    expect(id).toBe(`blytz-${customer}`);
    for (const plural of ['secrets', 'persistentvolumeclaims', 'services', 'deployments']) {
      const object = api.object(plural, NS, id) as Json | undefined;
      expect(object?.['metadata']['labels'], plural).toMatchObject({
        'cloud.blytz.managed-by': 'blytz',
        'cloud.blytz.customer': customer,
        'cloud.blytz.instance': 'k8s-test',
      });
    }
    const d = deployment(customer) as Json;
    expect(d['metadata']['labels']['cloud.blytz.spec-hash']).toBe('hash-1');
    expect(d['spec']['replicas']).toBe(0);
    const secret = api.object('secrets', NS, id) as Json;
    const contents = Object.values(secret['data'] as Record<string, string>).map((v) => Buffer.from(v, 'base64').toString());
    expect(contents.sort()).toEqual(['# agents', '{"token":"t0p"}']);
    expect((api.object('services', NS, id) as Json)['spec']['ports'][0]).toMatchObject({ port: 30001, targetPort: 18789 });

    const [observed] = await runtime.listFor(customer);
    expect(observed).toMatchObject({ id, customer, specHash: 'hash-1', state: 'exited', hostPort: 30001 });

    await runtime.start(id);
    // The Deployment controller acts a moment later, as the real one does.
    await waitFor(async () => (await runtime.listFor(customer))[0]?.health === 'healthy');
    expect((await runtime.listFor(customer))[0]).toMatchObject({ state: 'running', health: 'healthy' });
    await runtime.stop(id);
    expect((await runtime.listFor(customer))[0]).toMatchObject({ state: 'exited' });
  });

  it('observes with one list per kind', async () => {
    await runtime.list();
    const gets = api.requests.filter((r) => r.method === 'GET');
    expect(gets.map((r) => r.path.split('/').at(-1)).sort()).toEqual([
      'deployments',
      'networkpolicies',
      'persistentvolumeclaims',
      'pods',
      'services',
    ]);
    for (const r of gets)
      expect(decodeURIComponent(r.query)).toContain('cloud.blytz.managed-by=blytz,cloud.blytz.instance=k8s-test');
  });

  it('updates the Deployment only when the spec hash changes', async () => {
    const customer = uniqueName('k');
    const dir = await workspace(customer, { 'workspace/AGENTS.md': 'a', 'openclaw.json': '{}' });
    const id = await runtime.create(spec(customer, dir, 'hash-1'));
    await runtime.start(id);
    const generation = deployment(customer)?.['metadata']['generation'];
    api.requests.length = 0;
    await runtime.create(spec(customer, dir, 'hash-1'));
    expect(api.requests.filter((r) => r.method === 'PUT')).toEqual([]);
    expect(deployment(customer)?.['spec']['replicas']).toBe(1); // untouched: still running

    await runtime.create(spec(customer, dir, 'hash-2'));
    const updated = deployment(customer) as Json;
    expect(updated['metadata']['labels']['cloud.blytz.spec-hash']).toBe('hash-2');
    expect(updated['spec']['template']['metadata']['labels']['cloud.blytz.spec-hash']).toBe('hash-2');
    expect(updated['metadata']['generation']).toBeGreaterThan(generation);
    // Updated in place at the replicas it had: still running, now on the new spec.
    expect(updated['spec']['replicas']).toBe(1);
    expect((await runtime.listFor(customer))[0]).toMatchObject({ specHash: 'hash-2', state: 'running' });
  });

  it('re-rendered files reach the Secret through KubernetesWorkspaces, unchanged ones cause no write', async () => {
    const customer = uniqueName('k');
    const dir = await workspace(customer, { 'workspace/AGENTS.md': 'v1', 'openclaw.json': '{}' });
    const id = await runtime.create(spec(customer, dir, 'h'));
    const written: string[] = [];
    const inner = { write: async (c: string) => void written.push(c) } as unknown as Workspaces;
    const workspaces = new KubernetesWorkspaces(inner, runtime);
    const rendered = (agents: string) =>
      ({
        files: [
          { path: 'workspace/AGENTS.md', content: agents, secret: false },
          { path: 'openclaw.json', content: '{}', secret: true },
        ],
      }) as never;
    api.requests.length = 0;
    await workspaces.write(customer, rendered('v1'));
    expect(api.requests.filter((r) => r.method === 'PUT')).toEqual([]);
    await workspaces.write(customer, rendered('v2'));
    const secret = api.object('secrets', NS, id) as Json;
    expect(Object.values(secret['data'] as Record<string, string>).map((v) => Buffer.from(v, 'base64').toString())).toContain(
      'v2',
    );
    expect(written).toEqual([customer, customer]);
  });

  it("a customer's Secret gone behind its back makes its workspace stale (looked at by name: the kit grants no Secret list), and the next write brings it back", async () => {
    const customer = uniqueName('sec');
    const dir = await workspace(customer, { 'workspace/AGENTS.md': 'v1', 'openclaw.json': '{}' });
    const id = await runtime.create(spec(customer, dir, 'h'));
    const inner = {
      observe: async () => ({ exists: true, contentHash: 'rendered' }),
      write: async () => {},
    } as unknown as Workspaces;
    const workspaces = new KubernetesWorkspaces(inner, runtime);
    expect(await workspaces.observe(customer)).toEqual({ exists: true, contentHash: 'rendered' });
    await api.kubeConfig().makeApiClient(CoreV1Api).deleteNamespacedSecret({ name: id, namespace: NS });
    expect(await workspaces.observe(customer)).toEqual({ exists: true });
    await workspaces.write(customer, { files: [{ path: 'workspace/AGENTS.md', content: 'v1', secret: false }] } as never);
    expect(api.object('secrets', NS, id)).toBeDefined();
    expect(await workspaces.observe(customer)).toEqual({ exists: true, contentHash: 'rendered' });
    // Neither the listing nor the observation ever asked for more than that one Secret.
    await runtime.list();
    expect(api.requests.filter((r) => r.path === `/api/v1/namespaces/${NS}/secrets` && r.method === 'GET')).toEqual([]);
    expect(api.forbidden).toEqual([]);
  });

  it('remove deletes Deployment, Service, Secret and NetworkPolicy but keeps the workspace volume until the purge', async () => {
    const customer = uniqueName('k');
    const dir = await workspace(customer, { 'workspace/AGENTS.md': 'a', 'openclaw.json': '{}' });
    const id = await runtime.create(spec(customer, dir, 'h'));
    expect(await runtime.listVolumes()).toContain(customer);
    await removeUntilGone(id, customer);
    await runtime.remove(id); // idempotent
    for (const plural of ['deployments', 'services', 'secrets', 'networkpolicies'])
      expect(api.object(plural, NS, id), plural).toBeUndefined();
    expect(api.object('persistentvolumeclaims', NS, id)).toBeDefined();
    await runtime.removeWorkspace(customer);
    expect(api.object('persistentvolumeclaims', NS, id)).toBeUndefined();
  });

  it('remove keeps the pods isolated until they are gone: the Deployment goes in the foreground, the NetworkPolicy after its last pod', async () => {
    const customer = uniqueName('iso');
    const dir = await workspace(customer, { 'openclaw.json': '{}' });
    const id = await runtime.create(spec(customer, dir, 'h'));
    await runtime.start(id);
    await waitFor(() => runningPods(id).length === 1);
    const podsOf = () => api.objects('pods', NS).filter((p) => p['metadata']['labels']['cloud.blytz.customer'] === customer);
    api.holdKubelet(); // the assistant takes its grace period to stop
    try {
      await runtime.remove(id);
      expect(api.object('services', NS, id)).toBeUndefined();
      // The garbage collector deletes its pod (a moment later, as the real one does); the pod is
      // still running, Terminating, so the Deployment waits for it and the policy stays.
      await waitFor(() => podsOf()[0]?.['metadata']['deletionTimestamp'] !== undefined);
      expect(podsOf()).toHaveLength(1);
      expect(deployment(customer)?.['metadata']['finalizers']).toEqual(['foregroundDeletion']);
      expect(api.object('networkpolicies', NS, id)).toBeDefined();
      expect((await runtime.listFor(customer))[0]).toMatchObject({ id, state: 'removing' });
      await runtime.remove(id); // the planner asks again while it is removing: still isolated
      expect(api.object('networkpolicies', NS, id)).toBeDefined();
    } finally {
      api.releaseKubelet();
    }
    await waitFor(() => deployment(customer) === undefined && podsOf().length === 0);
    // What is left without its Deployment is listed, so the planner removes it (no orphan stays).
    expect(await runtime.listFor(customer)).toEqual([
      expect.objectContaining({ id, customer, state: 'dead', healthMessage: 'no Deployment; left: NetworkPolicy' }),
    ]);
    await runtime.remove(id);
    expect(api.object('networkpolicies', NS, id)).toBeUndefined();
    expect(await runtime.listFor(customer)).toEqual([]);
  });

  it('an orphan (our marks, no customer behind it) is listed and removed like any other', async () => {
    const customer = uniqueName('orphan');
    const dir = await workspace(customer, { 'openclaw.json': '{}' });
    await runtime.create(spec(customer, dir, 'h'));
    const orphan = (await runtime.list()).find((c) => c.customer === customer);
    expect(orphan).toBeDefined();
    await removeUntilGone(orphan?.id ?? '', customer);
    expect((await runtime.list()).some((c) => c.customer === customer)).toBe(false);
  });

  it('a missing part makes the Deployment dead (so the planner recreates it); Deployment status maps to health', async () => {
    const customer = uniqueName('k');
    const dir = await workspace(customer, { 'openclaw.json': '{}' });
    const id = await runtime.create(spec(customer, dir, 'h'));
    await runtime.start(id);
    await waitFor(async () => (await runtime.listFor(customer))[0]?.health === 'healthy');
    api.simulateDeployments = false;
    try {
      // Started a minute ago: past the grace in which a failure only means "still starting".
      await api
        .kubeConfig()
        .makeApiClient(AppsV1Api)
        .patchNamespacedDeployment(
          {
            name: id,
            namespace: NS,
            body: { metadata: { annotations: { 'cloud.blytz/started-at': new Date(Date.now() - 60_000).toISOString() } } },
          },
          MERGE_PATCH,
        );
      api.setStatus('deployments', NS, id, {
        observedGeneration: deployment(customer)?.['metadata']['generation'],
        replicas: 1,
        conditions: [{ type: 'Progressing', status: 'False', reason: 'ProgressDeadlineExceeded', message: 'stuck' }],
      });
      expect((await runtime.listFor(customer))[0]).toMatchObject({ state: 'running', health: 'unhealthy' });
      api.setStatus('deployments', NS, id, {
        observedGeneration: deployment(customer)?.['metadata']['generation'],
        replicas: 1,
        readyReplicas: 0,
      });
      expect((await runtime.listFor(customer))[0]).toMatchObject({ state: 'running', health: 'starting' });
    } finally {
      api.simulateDeployments = true;
    }
    const core = api.kubeConfig().makeApiClient(CoreV1Api);
    await core.deleteNamespacedService({ name: id, namespace: NS });
    expect((await runtime.listFor(customer))[0]).toMatchObject({ state: 'dead', healthMessage: 'missing Service' });
    await runtime.create(spec(customer, dir, 'h'));
    expect((await runtime.listFor(customer))[0]?.state).not.toBe('dead');
  });

  it('an object of the same name that Blytz did not make is never overwritten or deleted: the create fails and says why', async () => {
    const customer = uniqueName('k');
    const name = objectName(customer);
    const core = api.kubeConfig().makeApiClient(CoreV1Api);
    const theirs = await core.createNamespacedService({
      namespace: NS,
      body: { metadata: { name, labels: { app: 'theirs' } }, spec: { ports: [{ port: 80 }], selector: { app: 'theirs' } } },
    });
    const claim = await core.createNamespacedPersistentVolumeClaim({
      namespace: NS,
      body: { metadata: { name }, spec: { accessModes: ['ReadWriteOnce'], resources: { requests: { storage: '5Gi' } } } },
    });
    const dir = await workspace(customer, { 'openclaw.json': '{}' });
    await expect(runtime.create(spec(customer, dir, 'h'))).rejects.toThrow(/not made by Blytz/);
    const service = api.object('services', NS, name) as Json;
    expect(service['metadata']['resourceVersion']).toBe(theirs.metadata?.resourceVersion);
    expect(service['metadata']['labels']).toEqual({ app: 'theirs' });
    expect((api.object('persistentvolumeclaims', NS, name) as Json)['metadata']['resourceVersion']).toBe(
      claim.metadata?.resourceVersion,
    );
    // Removing "the customer's container" by that name leaves them alone too.
    await runtime.remove(name);
    await runtime.removeWorkspace(customer);
    expect(api.object('services', NS, name)).toBeDefined();
    expect(api.object('persistentvolumeclaims', NS, name)).toBeDefined();
  });

  it('an update is one write of the Deployment: its Recreate strategy replaces the pod, never two at once; Service and Deployment stay', async () => {
    const customer = uniqueName('upd');
    const dir = await workspace(customer, { 'openclaw.json': '{}' });
    const id = await runtime.create(spec(customer, dir, 'hash-1'));
    await runtime.start(id);
    await waitFor(() => runningPods(id).length === 1);
    const [before] = runningPods(id);
    const uids = () => ({
      deployment: api.object('deployments', NS, id)?.['metadata']['uid'],
      service: api.object('services', NS, id)?.['metadata']['uid'],
    });
    const was = uids();
    // What the reconciler does for the planner's in-place createContainer: create, then start.
    await runtime.create(spec(customer, dir, 'hash-2'));
    await runtime.start(id);
    await waitFor(async () => {
      const [observed] = await runtime.listFor(customer);
      return observed?.specHash === 'hash-2' && observed.health === 'healthy' && runningPods(id).length === 1;
    });
    expect(runningPods(id)[0]?.['metadata']['name']).not.toBe(before?.['metadata']['name']);
    expect(uids()).toEqual(was);
    expect(api.maxPodsAtOnce(customer)).toBe(1);
  });

  it("a change of the controller's fields of openclaw.json replaces the pod (its seed merges them); a Markdown change reaches the running pod without one", async () => {
    const customer = uniqueName('cfg');
    const config = (token: string) => JSON.stringify({ gateway: { auth: { mode: 'token', token } } });
    const dir = await workspace(customer, { 'workspace/AGENTS.md': 'v1', 'openclaw.json': config('t1') });
    const id = await runtime.create(spec(customer, dir, 'h'));
    await runtime.start(id);
    await waitFor(() => runningPods(id).length === 1);
    const first = runningPods(id)[0]?.['metadata']['name'];
    const files = (agents: string, token: string) => [
      { path: 'workspace/AGENTS.md', content: Buffer.from(agents) },
      { path: 'openclaw.json', content: Buffer.from(config(token)) },
    ];
    const annotation = () =>
      deployment(customer)?.['spec']['template']['metadata']['annotations']['cloud.blytz/owned-config-hash'];
    const before = annotation();
    await runtime.writeFiles(customer, files('v2', 't1'));
    expect(annotation()).toBe(before);
    expect(deployment(customer)?.['metadata']['generation']).toBe(
      api.object('deployments', NS, id)?.['status']['observedGeneration'],
    );
    await runtime.writeFiles(customer, files('v2', 't2'));
    expect(annotation()).not.toBe(before);
    // Recreate: the old pod goes, then the new one starts, whose seed merges the new token.
    await waitFor(() => runningPods(id).length === 1 && runningPods(id)[0]?.['metadata']['name'] !== first);
    expect(api.maxPodsAtOnce(customer)).toBe(1);
    // The same Deployment written again by create (a reconcile of the same spec) keeps it.
    api.requests.length = 0;
    await writeFile(join(dir, 'openclaw.json'), config('t2'));
    await runtime.create(spec(customer, dir, 'h'));
    expect(api.requests.filter((r) => r.method === 'PUT' && r.path.includes('/deployments/'))).toEqual([]);
  });

  it('a restart makes a new pod, where a stop and a start in quick succession merge into nothing', async () => {
    const customer = uniqueName('rst');
    const dir = await workspace(customer, { 'openclaw.json': '{}' });
    const id = await runtime.create(spec(customer, dir, 'h'));
    await runtime.start(id);
    await waitFor(() => runningPods(id).length === 1);
    const first = runningPods(id)[0]?.['metadata']['name'];
    // The Deployment controller sees replicas 1 -> 0 -> 1 in one sync: the same pod keeps running.
    api.holdDeploymentController();
    await runtime.stop(id);
    await runtime.start(id);
    api.releaseDeploymentController();
    await waitFor(async () => (await runtime.listFor(customer))[0]?.health === 'healthy');
    expect(runningPods(id).map((p) => p['metadata']['name'])).toEqual([first]);
    await runtime.restart(id);
    await waitFor(() => runningPods(id).length === 1 && runningPods(id)[0]?.['metadata']['name'] !== first);
    expect(api.maxPodsAtOnce(customer)).toBe(1);
  });

  it('a pod crash-looping after its first success is unhealthy, with its exit code, not starting forever', async () => {
    const customer = uniqueName('crash');
    const dir = await workspace(customer, { 'openclaw.json': '{}' });
    const id = await runtime.create(spec(customer, dir, 'h'));
    await runtime.start(id);
    await waitFor(async () => (await runtime.listFor(customer))[0]?.health === 'healthy');
    // Started a minute ago: past the grace in which a failure only means "still starting".
    await api
      .kubeConfig()
      .makeApiClient(AppsV1Api)
      .patchNamespacedDeployment(
        {
          name: id,
          namespace: NS,
          body: { metadata: { annotations: { 'cloud.blytz/started-at': new Date(Date.now() - 60_000).toISOString() } } },
        },
        MERGE_PATCH,
      );
    api.crashLoop(NS, id, 137);
    const observed = await waitFor(async () => {
      const [c] = await runtime.listFor(customer);
      return c?.health === 'unhealthy' ? c : undefined;
    });
    expect(observed).toMatchObject({ state: 'running' });
    expect(observed.healthMessage).toMatch(/crash-looping: container assistant exited with code 137/);
    // The Deployment's own conditions still say its rollout succeeded: only the pods tell.
    const conditions = api.object('deployments', NS, id)?.['status']['conditions'] as Json[];
    expect(conditions.find((c) => c['type'] === 'Progressing')).toMatchObject({
      status: 'True',
      reason: 'NewReplicaSetAvailable',
    });
  });

  it("isolates each customer's pods: in only from Caddy to the assistant's port; out only to DNS and the internet, never cluster ranges or the metadata service", async () => {
    const customer = uniqueName('net');
    const dir = await workspace(customer, { 'openclaw.json': '{}' });
    const id = await runtime.create(spec(customer, dir, 'h'));
    await runtime.start(id);
    await waitFor(() => runningPods(id).length === 1);
    const policy = api.object('networkpolicies', NS, id) as Json;
    expect(policy, 'NetworkPolicy').toBeDefined();
    // A valid object by the real OpenAPI model.
    expect(() => new NetworkPolicy(policy as never).validate()).not.toThrow();
    const pod = runningPods(id)[0] as Json;
    const selects = (selector: Record<string, string>, labels: Record<string, string>) =>
      Object.entries(selector).every(([k, v]) => labels[k] === v);
    expect(selects(policy['spec']['podSelector']['matchLabels'], pod['metadata']['labels'])).toBe(true);
    // Another customer's pod is not selected by it (each has its own).
    expect(policy['spec']['podSelector']['matchLabels']['cloud.blytz.customer']).toBe(customer);
    expect(policy['spec']['policyTypes']).toEqual(['Ingress', 'Egress']);
    expect(policy['spec']['ingress']).toEqual([
      {
        from: [{ podSelector: { matchLabels: { 'app.kubernetes.io/name': 'blytz', 'app.kubernetes.io/component': 'caddy' } } }],
        ports: [{ protocol: 'TCP', port: 18789 }],
      },
    ]);
    const egress = policy['spec']['egress'] as Json[];
    expect(egress[0]?.['ports']).toEqual([
      { protocol: 'UDP', port: 53 },
      { protocol: 'TCP', port: 53 },
    ]);
    const blocks = egress.flatMap((r) => (r['to'] as Json[]).map((t) => t['ipBlock']).filter(Boolean));
    expect(blocks.map((b) => b['cidr'])).toEqual(['0.0.0.0/0', '::/0']);
    expect(blocks[0]?.['except']).toEqual(
      expect.arrayContaining(['169.254.0.0/16', '10.0.0.0/8', '172.16.0.0/12', '192.168.0.0/16']),
    );
    // No rule lets it reach pods or namespaces other than DNS.
    const peers = egress.flatMap((r) => r['to'] as Json[]).filter((t) => !t['ipBlock']);
    expect(peers).toEqual([
      {
        namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'kube-system' } },
        podSelector: { matchLabels: { 'k8s-app': 'kube-dns' } },
      },
    ]);
    // Deleted behind our back: the Deployment counts as broken until it is back.
    await api.kubeConfig().makeApiClient(NetworkingV1Api).deleteNamespacedNetworkPolicy({ name: id, namespace: NS });
    expect((await runtime.listFor(customer))[0]).toMatchObject({ state: 'dead', healthMessage: 'missing NetworkPolicy' });
    await runtime.create(spec(customer, dir, 'h'));
    expect(api.object('networkpolicies', NS, id)).toBeDefined();
    await removeUntilGone(id, customer);
    expect(api.object('networkpolicies', NS, id)).toBeUndefined();
  });

  it('names for 63-character customers stay within 63 characters and keep the full name in the label', async () => {
    const customer = `${'a'.repeat(30)}-${'b'.repeat(32)}`;
    expect(customer).toHaveLength(63);
    const dir = await workspace(customer, { 'openclaw.json': '{}' });
    const id = await runtime.create(spec(customer, dir, 'h'));
    expect(id.length).toBeLessThanOrEqual(63);
    expect(id).toMatch(/^blytz-a+-b+-[0-9a-f]{8}$/);
    expect((await runtime.listFor(customer))[0]).toMatchObject({ id, customer });
    await runtime.remove(id);
  });

  describe('exec through pods/exec (pairing approval)', () => {
    const approve = (code: string) => ['openclaw', 'pairing', 'approve', 'telegram', code];
    // The assistant's side: one pending code is known; anything else is "no pending request".
    const standIn = (call: FakeExecCall): FakeExecResult =>
      call.command.join(' ') === approve('ABCD2345').join(' ')
        ? { exitCode: 0, stdout: 'Approved telegram sender 42.\n' }
        : { exitCode: 1, stderr: 'No pending pairing request for that code.\n' };

    afterEach(() => {
      api.execHandler = (call) => ({ exitCode: 127, stderr: `sh: ${call.command[0] ?? ''}: not found\n` });
    });

    async function runningCustomer(): Promise<{ customer: string; id: string }> {
      const customer = uniqueName('pair');
      const dir = await workspace(customer, { 'openclaw.json': '{}' });
      const id = await runtime.create(spec(customer, dir, 'h'));
      await runtime.start(id);
      await waitFor(() => runningPods(id).length === 1);
      return { customer, id };
    }

    it("runs the command in the assistant container of the Deployment's pod and returns exit code and output", async () => {
      api.execHandler = standIn;
      const { id } = await runningCustomer();
      const calls = api.execCalls.length;
      await expect(runtime.exec(id, approve('ABCD2345'))).resolves.toEqual({
        exitCode: 0,
        stdout: 'Approved telegram sender 42.\n',
        stderr: '',
      });
      await expect(runtime.exec(id, approve('ZZZZ9999'))).resolves.toEqual({
        exitCode: 1,
        stdout: '',
        stderr: 'No pending pairing request for that code.\n',
      });
      const [pod] = api.objects('pods', NS).filter((p) => p['metadata']['name'].startsWith(`${id}-`));
      expect(api.execCalls.slice(calls)).toEqual([
        { namespace: NS, pod: pod?.['metadata']['name'], container: 'assistant', command: approve('ABCD2345') },
        { namespace: NS, pod: pod?.['metadata']['name'], container: 'assistant', command: approve('ZZZZ9999') },
      ]);
    });

    it('pairingApprover on Kubernetes: approved, rejected, and not_running when scaled to 0 or gone', async () => {
      api.execHandler = standIn;
      const approvePairing = pairingApprover(runtime);
      const { customer, id } = await runningCustomer();
      expect(await approvePairing(customer, 'ABCD2345')).toEqual({ outcome: 'approved' });
      expect(await approvePairing(customer, 'ZZZZ9999')).toEqual({ outcome: 'rejected' });
      await runtime.stop(id);
      await waitFor(() => !api.objects('pods', NS).some((p) => p['metadata']['name'].startsWith(`${id}-`)));
      expect(await approvePairing(customer, 'ABCD2345')).toEqual({ outcome: 'not_running' });
      // Asked directly, exec finds no pod to run in.
      await expect(runtime.exec(id, approve('ABCD2345'))).rejects.toBeInstanceOf(ContainerNotRunningError);
      await runtime.remove(id);
      await expect(runtime.exec(id, approve('ABCD2345'))).rejects.toThrow(/no such Deployment/);
    });

    it('a pod that is not running yet is not_running, not an error', async () => {
      api.execHandler = standIn;
      const { customer, id } = await runningCustomer();
      const [pod] = api.objects('pods', NS).filter((p) => p['metadata']['name'].startsWith(`${id}-`));
      api.setStatus('pods', NS, pod?.['metadata']['name'], { phase: 'Pending', containerStatuses: [] });
      expect(await pairingApprover(runtime)(customer, 'ABCD2345')).toEqual({ outcome: 'not_running' });
    });

    it('a container that stops between the listing and the exec is not_running, not a server error', async () => {
      const { customer, id } = await runningCustomer();
      const [pod] = api.objects('pods', NS).filter((p) => p['metadata']['name'].startsWith(`${id}-`));
      api.execHandler = () => {
        // The kubelet finds the container gone: the API server answers with a generic failure.
        api.setStatus('pods', NS, pod?.['metadata']['name'], {
          phase: 'Running',
          containerStatuses: [{ name: 'assistant', state: { waiting: {} } }],
        });
        throw new Error('container not found ("assistant")');
      };
      await expect(runtime.exec(id, approve('ABCD2345'))).rejects.toBeInstanceOf(ContainerNotRunningError);
      expect(await pairingApprover(runtime)(customer, 'ABCD2345')).toEqual({ outcome: 'not_running' });
    });

    it('a command that outlives its timeout is an ExecTimeoutError (not a dependency failure)', async () => {
      // The command ends only when the test says so: the exec can only settle by its own timeout.
      let finish: ((result: { exitCode: number }) => void) | undefined;
      api.execHandler = () => new Promise((resolve) => (finish = resolve));
      const { id } = await runningCustomer();
      try {
        await expect(runtime.exec(id, ['sleep', 'forever'], 300)).rejects.toBeInstanceOf(ExecTimeoutError);
        expect(finish).toBeDefined(); // the command did start, and is still running
      } finally {
        finish?.({ exitCode: 0 });
      }
    });

    it("a failure that is no exit code (the runtime could not start the command) is an error with the server's message", async () => {
      api.execHandler = () => {
        throw new Error('OCI runtime exec failed: executable file not found in $PATH');
      };
      const { id } = await runningCustomer();
      await expect(runtime.exec(id, ['nope'])).rejects.toThrow(/exec failed: OCI runtime exec failed/);
    });
  });
});
