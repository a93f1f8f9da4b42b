import { AppsV1Api, CoreV1Api, CustomObjectsApi, Exec } from '@kubernetes/client-node';
import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FakeKubeApi } from '../support/fake-kube-api.js';
import { KIT_SERVICE_ACCOUNT } from '../support/fake-kube/rbac.js';
import { waitFor } from '../support/wait-for.js';

/**
 * The tests' API server is only worth testing against where it behaves like kube-apiserver.
 * These are the behaviours the Kubernetes code is tested on, checked through the real
 * @kubernetes/client-node: what a refused, invalid or defaulted request looks like there.
 */
const NS = 'fake-api';

function statusOf(error: unknown): { code: number; body: Record<string, unknown> } {
  const e = error as { code?: number; body?: unknown };
  return { code: e.code ?? 0, body: typeof e.body === 'string' ? (JSON.parse(e.body) as Record<string, unknown>) : {} };
}

describe('the fake API server: RBAC as kube-apiserver enforces it', () => {
  let api: FakeKubeApi;

  beforeAll(async () => {
    api = new FakeKubeApi();
    api.simulateDeployments = true;
    await api.start();
  });

  afterAll(async () => {
    await api.stop();
  });

  it('a service account may do only what its Role grants: 403 Forbidden, worded as the real server words it', async () => {
    const controller = api.kitControllerConfig(NS).makeApiClient(CoreV1Api);
    const refused = await controller.listNamespacedSecret({ namespace: NS }).catch((error: unknown) => error);
    expect(statusOf(refused)).toEqual({
      code: 403,
      body: {
        kind: 'Status',
        apiVersion: 'v1',
        metadata: {},
        status: 'Failure',
        message: `secrets is forbidden: User "system:serviceaccount:${NS}:${KIT_SERVICE_ACCOUNT}" cannot list resource "secrets" in API group "" in the namespace "${NS}"`,
        reason: 'Forbidden',
        details: { group: '', kind: 'secrets' },
        code: 403,
      },
    });
    // Granted: a Secret by name (404 here, not 403).
    expect(statusOf(await controller.readNamespacedSecret({ name: 'nope', namespace: NS }).catch((e: unknown) => e)).code).toBe(
      404,
    );
    // A Role is namespaced: nothing in another namespace.
    const elsewhere = await controller.readNamespacedSecret({ name: 'x', namespace: 'other' }).catch((e: unknown) => e);
    expect(statusOf(elsewhere).body['message']).toBe(
      `secrets "x" is forbidden: User "system:serviceaccount:${NS}:${KIT_SERVICE_ACCOUNT}" cannot get resource "secrets" in API group "" in the namespace "other"`,
    );
    // Subresources are their own resource: the Customer's status, not the Customer.
    const custom = api.kubeConfig(api.serviceAccountToken(NS, KIT_SERVICE_ACCOUNT)).makeApiClient(CustomObjectsApi);
    const created = await custom
      .createNamespacedCustomObject({ group: 'blytz.cloud', version: 'v1alpha1', namespace: NS, plural: 'customers', body: {} })
      .catch((e: unknown) => e);
    expect(statusOf(created).code).toBe(403);
    expect(api.forbidden.map((f) => `${f.verb} ${f.resource}`)).toEqual(['list secrets', 'get secrets', 'create customers']);
    // Any other token is the cluster's administrator (the tests themselves, kubectl).
    await expect(api.kubeConfig().makeApiClient(CoreV1Api).listNamespacedSecret({ namespace: NS })).resolves.toBeDefined();
  });

  it('pods/exec over WebSocket needs both get and create on pods/exec (Kubernetes 1.35)', async () => {
    await api
      .kubeConfig()
      .makeApiClient(AppsV1Api)
      .createNamespacedDeployment({
        namespace: NS,
        body: {
          metadata: { name: 'shell' },
          spec: {
            replicas: 1,
            selector: { matchLabels: { app: 'shell' } },
            template: { metadata: { labels: { app: 'shell' } }, spec: { containers: [{ name: 'main', image: 'x' }] } },
          },
        },
      });
    const pod = await waitFor(
      () => api.objects('pods', NS).find((p) => p['metadata']['labels']['app'] === 'shell')?.['metadata']['name'] as string,
    );
    api.execHandler = () => ({ exitCode: 0, stdout: 'ok' });
    /** Execs as a service account of its own holding only `verbs` on pods/exec. */
    const execWith = (account: string, verbs: string[]) => {
      api.installRbac(
        [
          { kind: 'Role', metadata: { name: account }, rules: [{ apiGroups: [''], resources: ['pods/exec'], verbs }] },
          {
            kind: 'RoleBinding',
            metadata: { name: account },
            roleRef: { kind: 'Role', name: account },
            subjects: [{ kind: 'ServiceAccount', name: account }],
          },
        ],
        NS,
      );
      const exec = new Exec(api.kubeConfig(api.serviceAccountToken(NS, account)));
      const sink = () => new Writable({ write: (_chunk, _encoding, done) => done() });
      return new Promise<string>((resolve) => {
        exec
          .exec(NS, pod, 'main', ['true'], sink(), sink(), null, false, (status) => resolve(status.status ?? ''))
          .catch((error: unknown) => resolve(`refused: ${String((error as Error).message ?? error)}`));
      });
    };
    expect(await execWith('get-only', ['get'])).toMatch(/refused.*403/);
    expect(await execWith('create-only', ['create'])).toMatch(/refused.*403/);
    expect(await execWith('both', ['get', 'create'])).toBe('Success');
  });
});

