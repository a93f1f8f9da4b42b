import { execFile } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';
import { CUSTOMER_FINALIZER } from '../../src/customer-resources/crd.js';
import { startCaddy } from '../support/caddy.js';
import { FakeKubeApi, type LooseObject } from '../support/fake-kube-api.js';
import { getWithHost } from '../support/http-get.js';
import { waitFor } from '../support/wait-for.js';

const run = promisify(execFile);
const dir = join(import.meta.dirname, '..', '..', 'deploy', 'kubernetes');

/**
 * Every manifest under deploy/kubernetes goes through kubectl's own client-side dry run and the
 * yaml parser. kubectl needs API discovery even for a client dry run, so it talks to the
 * in-process fake API server (which knows the kinds used here and answers 404 for the objects).
 */
describe('deploy/kubernetes manifests', () => {
  let api: FakeKubeApi;
  let tmp: string;
  let kubeconfig: string;
  let files: string[];

  beforeAll(async () => {
    api = new FakeKubeApi();
    await api.start();
    tmp = await mkdtemp(join(tmpdir(), 'blytz-manifests-'));
    kubeconfig = join(tmp, 'kubeconfig');
    await writeFile(
      kubeconfig,
      [
        'apiVersion: v1',
        'kind: Config',
        `clusters: [{name: fake, cluster: {server: "${api.url}", insecure-skip-tls-verify: true}}]`,
        'users: [{name: test, user: {token: fake}}]',
        'contexts: [{name: fake, context: {cluster: fake, user: test, namespace: blytz}}]',
        'current-context: fake',
      ].join('\n'),
    );
    files = (await readdir(dir)).filter((f) => f.endsWith('.yaml')).sort();
  });

  afterAll(async () => {
    await api.stop();
    await rm(tmp, { recursive: true, force: true });
  });

  async function docs(file: string): Promise<LooseObject[]> {
    const parsed = parseAllDocuments(await readFile(join(dir, file), 'utf8'));
    for (const doc of parsed) expect(doc.errors, file).toEqual([]);
    return parsed.map((d) => d.toJS() as LooseObject).filter((d) => d !== null);
  }

  it('every file parses, and every object names its apiVersion, kind and name', async () => {
    expect(files).toEqual(
      expect.arrayContaining([
        'crd-customer.yaml',
        'caddy.yaml',
        'deployment.yaml',
        'kustomization.yaml',
        'rbac.yaml',
        'service.yaml',
        'serviceaccount.yaml',
      ]),
    );
    for (const file of files.filter((f) => f !== 'kustomization.yaml')) {
      for (const object of await docs(file)) {
        expect(object['apiVersion'], file).toEqual(expect.any(String));
        expect(object['kind'], file).toEqual(expect.any(String));
        expect(object['metadata']?.['name'], file).toEqual(expect.any(String));
      }
    }
  });

  it('kubectl apply --dry-run=client accepts every file', async () => {
    for (const file of files.filter((f) => f !== 'kustomization.yaml')) {
      const { stdout } = await run('kubectl', [
        '--kubeconfig',
        kubeconfig,
        'apply',
        '--dry-run=client',
        '--validate=false',
        '-o',
        'yaml',
        '-f',
        join(dir, file),
      ]);
      const out = parseAllDocuments(stdout).map((d) => d.toJS() as LooseObject);
      const kinds = (await docs(file)).map((o) => o['kind']);
      // One object comes back as itself, several as a List.
      const returned =
        out[0]?.['kind'] === 'List' ? (out[0]['items'] as LooseObject[]).map((o) => o['kind']) : out.map((o) => o['kind']);
      expect(returned, file).toEqual(kinds);
    }
  });

  it('the kustomization names every manifest and applies on a cluster without the prometheus-operator; its objects are a separate kustomization', async () => {
    const [kustomization] = await docs('kustomization.yaml');
    expect([...(kustomization?.['resources'] as string[])].sort()).toEqual(files.filter((f) => f !== 'kustomization.yaml'));
    const { stdout } = await run('kubectl', ['kustomize', dir]);
    const built = parseAllDocuments(stdout).map((d) => d.toJS() as LooseObject);
    const deployment = built.find((o) => o['kind'] === 'Deployment');
    expect(deployment?.['metadata']['namespace']).toBe('blytz');
    // The fake knows no monitoring.coreos.com kinds, like a cluster without the operator.
    await run('kubectl', ['--kubeconfig', kubeconfig, 'apply', '--dry-run=client', '--validate=false', '-o', 'yaml', '-k', dir]);

    const monitoring = join(dir, 'monitoring');
    const withOperator = new FakeKubeApi({ prometheusOperator: true });
    await withOperator.start();
    try {
      const config = join(tmp, 'kubeconfig-operator');
      await writeFile(config, (await readFile(kubeconfig, 'utf8')).replace(api.url, withOperator.url));
      const { stdout: applied } = await run('kubectl', [
        '--kubeconfig',
        config,
        'apply',
        '--dry-run=client',
        '--validate=false',
        '-o',
        'yaml',
        '-k',
        monitoring,
      ]);
      const out = parseAllDocuments(applied).map((d) => d.toJS() as LooseObject);
      const kinds = (out[0]?.['kind'] === 'List' ? (out[0]['items'] as LooseObject[]) : out).map((o) => o['kind']);
      expect(kinds.sort()).toEqual(['PrometheusRule', 'ServiceMonitor']);
    } finally {
      await withOperator.stop();
    }
  });

  it('the kit runs the image the Dockerfile builds (and compose runs)', async () => {
    const [deployment] = (await docs('deployment.yaml')).filter((o) => o['kind'] === 'Deployment');
    const image = deployment?.['spec']['template']['spec']['containers'][0]['image'] as string;
    const dockerfile = await readFile(join(dir, '..', '..', 'Dockerfile'), 'utf8');
    const built = /docker build -t (\S+) \./.exec(dockerfile)?.[1];
    expect(built).toBeDefined();
    expect(image).toBe(built);
    const compose = await readFile(join(dir, '..', 'compose', 'docker-compose.yml'), 'utf8');
    expect(compose).toContain(`\${BLYTZ_IMAGE:-${built}}`);
    const [kustomization] = await docs('kustomization.yaml');
    expect(kustomization?.['images']).toEqual([{ name: built?.split(':')[0], newTag: built?.split(':')[1] }]);
  });

  it('the controller runs two hardened replicas as kubernetes runtime and source', async () => {
    const [deployment] = (await docs('deployment.yaml')).filter((o) => o['kind'] === 'Deployment');
    expect(deployment?.['spec']['replicas']).toBe(2);
    const pod = deployment?.['spec']['template']['spec'];
    expect(pod['securityContext']['runAsNonRoot']).toBe(true);
    const container = pod['containers'][0];
    expect(container['securityContext']).toMatchObject({ allowPrivilegeEscalation: false, capabilities: { drop: ['ALL'] } });
    const env = Object.fromEntries((container['env'] as LooseObject[]).map((e) => [e['name'], e['value'] ?? e['valueFrom']]));
    expect(env).toMatchObject({ BLYTZ_RUNTIME: 'kubernetes', BLYTZ_SOURCE: 'kubernetes' });
  });

  it('Caddy runs in the cluster for the controller alone to configure: its admin API is reachable at CADDY_ADMIN_URL, by the controller only', async () => {
    const objects = await docs('caddy.yaml');
    const byKind = (kind: string) => objects.filter((o) => o['kind'] === kind);
    const [controller] = (await docs('deployment.yaml')).filter((o) => o['kind'] === 'Deployment');
    const controllerPod = controller?.['spec']['template'];
    const env = Object.fromEntries(
      (controllerPod['spec']['containers'][0]['env'] as LooseObject[]).map((e) => [e['name'], e['value']]),
    );
    const adminUrl = new URL(env['CADDY_ADMIN_URL'] as string);

    const bootstrap = JSON.parse(byKind('ConfigMap')[0]?.['data']['bootstrap.json'] as string) as LooseObject;
    expect(bootstrap['admin']['origins']).toContain(adminUrl.host);
    expect(bootstrap['apps']['http']['servers']['blytz']['listen']).toEqual([env['BLYTZ_CADDY_LISTEN']]);

    const [caddy] = byKind('Deployment');
    const pod = caddy?.['spec']['template'];
    expect(caddy?.['spec']).toMatchObject({ replicas: 1, strategy: { type: 'Recreate' } });
    expect(pod['spec']['securityContext']).toMatchObject({ runAsNonRoot: true });
    expect(pod['spec']['containers'][0]['securityContext']).toMatchObject({
      allowPrivilegeEscalation: false,
      readOnlyRootFilesystem: true,
      capabilities: { drop: ['ALL'], add: ['NET_BIND_SERVICE'] },
    });
    const adminService = byKind('Service').find((svc) => svc['metadata']['name'] === adminUrl.hostname);
    expect(adminService?.['spec']['ports'][0]['port']).toBe(Number(adminUrl.port));
    expect(adminService?.['spec']['selector']).toEqual(pod['metadata']['labels']);
    // The admin port admits the controller's pods and nobody else; the site port admits anyone.
    const [policy] = byKind('NetworkPolicy');
    expect(policy?.['spec']['podSelector']['matchLabels']).toEqual(pod['metadata']['labels']);
    const adminRule = (policy?.['spec']['ingress'] as LooseObject[]).find((r) => r['ports'][0]['port'] === 'admin');
    expect(adminRule?.['from']).toEqual([{ podSelector: { matchLabels: controllerPod['metadata']['labels'] } }]);

    // The same bootstrap in a real Caddy 2.6.2: admin requests naming the controller's host are
    // served; any other Host is refused (Caddy's DNS-rebinding check).
    const real = await startCaddy();
    try {
      const config = structuredClone(bootstrap);
      config['admin']['listen'] = `127.0.0.1:${real.adminPort}`;
      config['apps']['http']['servers']['blytz']['listen'] = [`:${real.listenPorts[0]}`];
      await real.load(config);
      const ours = await waitFor(async () => {
        const res = await getWithHost(real.adminPort, adminUrl.host, '/config/apps/http/servers/blytz/listen').catch(
          () => undefined,
        );
        return res?.status === 200 ? res : undefined;
      }, 10_000);
      expect(JSON.parse(ours.body)).toEqual([`:${real.listenPorts[0]}`]);
      expect((await getWithHost(real.adminPort, `127.0.0.1:${real.adminPort}`, '/config/')).status).toBe(403);
    } finally {
      await real.stop();
    }
  });

  it('the Role grants no Secret list or watch, no verbs the code does not call, in its namespace only', async () => {
    // Whether each grant is enough is a test everywhere else: the fake API server enforces this
    // Role on the controller's requests (kitControllerConfig, the Kubernetes e2e). This test
    // holds the narrowings, which no failing call would reveal.
    const objects = await docs('rbac.yaml');
    const role = objects.find((o) => o['kind'] === 'Role');
    const verbs = (group: string, resource: string) =>
      (role?.['rules'] as LooseObject[])
        .filter((r) => r['apiGroups'].includes(group) && r['resources'].includes(resource))
        .flatMap((r) => r['verbs'] as string[])
        .sort();
    // A list of Secrets is the content of every Secret in the namespace; ours are read by name.
    expect(verbs('', 'secrets')).toEqual(['create', 'delete', 'get', 'update']);
    expect(verbs('', 'pods')).toEqual(['create', 'delete', 'get', 'list']); // get, create, delete: the restore pod
    expect(verbs('', 'pods/exec')).toEqual(['create', 'get']);
    expect(verbs('blytz.cloud', 'customers')).toEqual(['list', 'patch', 'watch']); // finalizer `${CUSTOMER_FINALIZER}` by patch
    expect(verbs('blytz.cloud', 'customers/status')).toEqual(['patch']);
    expect(verbs('blytz.cloud', 'customers/finalizers')).toEqual([]);
    expect(verbs('', 'persistentvolumeclaims')).not.toContain('update');
    expect(verbs('networking.k8s.io', 'ingresses')).not.toContain('patch');
    for (const rule of role?.['rules'] as LooseObject[]) {
      expect(rule['verbs'], JSON.stringify(rule)).not.toContain('*');
      expect(rule['resources'], JSON.stringify(rule)).not.toContain('*');
      expect(rule['verbs'], JSON.stringify(rule)).not.toContain('deletecollection');
    }
    expect(CUSTOMER_FINALIZER).toBe('blytz.cloud/teardown');
    // The controller's binding is namespaced; ClusterRoles here only aggregate into edit/view.
    expect(objects.filter((o) => o['kind'] === 'ClusterRoleBinding')).toEqual([]);
  });

  it("the PrometheusRule's alerts that deploy/prometheus/rules.yml also names are the same alerts, the backup one included", async () => {
    type Alert = { alert?: string; expr: string; for?: string; labels?: { severity?: string } };
    const alerts = (groups: Array<{ rules: Alert[] }>) =>
      new Map(
        groups
          .flatMap((g) => g.rules)
          .filter((r) => r.alert)
          .map((r) => [r.alert, { expr: r.expr.replace(/\s+/g, ' ').trim(), for: r.for, severity: r.labels?.severity }]),
      );
    const [rule] = await docs(join('monitoring', 'prometheusrule.yaml'));
    const kit = alerts(rule?.['spec']['groups']);
    const prometheus = alerts(
      (parseAllDocuments(await readFile(join(dir, '..', 'prometheus', 'rules.yml'), 'utf8'))[0]?.toJS() as { groups: Array<{ rules: Alert[] }> }).groups,
    );
    const shared = [...kit.keys()].filter((name) => prometheus.has(name));
    expect(shared).toEqual(expect.arrayContaining(['BlytzBackupTooOld', 'BlytzCustomersFailed', 'BlytzCustomersNotReady']));
    for (const name of shared) expect(kit.get(name), name).toEqual(prometheus.get(name));
  });

  it('the PrometheusRule groups pass promtool check rules', async () => {
    const [rule] = await docs(join('monitoring', 'prometheusrule.yaml'));
    const rulesFile = join(tmp, 'rules.yaml');
    await writeFile(rulesFile, JSON.stringify({ groups: rule?.['spec']['groups'] }));
    const { stdout } = await run('promtool', ['check', 'rules', rulesFile]);
    expect(stdout).toMatch(/SUCCESS: \d+ rules found/);
  });
});
