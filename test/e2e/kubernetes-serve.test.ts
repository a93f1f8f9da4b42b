import { execFile } from 'node:child_process';
import { chownSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { AppsV1Api, CoreV1Api, CustomObjectsApi, KubeConfig, NetworkingV1Api } from '@kubernetes/client-node';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { JSON_PATCH, MERGE_PATCH } from '../../src/kube-api/client.js';
import { CUSTOMER_FINALIZER, customerCrd } from '../../src/customer-resources/crd.js';
import { OPENCLAW_IMAGE } from '../../src/domain/openclaw.js';
import { objectName } from '../../src/kube-api/customer-object-meta.js';
import { hashToken } from '../../src/store/billing-store.js';
import { baseEnv, BLYTZ, ROOT, startServe, type Served } from '../support/blytz-serve.js';
import { crdAdmission, FakeKubeApi, type LooseObject } from '../support/fake-kube-api.js';
import { claimPod } from '../support/fake-pod.js';
import { TEST_BOT_TOKEN, uniqueName } from '../support/fixtures.js';
import { openSession } from '../support/billing-app.js';
import { connectionAllowed, namespaceLabels } from '../support/fake-kube/network-policy.js';
import { kitEnv, kitLabels, kitNetworkPolicies, kitUser } from '../support/kube-kit.js';
import { createTestDatabase, type TestDatabase } from '../support/postgres.js';
import { waitFor } from '../support/wait-for.js';

/**
 * The built `blytz serve` with BLYTZ_RUNTIME=kubernetes and BLYTZ_SOURCE=kubernetes against the
 * in-process fake API server (no real cluster runs on these machines), run as the shipped kit
 * runs it: as the kit's user, with the kit's environment (its default customer image, the pinned
 * OpenClaw), its service account held to the kit's Role (the fake enforces rbac.yaml: 403 for
 * anything else), the kit's NetworkPolicies in the namespace. With the embedded database,
 * leadership is a coordination.k8s.io Lease. A Customer resource made with client-node becomes a
 * Secret, PVC, NetworkPolicy, Deployment and Service with the contract's labels, a Caddy route to
 * the Service's cluster DNS name and a status on the resource; `kubectl delete` waits
 * (finalizer) until every object is gone.
 */
const execFileAsync = promisify(execFile);

const NS = 'blytz-e2e';
const ref = { group: 'blytz.cloud', version: 'v1alpha1', namespace: NS, plural: 'customers' };

interface FakeCluster {
  api: FakeKubeApi;
  /** The cluster administrator's view (the test itself, kubectl). */
  kc: KubeConfig;
  /** A kubeconfig file for `blytz serve`: the kit's service account, held to the kit's Role in `namespace`. */
  kubeconfig: string;
  dir: string;
}

/**
 * A started fake API server with the kit's RBAC and NetworkPolicies installed in `namespace`, and
 * kubeconfigs whose context names `contextNamespace`.
 */
async function fakeCluster(
  namespace: string,
  options: { user?: { uid: number; gid: number }; contextNamespace?: string } = {},
): Promise<FakeCluster> {
  const { user, contextNamespace = namespace } = options;
  const api = new FakeKubeApi({ admit: { customers: crdAdmission(customerCrd()) }, bookmarkIntervalMs: 200 });
  // The fake's stand-in for the Deployment controller: a scaled-up Deployment reports ready replicas.
  api.simulateDeployments = true;
  await api.start();
  const kc = new KubeConfig();
  kc.loadFromOptions({
    clusters: [{ name: 'fake', server: api.url, skipTLSVerify: true }],
    users: [{ name: 'e2e', token: 'fake-token' }],
    contexts: [{ name: 'fake', cluster: 'fake', user: 'e2e', namespace: contextNamespace }],
    currentContext: 'fake',
  });
  for (const body of kitNetworkPolicies())
    await kc.makeApiClient(NetworkingV1Api).createNamespacedNetworkPolicy({ namespace, body });
  const controller = api.kitControllerConfig(namespace);
  const dir = mkdtempSync(join(tmpdir(), 'blytz-kube-'));
  // The customers' pods answer pods/exec as the assistant container would (a backup before an
  // update streams the claim out with tar): a claim folder with an assistant's config in it.
  const claim = join(dir, 'claim');
  mkdirSync(join(claim, 'workspace'), { recursive: true });
  writeFileSync(join(claim, 'openclaw.json'), JSON.stringify({ meta: { lastTouchedVersion: '2026.9.6' } }));
  api.execHandler = claimPod(claim);
  const kubeconfig = join(dir, 'config');
  // Its context's namespace, as kubectl would have it (BLYTZ_NAMESPACE may say otherwise).
  const exported = JSON.parse(controller.exportConfig()) as LooseObject;
  for (const context of exported['contexts'] as LooseObject[]) context['context']['namespace'] = contextNamespace;
  writeFileSync(kubeconfig, JSON.stringify(exported), { mode: 0o600 });
  if (user) {
    chownSync(dir, user.uid, user.gid);
    chownSync(kubeconfig, user.uid, user.gid);
  }
  return { api, kc, kubeconfig, dir };
}

/** What the kit sets, but for what points at this test's own Caddy and data folder. */
// The kit's settings, but this machine's Caddy and data folder, and no model gateway on the kit's
// fixed 0.0.0.0:8090 (shared by every test here; it needs the kit's platform key from its Secret).
const KIT_ENV = () =>
  kitEnv(['CADDY_ADMIN_URL', 'BLYTZ_CADDY_LISTEN', 'BLYTZ_DATA_DIR', 'BLYTZ_MODEL_GATEWAY_LISTEN', 'BLYTZ_MODEL_GATEWAY_URL']);

describe('blytz serve on Kubernetes (runtime and source)', () => {
  let api: FakeKubeApi;
  let served: Served;
  let custom: CustomObjectsApi;
  let kube: KubeConfig;
  let kubeDir: string;
  const name = uniqueName('k8s');
  const object = objectName(name);

  beforeAll(async () => {
    const user = kitUser();
    const cluster = await fakeCluster(NS, { user });
    api = cluster.api;
    kubeDir = cluster.dir;
    const { kc, kubeconfig } = cluster;
    kube = kc;
    custom = kc.makeApiClient(CustomObjectsApi);
    await kc.makeApiClient(CoreV1Api).createNamespacedSecret({
      namespace: NS,
      body: { metadata: { name: `${name}-bot` }, data: { token: Buffer.from(TEST_BOT_TOKEN).toString('base64') } },
    });

    served = await startServe({
      databaseUrl: '',
      // As the kit runs it: uid 10001, not root (whose writes and chowns always succeed).
      user,
      env: {
        ...KIT_ENV(), // BLYTZ_RUNTIME and BLYTZ_SOURCE kubernetes, the model gateway's port
        BLYTZ_CUSTOMER_IMAGE: '', // the kit sets none: the pinned OpenClaw image
        DATABASE_URL: '', // embedded PGlite: leadership comes from the Lease
        KUBECONFIG: kubeconfig,
        KUBERNETES_SERVICE_HOST: '', // never the in-cluster config, even when the tests run in a pod
        BLYTZ_RETENTION_DAYS: '0', // the purge (PVC) follows the teardown at once
        BLYTZ_DOCKER_EVENTS: 'false',
      },
    });
  });

  afterAll(async () => {
    await served?.stop();
    await api?.stop();
    if (kubeDir) rmSync(kubeDir, { recursive: true, force: true });
  });

  const getCr = (n: string) => custom.getNamespacedCustomObject({ ...ref, name: n }) as Promise<LooseObject>;
  const withLog = (error: unknown): never => {
    throw new Error(`${(error as Error).message}\n${served.log().slice(-4000)}`, { cause: error });
  };

  it('leads through a Lease and reports the runtime as `kubernetes` in /readyz', async () => {
    const lease = await waitFor(() => api.object('leases', NS, 'blytz-controller')?.['spec']).catch(withLog);
    expect(lease['holderIdentity']).toMatch(/_\d+$/);
    const ready = await waitFor(async () => {
      const res = await fetch(`${served.url}/readyz`);
      const body = (await res.json()) as LooseObject;
      return body['checks']?.['kubernetes'] !== undefined ? body : undefined;
    });
    expect(Object.keys(ready['checks']).sort()).toEqual(['caddy', 'database', 'kubernetes']);
    expect(ready['checks']['kubernetes']['status']).toBe('ok');
    expect(ready['leader']).toBe(true);
  });

  it('a Customer resource becomes a Secret, PVC, Deployment and Service, a route to the Service and a status', async () => {
    await custom.createNamespacedCustomObject({
      ...ref,
      body: {
        apiVersion: 'blytz.cloud/v1alpha1',
        kind: 'Customer',
        metadata: { name },
        spec: {
          email: `${name}@example.com`,
          displayName: 'Ada',
          instructions: 'I run a bakery.',
          telegram: { botTokenSecretRef: { name: `${name}-bot`, key: 'token' } },
        },
      },
    });

    const status = await waitFor(async () => {
      const cr = await getCr(name);
      return cr['status']?.['phase'] === 'Ready' ? cr['status'] : undefined;
    }, 60_000).catch(withLog);
    // The port Caddy serves customers on is part of the address a person opens.
    expect(status).toMatchObject({ observedGeneration: 1, url: `http://${name}.blytz.localhost:${served.caddyListenPort}` });
    const ready = (status['conditions'] as LooseObject[]).find((c) => c['type'] === 'Ready');
    expect(ready).toMatchObject({ status: 'True', reason: 'AllReady' });
    expect((await getCr(name))['metadata']['finalizers']).toEqual([CUSTOMER_FINALIZER]);

    for (const plural of ['secrets', 'persistentvolumeclaims', 'deployments', 'services']) {
      const found = api.object(plural, NS, object);
      expect(found, `${plural}/${object}`).toBeDefined();
      expect(found?.['metadata']['labels']).toMatchObject({
        'cloud.blytz.managed-by': 'blytz',
        'cloud.blytz.customer': name,
        'cloud.blytz.instance': served.instance,
      });
    }
    const deployment = api.object('deployments', NS, object);
    expect(deployment?.['metadata']['labels']['cloud.blytz.spec-hash']).toMatch(/^[0-9a-f]+$/);
    expect(deployment?.['spec']['replicas']).toBe(1);
    // The kit's customer image: the pinned OpenClaw release.
    expect(deployment?.['spec']['template']['spec']['containers'][0]['image']).toBe(OPENCLAW_IMAGE);
    // The bot token reached the rendered files (in the Secret), never the Deployment.
    expect(JSON.stringify(deployment)).not.toContain(TEST_BOT_TOKEN);

    // Caddy dials the customer's Service by its cluster DNS name, on the Service's port.
    const service = api.object('services', NS, object);
    const port = service?.['spec']['ports'][0]['port'] as number;
    expect(status['hostPort']).toBe(port);
    const route = (await (await served.caddy.admin(`/id/blytz-${name}`)).json()) as LooseObject;
    expect(JSON.stringify(route['handle'])).toContain(`"dial":"${object}.${NS}.svc:${port}"`);
  });

  it('its pod is made for the real assistant, and the programs the built controller ships into it work: the seed merges openclaw.json, the probes check the body', async () => {
    const pod = api.object('deployments', NS, object)?.['spec']['template']['spec'] as LooseObject;
    const main = pod['containers'][0] as LooseObject;
    expect(main['securityContext']['readOnlyRootFilesystem']).toBe(true);
    expect(pod['volumes'].filter((v: LooseObject) => v['emptyDir']).map((v: LooseObject) => v['emptyDir'])).toEqual([
      { medium: 'Memory', sizeLimit: '256Mi' }, // /tmp
      { medium: 'Memory', sizeLimit: '256Mi' }, // /home/node/.cache
      { medium: 'Memory', sizeLimit: '256Mi' }, // /home/node/.openclaw/tmp (OpenClaw's locks: gone with the pod)
    ]);
    expect(main['startupProbe']['failureThreshold']).toBe(24); // the template's 120 s at one CPU, in 5 s periods

    // The seed, exactly as the Deployment carries it, on a copy of the pod's two volumes: the
    // Secret's files, and a workspace where OpenClaw has already written its own fields.
    const volumes = mkdtempSync(join(tmpdir(), 'blytz-pod-'));
    try {
      const rendered = join(volumes, 'rendered');
      const workspace = join(volumes, 'workspace');
      mkdirSync(rendered);
      mkdirSync(workspace);
      for (const [key, value] of Object.entries(api.object('secrets', NS, object)?.['data'] as Record<string, string>))
        writeFileSync(join(rendered, key), Buffer.from(value, 'base64'));
      writeFileSync(
        join(workspace, 'openclaw.json'),
        JSON.stringify({ meta: { lastTouchedVersion: 'x' }, channels: { telegram: { allowFrom: ['42'] } } }),
      );
      const seed = pod['initContainers'][0]['command'] as string[];
      const plan = JSON.parse(seed[4] ?? '') as LooseObject;
      await execFileAsync(process.execPath, [...seed.slice(1, 4), JSON.stringify({ ...plan, workspace, rendered })]);
      const config = JSON.parse(readFileSync(join(workspace, 'openclaw.json'), 'utf8')) as LooseObject;
      expect(config['meta']).toEqual({ lastTouchedVersion: 'x' });
      expect(config['channels']['telegram']).toMatchObject({ allowFrom: ['42'], botToken: TEST_BOT_TOKEN, dmPolicy: 'pairing' });
      expect(config['gateway']['auth']['mode']).toBe('token');
      expect(readFileSync(join(workspace, 'workspace', 'AGENTS.md'), 'utf8')).toContain('I run a bakery.');
    } finally {
      rmSync(volumes, { recursive: true, force: true });
    }

    // The readiness probe, exactly as the Deployment carries it, against a stand-in gateway.
    const gateway = createServer((req, res) => {
      res.writeHead(200, { 'content-type': req.url === '/readyz' ? 'application/json' : 'text/html' });
      res.end(req.url === '/readyz' ? '{"ready":true}' : '<!doctype html><title>OpenClaw Control</title>');
    });
    await new Promise<void>((resolve) => gateway.listen(0, '127.0.0.1', resolve));
    try {
      const port = String((gateway.address() as { port: number }).port);
      const probe = (command: string[]) => {
        const args = [...command.slice(1)];
        args[5] = port; // -e <program> -- <path> <fields> <port> <client>
        return execFileAsync(process.execPath, args).then(
          () => 0,
          (error: { code?: number }) => error.code ?? -1,
        );
      };
      expect(await probe(main['readinessProbe']['exec']['command'] as string[])).toBe(0);
      // The liveness path is not served here: the catch-all page answers 200, and still fails.
      expect(await probe(main['livenessProbe']['exec']['command'] as string[])).toBe(1);
    } finally {
      await new Promise<void>((resolve) => gateway.close(() => resolve()));
    }
  });

  it("its pod is walled off under the kit's NetworkPolicies: in from Caddy only, out to the model gateway, never the controller's API or the metadata service", async () => {
    const core = kube.makeApiClient(CoreV1Api);
    const standIn = async (component: 'controller' | 'caddy', ports: Array<[string, number]>, ip: string) => {
      const podName = `${component}-stand-in`;
      await core.createNamespacedPod({
        namespace: NS,
        body: {
          metadata: { name: podName, labels: kitLabels(component) },
          spec: { containers: [{ name: 'main', image: 'x:1', ports: ports.map(([n, p]) => ({ name: n, containerPort: p })) }] },
        },
      });
      api.setStatus('pods', NS, podName, { phase: 'Running', podIP: ip });
      return { pod: api.object('pods', NS, podName) as LooseObject };
    };
    const controller = await standIn(
      'controller',
      [
        ['http', 8080],
        ['models', 8090],
      ],
      '10.244.250.2',
    );
    const caddy = await standIn(
      'caddy',
      [
        ['http', 8080],
        ['admin', 2019],
      ],
      '10.244.250.3',
    );
    const customer = {
      pod: api.objects('pods', NS).find((p) => p['metadata']['labels']['cloud.blytz.customer'] === name) as LooseObject,
    };
    const cluster = { namespaces: namespaceLabels([NS, 'kube-system']), policies: api.objects('networkpolicies', NS) };
    expect(connectionAllowed(cluster, caddy, customer, 18789)).toBe(true);
    expect(connectionAllowed(cluster, controller, customer, 18789)).toBe(false);
    expect(connectionAllowed(cluster, customer, controller, 8090)).toBe(true);
    expect(connectionAllowed(cluster, customer, controller, 8080)).toBe(false);
    expect(connectionAllowed(cluster, customer, caddy, 2019)).toBe(false);
    expect(connectionAllowed(cluster, customer, { ip: '169.254.169.254' }, 80)).toBe(false);
    expect(connectionAllowed(cluster, customer, { ip: '1.1.1.1' }, 443)).toBe(true);
    await core.deleteNamespacedPod({ name: 'controller-stand-in', namespace: NS, gracePeriodSeconds: 0 });
    await core.deleteNamespacedPod({ name: 'caddy-stand-in', namespace: NS, gracePeriodSeconds: 0 });
  });

  it('a spec change updates the Deployment in place: its pod is replaced, never two at once, the Service keeps its address', async () => {
    const service = api.object('services', NS, object);
    const hash = api.object('deployments', NS, object)?.['metadata']['labels']['cloud.blytz.spec-hash'];
    await custom.patchNamespacedCustomObject({ ...ref, name, body: { spec: { plan: 'pro' } } }, MERGE_PATCH);
    await waitFor(async () => {
      const cr = await getCr(name);
      const upToDate = (cr['status']?.['conditions'] as LooseObject[] | undefined)?.find((c) => c['type'] === 'UpToDate');
      return (
        cr['status']?.['observedGeneration'] === 2 && cr['status']?.['phase'] === 'Ready' && upToDate?.['status'] !== 'False'
      );
    }, 60_000).catch(withLog);
    const deployment = api.object('deployments', NS, object);
    expect(deployment?.['metadata']['labels']['cloud.blytz.spec-hash']).not.toBe(hash);
    expect(api.object('services', NS, object)?.['metadata']['uid']).toBe(service?.['metadata']['uid']);
    expect(api.maxPodsAtOnce(name)).toBe(1);
  });

  it("a Service or Deployment changed behind the controller's back is repaired within seconds (it watches its objects), not at the next resync", async () => {
    const core = kube.makeApiClient(CoreV1Api);
    const uid = api.object('services', NS, object)?.['metadata']['uid'] as string;
    await core.deleteNamespacedService({ name: object, namespace: NS });
    // BLYTZ_RESYNC_SECONDS is 300 here: only the watch can bring it back this fast.
    const recreated = await waitFor(() => {
      const service = api.object('services', NS, object);
      return service && service['metadata']['uid'] !== uid ? service : undefined;
    }, 15_000).catch(withLog);
    expect(recreated['metadata']['labels']['cloud.blytz.customer']).toBe(name);

    await kube
      .makeApiClient(AppsV1Api)
      .patchNamespacedDeployment(
        { name: object, namespace: NS, body: [{ op: 'replace', path: '/spec/replicas', value: 0 }] },
        JSON_PATCH,
      );
    await waitFor(() => api.object('deployments', NS, object)?.['spec']['replicas'] === 1, 15_000).catch(withLog);
  });

  it('deleting the resource tears everything down; the finalizer lets it go only afterwards', async () => {
    const before = api.requests.length;
    await custom.deleteNamespacedCustomObject({ ...ref, name });
    const deleting = await getCr(name);
    expect(deleting['metadata']['deletionTimestamp']).toBeDefined();

    await waitFor(async () => {
      try {
        await getCr(name);
        return false;
      } catch (error) {
        return (error as { code?: number }).code === 404;
      }
    }, 60_000).catch(withLog);
    for (const plural of ['secrets', 'persistentvolumeclaims', 'deployments', 'services', 'networkpolicies', 'pods']) {
      expect(
        api.objects(plural, NS).filter((o) => o['metadata']['labels']?.['cloud.blytz.customer'] === name),
        plural,
      ).toEqual([]);
    }
    const route = await served.caddy.admin(`/id/blytz-${name}`);
    expect(route.status).toBe(404);

    // Order: every object was deleted before the finalizer came off (the last write to the resource).
    const requests = api.requests.slice(before);
    const last = (predicate: (r: (typeof requests)[number]) => boolean) => requests.findLastIndex(predicate);
    const released = last(
      (r) => r.method === 'PATCH' && r.path === `/apis/blytz.cloud/v1alpha1/namespaces/${NS}/customers/${name}`,
    );
    expect(released).toBeGreaterThan(-1);
    for (const plural of ['secrets', 'persistentvolumeclaims', 'services']) {
      const deleted = last((r) => r.method === 'DELETE' && r.path === `/api/v1/namespaces/${NS}/${plural}/${object}`);
      expect(deleted, plural).toBeGreaterThan(-1);
      expect(deleted, plural).toBeLessThan(released);
    }
    const deployment = last((r) => r.method === 'DELETE' && r.path === `/apis/apps/v1/namespaces/${NS}/deployments/${object}`);
    expect(deployment).toBeGreaterThan(-1);
    expect(deployment).toBeLessThan(released);
    // The pods stayed isolated to the end: their NetworkPolicy went after the Deployment (which
    // went in the foreground, after its pods).
    const policy = last(
      (r) => r.method === 'DELETE' && r.path === `/apis/networking.k8s.io/v1/namespaces/${NS}/networkpolicies/${object}`,
    );
    expect(policy).toBeGreaterThan(deployment);
    expect(policy).toBeLessThan(released);
    expect(requests.find((r) => r.method === 'DELETE' && r.path.endsWith(`/deployments/${object}`))?.query).toContain(
      'propagationPolicy=Foreground',
    );
  });

  it("asked for nothing the kit's Role refuses", () => {
    expect(api.forbidden).toEqual([]);
  });
});

describe('blytz serve with the Kubernetes runtime on Postgres', () => {
  let db: TestDatabase;
  let api: FakeKubeApi;
  let served: Served;
  let kubeDir: string;
  const name = uniqueName('k8spg');
  const object = objectName(name);

  beforeAll(async () => {
    db = await createTestDatabase();
    // The kit installed in other-ns; the kubeconfig's context names another namespace.
    const cluster = await fakeCluster('other-ns', { contextNamespace: NS });
    api = cluster.api;
    kubeDir = cluster.dir;
    served = await startServe({
      databaseUrl: db.url,
      env: {
        KUBECONFIG: cluster.kubeconfig,
        KUBERNETES_SERVICE_HOST: '',
        BLYTZ_RUNTIME: 'kubernetes',
        BLYTZ_NAMESPACE: 'other-ns', // wins over the kubeconfig context's namespace
        BLYTZ_DOCKER_EVENTS: 'false',
      },
    });
  });

  afterAll(async () => {
    await served?.stop();
    await api?.stop();
    await db?.drop();
    if (kubeDir) rmSync(kubeDir, { recursive: true, force: true });
  });

  it('a customer written in SQL runs as a Deployment in BLYTZ_NAMESPACE; leadership stays with Postgres (no Lease)', async () => {
    await sql`
      INSERT INTO customers (name, email, display_name, state, instructions)
      VALUES (${name}, ${`${name}@example.com`}, 'Bo', 'active', 'hello')
    `.execute(db.handle.db);
    await waitFor(async () => {
      const r = await sql<{ phase: string | null }>`SELECT status->>'phase' AS phase FROM customers WHERE name = ${name}`.execute(
        db.handle.db,
      );
      return r.rows[0]?.phase === 'Ready';
    }, 60_000).catch((error: unknown) => {
      throw new Error(`${(error as Error).message}\n${served.log().slice(-4000)}`, { cause: error });
    });
    expect(api.object('deployments', 'other-ns', object)?.['spec']['replicas']).toBe(1);
    expect(api.objects('deployments', NS)).toEqual([]);
    expect(api.objects('leases')).toEqual([]);
    // No Customer resources are watched with BLYTZ_SOURCE=postgres.
    expect(api.requests.some((r) => r.path.includes('/customers'))).toBe(false);
    const route = (await (await served.caddy.admin(`/id/blytz-${name}`)).json()) as LooseObject;
    expect(JSON.stringify(route['handle'])).toContain(`.other-ns.svc:`);
    expect(served.log()).toMatch(/"leaderElection":"postgres"/);
  });

  it("a Telegram pairing code is approved inside the customer's pod, through pods/exec", async () => {
    // The customer's access token, as signup would have stored it (only its hash is kept).
    const token = 'k8s-e2e-access-token-0123456789';
    await sql`UPDATE customers SET access_token_hash = ${hashToken(token)} WHERE name = ${name}`.execute(db.handle.db);
    // Opening the status link spends the token for the customer's session, which pairing takes.
    const { session } = await openSession(served.url, `${served.url}/status/${name}?token=${token}`);
    expect(session).toBeDefined();
    api.execHandler = (call) =>
      call.command.join(' ') === 'openclaw pairing approve telegram K8SPAIR1'
        ? { exitCode: 0, stdout: 'Approved telegram pairing K8SPAIR1\n' }
        : { exitCode: 1, stderr: 'No pending pairing request\n' };
    const pair = (code: string) =>
      fetch(`${served.url}/api/customers/${name}/pairing`, {
        method: 'POST',
        headers: { Authorization: `Bearer ${session}`, 'Content-Type': 'application/json' },
        body: JSON.stringify({ code }),
      });

    const wrong = await pair('WRONG999');
    expect(wrong.status).toBe(422);
    expect(((await wrong.json()) as LooseObject)['error']['code']).toBe('pairing_rejected');
    const ok = await pair('k8spair1');
    expect(ok.status).toBe(200);
    expect(await ok.json()).toEqual({ approved: true });

    const [pod] = api.objects('pods', 'other-ns').filter((p) => p['metadata']['name'].startsWith(`${object}-`));
    // The backup controller reads the claim through the pod too (its first backup follows Ready).
    const pairingCalls = api.execCalls.filter((c) => c.command[0] === 'openclaw');
    expect(pairingCalls.slice(-2)).toEqual([
      {
        namespace: 'other-ns',
        pod: pod?.['metadata']['name'],
        container: 'assistant',
        command: ['openclaw', 'pairing', 'approve', 'telegram', 'WRONG999'],
      },
      {
        namespace: 'other-ns',
        pod: pod?.['metadata']['name'],
        container: 'assistant',
        command: ['openclaw', 'pairing', 'approve', 'telegram', 'K8SPAIR1'],
      },
    ]);
    expect(served.log()).not.toContain('K8SPAIR1');
  });

  it("asked for nothing the kit's Role (installed in BLYTZ_NAMESPACE) refuses", () => {
    expect(api.forbidden).toEqual([]);
  });
});

describe('blytz serve on Kubernetes with BLYTZ_ROUTES=ingress', () => {
  let api: FakeKubeApi;
  let served: Served;
  let custom: CustomObjectsApi;
  let kubeDir: string;
  const name = uniqueName('k8sing');
  const object = objectName(name);

  beforeAll(async () => {
    const cluster = await fakeCluster(NS);
    api = cluster.api;
    kubeDir = cluster.dir;
    custom = cluster.kc.makeApiClient(CustomObjectsApi);
    await cluster.kc.makeApiClient(CoreV1Api).createNamespacedSecret({
      namespace: NS,
      body: { metadata: { name: `${name}-bot` }, data: { token: Buffer.from(TEST_BOT_TOKEN).toString('base64') } },
    });
    served = await startServe({
      databaseUrl: '',
      env: {
        ...KIT_ENV(),
        DATABASE_URL: '',
        KUBECONFIG: cluster.kubeconfig,
        KUBERNETES_SERVICE_HOST: '',
        BLYTZ_ROUTES: 'ingress',
        BLYTZ_INGRESS_CLASS: 'nginx',
        BLYTZ_RETENTION_DAYS: '0',
        BLYTZ_DOCKER_EVENTS: 'false',
      },
    });
  });

  afterAll(async () => {
    await served?.stop();
    await api?.stop();
    if (kubeDir) rmSync(kubeDir, { recursive: true, force: true });
  });

  const getCr = (n: string) => custom.getNamespacedCustomObject({ ...ref, name: n }) as Promise<LooseObject>;
  const withLog = (error: unknown): never => {
    throw new Error(`${(error as Error).message}\n${served.log().slice(-4000)}`, { cause: error });
  };

  it('/readyz checks `ingress` instead of `caddy`', async () => {
    const ready = await waitFor(async () => {
      const body = (await (await fetch(`${served.url}/readyz`)).json()) as LooseObject;
      return body['checks']?.['ingress'] !== undefined ? body : undefined;
    }).catch(withLog);
    expect(Object.keys(ready['checks']).sort()).toEqual(['database', 'ingress', 'kubernetes']);
    expect(ready['checks']['ingress']['status']).toBe('ok');
  });

  it('`blytz doctor` reports the runtime and routes the server uses: kubernetes and ingress, not Docker and Caddy', async () => {
    // Async: the fake API server runs in this process and must keep answering the server's checks.
    const { stdout } = await execFileAsync(BLYTZ, ['doctor', '--server', served.url], {
      cwd: ROOT,
      env: { ...baseEnv(), BLYTZ_ADMIN_TOKEN: served.adminToken, BLYTZ_RUNTIME: 'kubernetes', BLYTZ_ROUTES: 'ingress' },
    });
    const rows = stdout
      .trimEnd()
      .split('\n')
      .slice(1)
      .map((l) => l.split(/\s+/).slice(0, 2));
    expect(rows.slice(0, 4)).toEqual([
      ['server', 'ok'],
      ['database', 'ok'],
      ['kubernetes', 'ok'],
      ['ingress', 'ok'],
    ]);
    expect(rows.map(([check]) => check)).not.toContain('docker');
  });

  it('a Customer gets an Ingress for its host pointing at its Service (and no Caddy route)', async () => {
    await custom.createNamespacedCustomObject({
      ...ref,
      body: {
        apiVersion: 'blytz.cloud/v1alpha1',
        kind: 'Customer',
        metadata: { name },
        spec: {
          email: `${name}@example.com`,
          displayName: 'Ida',
          telegram: { botTokenSecretRef: { name: `${name}-bot`, key: 'token' } },
        },
      },
    });
    await waitFor(async () => (await getCr(name))['status']?.['phase'] === 'Ready', 60_000).catch(withLog);

    const service = api.object('services', NS, object);
    const port = service?.['spec']['ports'][0]['port'] as number;
    const ingress = api.object('ingresses', NS, object);
    expect(ingress, `ingresses/${object}`).toBeDefined();
    expect(ingress?.['metadata']['labels']).toEqual({
      'cloud.blytz.managed-by': 'blytz',
      'cloud.blytz.customer': name,
      'cloud.blytz.instance': served.instance,
    });
    expect(ingress?.['spec']).toEqual({
      ingressClassName: 'nginx',
      rules: [
        {
          host: `${name}.blytz.localhost`,
          http: { paths: [{ path: '/', pathType: 'Prefix', backend: { service: { name: object, port: { number: port } } } }] },
        },
      ],
    });
    expect((await served.caddy.admin(`/id/blytz-${name}`)).status).toBe(404);
    // The sweep and the reconciler see it as right: no rewrites once Ready. Each route sweep
    // (BLYTZ_ROUTE_SWEEP_SECONDS=1) and each reconcile lists every Ingress (/readyz lists one):
    // three such lists after `before` mean at least two whole passes that could have rewritten it.
    const writes = () => api.requests.filter((r) => r.path.includes('/ingresses') && r.method !== 'GET').length;
    const fullLists = () =>
      api.requests.filter(
        (r) =>
          r.path === `/apis/networking.k8s.io/v1/namespaces/${NS}/ingresses` &&
          r.method === 'GET' &&
          !r.watch &&
          !r.query.includes('limit='),
      ).length;
    const before = writes();
    const listsBefore = fullLists();
    await waitFor(() => fullLists() >= listsBefore + 3, 15_000);
    expect(writes()).toBe(before);
  });

  it('deleting the Customer removes its Ingress before the finalizer comes off', async () => {
    const before = api.requests.length;
    await custom.deleteNamespacedCustomObject({ ...ref, name });
    await waitFor(async () => {
      try {
        await getCr(name);
        return false;
      } catch (error) {
        return (error as { code?: number }).code === 404;
      }
    }, 60_000).catch(withLog);
    expect(api.object('ingresses', NS, object)).toBeUndefined();
    const requests = api.requests.slice(before);
    const released = requests.findLastIndex(
      (r) => r.method === 'PATCH' && r.path === `/apis/blytz.cloud/v1alpha1/namespaces/${NS}/customers/${name}`,
    );
    const deleted = requests.findLastIndex(
      (r) => r.method === 'DELETE' && r.path === `/apis/networking.k8s.io/v1/namespaces/${NS}/ingresses/${object}`,
    );
    expect(deleted).toBeGreaterThan(-1);
    expect(deleted).toBeLessThan(released);
  });

  it("asked for nothing the kit's Role refuses", () => {
    expect(api.forbidden).toEqual([]);
  });
});
