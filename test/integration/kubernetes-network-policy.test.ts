import { CoreV1Api, NetworkingV1Api } from '@kubernetes/client-node';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { PLANS } from '../../src/domain/customer.js';
import { unguarded } from '../../src/resilience/guard.js';
import { KubernetesRuntime } from '../../src/runtime/kubernetes/kubernetes-runtime.js';
import { objectName } from '../../src/kube-api/customer-object-meta.js';
import type { ContainerSpec } from '../../src/runtime/runtime.js';
import { customerNetwork } from '../../src/runtime/select-runtime.js';
import { FakeKubeApi, type LooseObject } from '../support/fake-kube-api.js';
import { connectionAllowed, namespaceLabels, type Endpoint } from '../support/fake-kube/network-policy.js';
import { stubHealth, uniqueName } from '../support/fixtures.js';
import { kitEnv, kitLabels, kitNetworkPolicies } from '../support/kube-kit.js';
import { waitFor } from '../support/wait-for.js';
import { renderMarkerPath } from '../../src/workspace/file-workspaces.js';

/**
 * Each customer's NetworkPolicy and the kit's own, as behaviour: customers' pods made by the
 * runtime (driven as the kit's controller) beside stand-ins for the kit's Caddy and controller
 * pods, Postgres, cluster DNS and an ingress controller, and the tests' NetworkPolicy evaluator
 * deciding each connection as a CNI enforcing the policies present would.
 */