describe('the fake API server: validation, defaulting, deletion and garbage collection as kube-apiserver does them', () => {
  let api: FakeKubeApi;

  beforeAll(async () => {
    api = new FakeKubeApi();
    api.simulateDeployments = true;
    await api.start();
  });

  afterAll(async () => {
    await api.stop();
  });

  const deploymentBody = (name: string, replicas = 1) => ({
    metadata: { name },
    spec: {
      replicas,
      selector: { matchLabels: { app: name } },
      template: { metadata: { labels: { app: name } }, spec: { containers: [{ name: 'main', image: 'img:1' }] } },
    },
  });

  it('built-in objects are checked against the OpenAPI models and the field rules: 422 Invalid, one cause per field', async () => {
    const apps = api.kubeConfig().makeApiClient(AppsV1Api);
    const bad = deploymentBody('bad');
    bad.spec.template.metadata.labels = { app: 'other' }; // the selector must match
    (bad.spec.template.spec.containers[0] as Record<string, unknown>)['ports'] = [{ containerPort: 70000 }];
    (bad.spec.template.spec.containers[0] as Record<string, unknown>)['resources'] = { limits: { memory: 'lots' } };
    const refused = statusOf(await apps.createNamespacedDeployment({ namespace: NS, body: bad }).catch((e: unknown) => e));
    expect(refused.code).toBe(422);
    expect(refused.body['reason']).toBe('Invalid');
    expect(refused.body['message']).toMatch(/^Deployment\.apps "bad" is invalid: \[/);
    const fields = ((refused.body['details'] as { causes: Array<{ field: string }> }).causes ?? []).map((c) => c.field);
    expect(fields).toEqual(
      expect.arrayContaining([
        'spec.template.spec.containers[0].resources.limits.memory',
        'spec.template.metadata.labels',
        'spec.template.spec.containers[0].ports[0].containerPort',
      ]),
    );
    const core = api.kubeConfig().makeApiClient(CoreV1Api);
    const badName = await core
      .createNamespacedService({
        namespace: NS,
        body: { metadata: { name: '9-starts-with-a-digit' }, spec: { ports: [{ port: 80 }] } },
      })
      .catch((e: unknown) => e);
    expect(statusOf(badName).body['message']).toMatch(/metadata\.name: Invalid value: "9-starts-with-a-digit": a DNS-1035 label/);
    expect(api.objects('deployments', NS).map((d) => d['metadata']['name'])).not.toContain('bad');
  });

  it('defaults are filled in as the server fills them in; a Service gets a cluster IP once, kept when an update leaves it out', async () => {
    const core = api.kubeConfig().makeApiClient(CoreV1Api);
    const service = await core.createNamespacedService({
      namespace: NS,
      body: { metadata: { name: 'web' }, spec: { selector: { app: 'web' }, ports: [{ port: 80 }] } },
    });
    expect(service.spec).toMatchObject({
      type: 'ClusterIP',
      sessionAffinity: 'None',
      ipFamilies: ['IPv4'],
      ports: [{ port: 80, protocol: 'TCP', targetPort: 80 }],
    });
    const ip = service.spec?.clusterIP;
    expect(ip).toMatch(/^10\.96\.\d+\.\d+$/);
    const replaced = await core.replaceNamespacedService({
      name: 'web',
      namespace: NS,
      body: {
        metadata: { name: 'web', resourceVersion: service.metadata?.resourceVersion ?? '' },
        spec: { ports: [{ port: 81 }] },
      },
    });
    expect(replaced.spec?.clusterIP).toBe(ip);
    const moved = await core
      .replaceNamespacedService({
        name: 'web',
        namespace: NS,
        body: {
          metadata: { name: 'web', resourceVersion: replaced.metadata?.resourceVersion ?? '' },
          spec: { clusterIP: '10.96.9.9', ports: [{ port: 81 }] },
        },
      })
      .catch((e: unknown) => e);
    expect(statusOf(moved).body['message']).toMatch(/spec\.clusterIP: Invalid value: field is immutable/);

    const created = await api
      .kubeConfig()
      .makeApiClient(AppsV1Api)
      .createNamespacedDeployment({ namespace: NS, body: deploymentBody('defaults') });
    expect(created.spec).toMatchObject({
      revisionHistoryLimit: 10,
      progressDeadlineSeconds: 600,
      strategy: { type: 'RollingUpdate' },
    });
    expect(created.spec?.template.spec).toMatchObject({
      restartPolicy: 'Always',
      terminationGracePeriodSeconds: 30,
      dnsPolicy: 'ClusterFirst',
    });
    expect(created.spec?.template.spec?.containers[0]).toMatchObject({
      imagePullPolicy: 'IfNotPresent',
      terminationMessagePath: '/dev/termination-log',
    });
  });

  it('a Deployment owns its ReplicaSets and they their pods; Background deletion collects them after it, a pod Terminating for its grace period', async () => {
    const apps = api.kubeConfig().makeApiClient(AppsV1Api);
    await apps.createNamespacedDeployment({ namespace: NS, body: deploymentBody('bg') });
    const pod = await waitFor(() => api.objects('pods', NS).find((p) => p['metadata']['labels']['app'] === 'bg'));
    const [set] = api.objects('replicasets', NS).filter((r) => r['metadata']['labels']['app'] === 'bg');
    expect(pod['metadata']['ownerReferences']).toEqual([
      expect.objectContaining({ kind: 'ReplicaSet', uid: set?.['metadata']['uid'], controller: true, blockOwnerDeletion: true }),
    ]);
    api.holdKubelet();
    try {
      await apps.deleteNamespacedDeployment({ name: 'bg', namespace: NS }); // Background by default
      expect(api.object('deployments', NS, 'bg')).toBeUndefined();
      const terminating = await waitFor(
        () =>
          api.object('pods', NS, pod['metadata']['name'])?.['metadata']['deletionTimestamp'] &&
          api.object('pods', NS, pod['metadata']['name']),
      );
      expect(terminating['metadata']['deletionGracePeriodSeconds']).toBe(30);
    } finally {
      api.releaseKubelet();
    }
    await waitFor(
      () =>
        api.object('pods', NS, pod['metadata']['name']) === undefined &&
        api.objects('replicasets', NS).every((r) => r['metadata']['labels']['app'] !== 'bg'),
    );
  });

  it('Foreground deletion keeps the owner, Terminating with a bumped generation, until its blocking dependents are gone; Orphan leaves them without the reference', async () => {
    const apps = api.kubeConfig().makeApiClient(AppsV1Api);
    await apps.createNamespacedDeployment({ namespace: NS, body: deploymentBody('fg') });
    const pod = await waitFor(() => api.objects('pods', NS).find((p) => p['metadata']['labels']['app'] === 'fg'));
    const generation = api.object('deployments', NS, 'fg')?.['metadata']['generation'] as number;
    api.holdKubelet();
    try {
      await apps.deleteNamespacedDeployment({ name: 'fg', namespace: NS, propagationPolicy: 'Foreground' });
      const deleting = api.object('deployments', NS, 'fg');
      expect(deleting?.['metadata']).toMatchObject({ finalizers: ['foregroundDeletion'], generation: generation + 1 });
      expect(deleting?.['metadata']['deletionTimestamp']).toBeDefined();
      await waitFor(() => api.object('pods', NS, pod['metadata']['name'])?.['metadata']['deletionTimestamp'] !== undefined);
      expect(api.object('deployments', NS, 'fg')).toBeDefined(); // its pod still runs
    } finally {
      api.releaseKubelet();
    }
    await waitFor(() => api.object('deployments', NS, 'fg') === undefined);
    expect(api.object('pods', NS, pod['metadata']['name'])).toBeUndefined();

    await apps.createNamespacedDeployment({ namespace: NS, body: deploymentBody('orphan') });
    await waitFor(() => api.objects('pods', NS).some((p) => p['metadata']['labels']['app'] === 'orphan'));
    await apps.deleteNamespacedDeployment({ name: 'orphan', namespace: NS, propagationPolicy: 'Orphan' });
    await waitFor(() => api.object('deployments', NS, 'orphan') === undefined);
    const [left] = api.objects('replicasets', NS).filter((r) => r['metadata']['labels']['app'] === 'orphan');
    expect(left?.['metadata']['ownerReferences']).toEqual([]);
    expect(api.objects('pods', NS).filter((p) => p['metadata']['labels']['app'] === 'orphan')).toHaveLength(1);
  });
});
