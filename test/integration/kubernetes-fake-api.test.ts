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