const NS = 'blytz';
describe("NetworkPolicies as behaviour: each customer's and the kit's", () => {
  let api: FakeKubeApi;
  let root: string;
  const pods: Record<string, LooseObject> = {};

  beforeAll(async () => {
    api = new FakeKubeApi();
    api.simulateDeployments = true;
    await api.start();
    root = await mkdtemp(join(tmpdir(), 'blytz-netpol-'));
    const admin = api.kubeConfig();
    for (const body of kitNetworkPolicies())
      await admin.makeApiClient(NetworkingV1Api).createNamespacedNetworkPolicy({ namespace: NS, body });
    // Stand-ins for what else runs in the cluster, with the labels and ports the kit gives them.
    const standIn = async (key: string, namespace: string, labels: Record<string, string>, ports: Array<[string, number]>) => {
      const core = admin.makeApiClient(CoreV1Api);
      const name = `${key}-0`;
      await core.createNamespacedPod({
        namespace,
        body: {
          metadata: { name, labels },
          spec: { containers: [{ name: 'main', image: 'x:1', ports: ports.map(([n, p]) => ({ name: n, containerPort: p })) }] },
        },
      });
      api.setStatus('pods', namespace, name, { phase: 'Running', podIP: `10.244.200.${Object.keys(pods).length + 2}` });
      pods[key] = api.object('pods', namespace, name) as LooseObject;
    };
    await standIn('controller', NS, kitLabels('controller'), [
      ['http', 8080],
      ['models', 8090],
    ]);
    await standIn('caddy', NS, kitLabels('caddy'), [
      ['http', 8080],
      ['admin', 2019],
    ]);
    await standIn('postgres', 'db', { app: 'postgres' }, [['postgres', 5432]]);
    await standIn('dns', 'kube-system', { 'k8s-app': 'kube-dns' }, [['dns', 53]]);
    await standIn('nginx', 'ingress-nginx', { 'app.kubernetes.io/name': 'ingress-nginx' }, [['http', 80]]);
  });

  afterAll(async () => {
    await api.stop();
    await rm(root, { recursive: true, force: true });
  });

  /** A running customer made by a runtime configured from `env` (as loadConfig reads it). */
  async function customer(env: Record<string, string>, instance: string): Promise<{ name: string; pod: () => LooseObject }> {
    const runtime = new KubernetesRuntime(unguarded, {
      kubeConfig: api.kitControllerConfig(NS),
      namespace: NS,
      extraLabels: { 'cloud.blytz.instance': instance },
      // The kit gives the platform's model key as a file from its Secret; here, any value.
      network: customerNetwork(loadConfig({ BLYTZ_RUNTIME: 'kubernetes', BLYTZ_ANTHROPIC_API_KEY: 'platform-key', ...env })),
    });
    const name = uniqueName('net');
    const dir = join(root, name);
    await mkdir(dir, { recursive: true });
    await writeFile(join(dir, 'openclaw.json'), '{}');
    // The render's record lives beside the customer folders, out of the container's reach.
    await mkdir(dirname(renderMarkerPath(dir)), { recursive: true });
    await writeFile(renderMarkerPath(dir), JSON.stringify({ contentHash: 'x', template: 't', files: ['openclaw.json'] }));
    const spec: ContainerSpec = {
      customer: name,
      image: 'blytz/assistant:1',
      containerPort: 18789,
      hostPort: 30001,
      user: '1000:1000',
      mounts: [{ hostPath: dir, containerPath: '/home/node/.openclaw', readOnly: false }],
      env: {},
      resources: PLANS.personal,
      ...stubHealth(),
      specHash: 'h',
    };
    await runtime.start(await runtime.create(spec));
    const podOf = () =>
      api
        .objects('pods', NS)
        .find((p) => p['metadata']['labels']['cloud.blytz.customer'] === name && !p['metadata']['deletionTimestamp']);
    await waitFor(() => podOf());
    return { name, pod: () => podOf() as LooseObject };
  }

  const allowed = (from: Endpoint, to: Endpoint, port: number, protocol: 'TCP' | 'UDP' = 'TCP') =>
    connectionAllowed(
      { namespaces: namespaceLabels([NS, 'db', 'kube-system', 'ingress-nginx']), policies: api.objects('networkpolicies') },
      from,
      to,
      port,
      protocol,
    );

  it("a customer reaches DNS, the internet and the model gateway; never another customer, the controller's API, Postgres, the cluster's addresses or the metadata service", async () => {
    const env = kitEnv();
    expect(env['BLYTZ_MODEL_GATEWAY_PORT']).toBe('8090');
    const alice = await customer(env, 'kit');
    const bob = await customer(env, 'kit');
    const a = { pod: alice.pod() };
    expect(allowed(a, { pod: pods['dns'] as LooseObject }, 53, 'UDP')).toBe(true);
    expect(allowed(a, { pod: pods['dns'] as LooseObject }, 53, 'TCP')).toBe(true);
    expect(allowed(a, { ip: '1.1.1.1' }, 443)).toBe(true);
    expect(allowed(a, { ip: '2606:4700:4700::1111' }, 443)).toBe(true);
    expect(allowed(a, { pod: pods['controller'] as LooseObject }, 8090)).toBe(true);

    expect(allowed(a, { pod: bob.pod() }, 18789)).toBe(false);
    expect(allowed({ pod: bob.pod() }, a, 18789)).toBe(false);
    expect(allowed(a, { pod: pods['controller'] as LooseObject }, 8080)).toBe(false);
    expect(allowed(a, { pod: pods['caddy'] as LooseObject }, 2019)).toBe(false);
    expect(allowed(a, { pod: pods['postgres'] as LooseObject }, 5432)).toBe(false);
    expect(allowed(a, { pod: pods['dns'] as LooseObject }, 8080)).toBe(false);
    for (const ip of ['169.254.169.254', '10.96.0.1', '172.17.0.1', '192.168.1.1', '100.64.0.1', 'fd00:ec2::254', 'fe80::1'])
      expect(allowed(a, { ip }, 80), ip).toBe(false);
  });

  it('in: Caddy to the assistant port only; nothing else, not the controller, not an ingress controller', async () => {
    const alice = await customer(kitEnv(), 'kit');
    const a = { pod: alice.pod() };
    expect(allowed({ pod: pods['caddy'] as LooseObject }, a, 18789)).toBe(true);
    expect(allowed({ pod: pods['caddy'] as LooseObject }, a, 22)).toBe(false);
    expect(allowed({ pod: pods['controller'] as LooseObject }, a, 18789)).toBe(false);
    expect(allowed({ pod: pods['nginx'] as LooseObject }, a, 18789)).toBe(false);
    expect(allowed({ ip: '203.0.113.7' }, a, 18789)).toBe(false);
  });

  it("the kit's own policies: the controller's HTTP port open in the cluster, its model gateway port to customer pods only; Caddy's admin API to the controller only", async () => {
    const alice = await customer(kitEnv(), 'kit');
    const controller = { pod: pods['controller'] as LooseObject };
    const caddy = { pod: pods['caddy'] as LooseObject };
    expect(allowed(caddy, controller, 8080)).toBe(true);
    expect(allowed(caddy, controller, 8090)).toBe(false);
    expect(allowed({ pod: pods['postgres'] as LooseObject }, controller, 8090)).toBe(false);
    expect(allowed({ pod: alice.pod() }, controller, 8090)).toBe(true);
    expect(allowed(controller, caddy, 2019)).toBe(true);
    expect(allowed({ pod: pods['nginx'] as LooseObject }, caddy, 2019)).toBe(false);
    expect(allowed({ ip: '203.0.113.7' }, caddy, 8080)).toBe(true);
  });

  it('with BLYTZ_ROUTES=ingress the ingress controller pods are let in instead of Caddy (BLYTZ_INGRESS_CONTROLLER_NAMESPACE, _PODS); without BLYTZ_MODEL_GATEWAY_PORT no way to the gateway', async () => {
    const carol = await customer({ BLYTZ_ROUTES: 'ingress' }, 'ingress');
    const c = { pod: carol.pod() };
    expect(allowed({ pod: pods['nginx'] as LooseObject }, c, 18789)).toBe(true);
    expect(allowed({ pod: pods['caddy'] as LooseObject }, c, 18789)).toBe(false);
    expect(allowed(c, { pod: pods['controller'] as LooseObject }, 8090)).toBe(false);
    const dave = await customer(
      {
        BLYTZ_ROUTES: 'ingress',
        BLYTZ_INGRESS_CONTROLLER_NAMESPACE: 'kube-system',
        BLYTZ_INGRESS_CONTROLLER_PODS: 'k8s-app=kube-dns',
      },
      'ingress',
    );
    expect(allowed({ pod: pods['nginx'] as LooseObject }, { pod: dave.pod() }, 18789)).toBe(false);
    expect(allowed({ pod: pods['dns'] as LooseObject }, { pod: dave.pod() }, 18789)).toBe(true);
  });

  it('a customer being removed stays isolated until its last pod is gone', async () => {
    const env = kitEnv();
    const erin = await customer(env, 'gone');
    const frank = await customer(env, 'gone');
    const runtime = new KubernetesRuntime(unguarded, {
      kubeConfig: api.kitControllerConfig(NS),
      namespace: NS,
      extraLabels: { 'cloud.blytz.instance': 'gone' },
      // The kit gives the platform's model key as a file from its Secret; here, any value.
      network: customerNetwork(loadConfig({ BLYTZ_RUNTIME: 'kubernetes', BLYTZ_ANTHROPIC_API_KEY: 'platform-key', ...env })),
    });
    const terminating = () =>
      api
        .objects('pods', NS)
        .find((p) => p['metadata']['labels']['cloud.blytz.customer'] === erin.name && p['metadata']['deletionTimestamp']);
    api.holdKubelet();
    try {
      await runtime.remove(objectName(erin.name));
      const pod = await waitFor(terminating);
      // Still running its agent while it stops: still walled off.
      expect(allowed({ pod }, { pod: frank.pod() }, 18789)).toBe(false);
      expect(allowed({ pod }, { ip: '169.254.169.254' }, 80)).toBe(false);
      await runtime.remove(objectName(erin.name));
      expect(allowed({ pod }, { pod: frank.pod() }, 18789)).toBe(false);
    } finally {
      api.releaseKubelet();
    }
    await waitFor(async () => {
      await runtime.remove(objectName(erin.name));
      return api.object('networkpolicies', NS, objectName(erin.name)) === undefined && terminating() === undefined;
    });
  });
});
