import { NetworkingV1Api } from '@kubernetes/client-node';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { MERGE_PATCH } from '../../src/kube-api/client.js';
import { unguarded } from '../../src/resilience/guard.js';
import { compareRoutes } from '../../src/proxy/caddy/route-sweep.js';
import { IngressRouteTable, SUSPENDED_ANNOTATION } from '../../src/proxy/ingress/ingress-route-table.js';
import { objectName, serviceDial } from '../../src/kube-api/customer-object-meta.js';
import { OwnedObjectsWatch } from '../../src/kube-api/owned-objects-watch.js';
import { FakeKubeApi } from '../support/fake-kube-api.js';
import { uniqueName } from '../support/fixtures.js';
import { waitFor } from '../support/wait-for.js';

const NS = 'customers';
const BASE = 'blytz.test';

/** IngressRouteTable driven through the real @kubernetes/client-node against the fake API server. */
describe('IngressRouteTable (BLYTZ_ROUTES=ingress) on the fake API server', () => {
  let api: FakeKubeApi;
  let table: IngressRouteTable;

  beforeAll(async () => {
    api = new FakeKubeApi();
    await api.start();
    table = new IngressRouteTable({
      kubeConfig: api.kitControllerConfig(NS),
      namespace: NS,
      ingressClassName: 'nginx',
      extraLabels: { 'cloud.blytz.instance': 'ingress-test' },
      guard: unguarded,
    });
  });

  afterAll(async () => {
    await api.stop();
  });

  beforeEach(() => {
    api.requests.length = 0;
  });

  const upstream = (customer: string, port: number) => ({ kind: 'upstream' as const, dial: serviceDial(customer, NS, port) });
  const route = (customer: string, target: ReturnType<typeof upstream> | { kind: 'suspended' }) => ({
    customer,
    host: `${customer}.${BASE}`,
    target,
  });
  const writes = () => api.requests.filter((r) => r.method !== 'GET');

  it('ensure creates the Ingress: host rule to the Service port, the contract labels, the class', async () => {
    const name = uniqueName('ing');
    expect(await table.ensure(route(name, upstream(name, 30001)))).toBe('created');
    const ingress = api.object('ingresses', NS, objectName(name));
    expect(ingress?.['metadata']['labels']).toEqual({
      'cloud.blytz.managed-by': 'blytz',
      'cloud.blytz.customer': name,
      'cloud.blytz.instance': 'ingress-test',
    });
    expect(ingress?.['spec']).toEqual({
      ingressClassName: 'nginx',
      rules: [
        {
          host: `${name}.${BASE}`,
          http: {
            paths: [{ path: '/', pathType: 'Prefix', backend: { service: { name: objectName(name), port: { number: 30001 } } } }],
          },
        },
      ],
    });
    expect(ingress?.['metadata']['annotations']?.[SUSPENDED_ANNOTATION]).toBeUndefined();
  });

  it('ensure again writes nothing; a changed target replaces the Ingress in place', async () => {
    const name = uniqueName('ing');
    await table.ensure(route(name, upstream(name, 30002)));
    const before = api.object('ingresses', NS, objectName(name));
    api.requests.length = 0;
    expect(await table.ensure(route(name, upstream(name, 30002)))).toBe('unchanged');
    expect(writes()).toEqual([]);

    expect(await table.ensure(route(name, upstream(name, 30003)))).toBe('replaced');
    const after = api.object('ingresses', NS, objectName(name));
    expect(after?.['metadata']['uid']).toBe(before?.['metadata']['uid']);
    expect(after?.['spec']['rules'][0]['http']['paths'][0]['backend']['service']['port']['number']).toBe(30003);
    expect(writes().map((r) => r.method)).toEqual(['PUT']);
  });

  it('a hand edit is replaced by the next ensure', async () => {
    const name = uniqueName('ing');
    await table.ensure(route(name, upstream(name, 30004)));
    const net = api.kubeConfig().makeApiClient(NetworkingV1Api);
    const current = await net.readNamespacedIngress({ name: objectName(name), namespace: NS });
    current.spec!.rules![0]!.host = 'elsewhere.example.com';
    await net.replaceNamespacedIngress({ name: objectName(name), namespace: NS, body: current });
    expect(await table.ensure(route(name, upstream(name, 30004)))).toBe('replaced');
    expect(api.object('ingresses', NS, objectName(name))?.['spec']['rules'][0]['host']).toBe(`${name}.${BASE}`);
  });

  it("fields it does not set are not its to compare: a class the cluster defaulted and another tool's annotations stay, with no rewrite", async () => {
    api.defaultIngressClass = 'cluster-default';
    const classless = new IngressRouteTable({
      kubeConfig: api.kitControllerConfig(NS),
      namespace: NS,
      extraLabels: { 'cloud.blytz.instance': 'ingress-test' },
      guard: unguarded,
    });
    try {
      const name = uniqueName('ing');
      expect(await classless.ensure(route(name, upstream(name, 30040)))).toBe('created');
      expect(api.object('ingresses', NS, objectName(name))?.['spec']['ingressClassName']).toBe('cluster-default');
      const net = api.kubeConfig().makeApiClient(NetworkingV1Api);
      await net.patchNamespacedIngress(
        {
          name: objectName(name),
          namespace: NS,
          body: { metadata: { annotations: { 'cert-manager.io/cluster-issuer': 'letsencrypt' }, labels: { team: 'a' } } },
        },
        MERGE_PATCH,
      );
      const before = writes().length;
      expect(await classless.ensure(route(name, upstream(name, 30040)))).toBe('unchanged');
      expect(writes().length).toBe(before);
      // The route sweep's comparison agrees: no drift.
      const snapshot = await classless.snapshot();
      const drift = compareRoutes(snapshot.routes, [route(name, upstream(name, 30040))], (r) => classless.routeJson(r));
      expect(drift.filter((d) => d.customer === name)).toEqual([]);
      // A change of its own (the target) keeps what is not its own.
      expect(await classless.ensure(route(name, upstream(name, 30041)))).toBe('replaced');
      const ingress = api.object('ingresses', NS, objectName(name));
      expect(ingress?.['spec']['ingressClassName']).toBe('cluster-default');
      expect(ingress?.['metadata']['annotations']).toEqual({ 'cert-manager.io/cluster-issuer': 'letsencrypt' });
      expect(ingress?.['metadata']['labels']['team']).toBe('a');
      expect((await classless.list()).find((r) => r.customer === name)?.target).toEqual(upstream(name, 30041));
    } finally {
      api.defaultIngressClass = undefined;
    }
  });

  it('list maps our Ingresses back to routes with one list call, and only labelled ones', async () => {
    const a = uniqueName('ing');
    const b = uniqueName('ing');
    await table.ensure(route(a, upstream(a, 30010)));
    await table.ensure(route(b, { kind: 'suspended' }));
    const net = api.kubeConfig().makeApiClient(NetworkingV1Api);
    // Not ours: no managed-by label; and ours but of another instance.
    await net.createNamespacedIngress({
      namespace: NS,
      body: {
        metadata: { name: 'foreign', labels: { 'cloud.blytz.customer': 'foreign' } },
        spec: { rules: [{ host: 'foreign.example.com' }] },
      },
    });
    await net.createNamespacedIngress({
      namespace: NS,
      body: {
        metadata: {
          name: 'blytz-other-instance',
          labels: {
            'cloud.blytz.managed-by': 'blytz',
            'cloud.blytz.customer': 'other-instance',
            'cloud.blytz.instance': 'other',
          },
        },
        spec: { rules: [{ host: 'other-instance.example.com' }] },
      },
    });

    api.requests.length = 0;
    const routes = await table.list();
    expect(api.requests).toHaveLength(1);
    expect(api.requests[0]).toMatchObject({ method: 'GET', path: `/apis/networking.k8s.io/v1/namespaces/${NS}/ingresses` });
    const customers = routes.map((r) => r.customer);
    expect(customers).not.toContain('foreign');
    expect(customers).not.toContain('other-instance');
    expect(routes.find((r) => r.customer === a)).toEqual({
      customer: a,
      id: `blytz-${a}`,
      hosts: [`${a}.${BASE}`],
      target: { kind: 'upstream', dial: serviceDial(a, NS, 30010) },
    });
    expect(routes.find((r) => r.customer === b)).toEqual({
      customer: b,
      id: `blytz-${b}`,
      hosts: [`${b}.${BASE}`],
      target: { kind: 'suspended' },
    });
    // One customer's route with one read, as list shows it; none for an Ingress that is not ours.
    api.requests.length = 0;
    expect(await table.get(a)).toEqual(routes.find((r) => r.customer === a));
    expect(api.requests).toHaveLength(1);
    expect(await table.get(b)).toEqual(routes.find((r) => r.customer === b));
    expect(await table.get('other-instance')).toBeUndefined();
    expect(await table.get(uniqueName('none'))).toBeUndefined();
  });

  it('suspended keeps the Ingress for the host, annotated, with no backend; resuming restores the backend', async () => {
    const name = uniqueName('ing');
    await table.ensure(route(name, upstream(name, 30020)));
    expect(await table.ensure(route(name, { kind: 'suspended' }))).toBe('replaced');
    const ingress = api.object('ingresses', NS, objectName(name));
    expect(ingress?.['metadata']['annotations']).toEqual({ [SUSPENDED_ANNOTATION]: 'true' });
    expect(ingress?.['spec']['rules']).toEqual([{ host: `${name}.${BASE}` }]);
    expect(JSON.stringify(ingress?.['spec'])).not.toContain('backend');
    expect(await table.ensure(route(name, { kind: 'suspended' }))).toBe('unchanged');

    expect(await table.ensure(route(name, upstream(name, 30020)))).toBe('replaced');
    const resumed = api.object('ingresses', NS, objectName(name));
    expect(resumed?.['metadata']['annotations'] ?? {}).toEqual({});
    expect(resumed?.['spec']['rules'][0]['http']['paths'][0]['backend']['service']['name']).toBe(objectName(name));
  });

  it('an Ingress of a shape this table does not write lists as target unknown', async () => {
    const name = uniqueName('ing');
    const net = api.kubeConfig().makeApiClient(NetworkingV1Api);
    await net.createNamespacedIngress({
      namespace: NS,
      body: {
        metadata: {
          name: objectName(name),
          labels: { 'cloud.blytz.managed-by': 'blytz', 'cloud.blytz.customer': name, 'cloud.blytz.instance': 'ingress-test' },
        },
        spec: {
          rules: [
            {
              host: `${name}.${BASE}`,
              http: {
                paths: [
                  { path: '/api', pathType: 'Exact', backend: { service: { name: objectName(name), port: { number: 80 } } } },
                ],
              },
            },
          ],
        },
      },
    });
    expect((await table.list()).find((r) => r.customer === name)?.target).toEqual({ kind: 'unknown' });
    expect(await table.ensure(route(name, upstream(name, 30030)))).toBe('replaced');
    expect((await table.list()).find((r) => r.customer === name)?.target).toEqual(upstream(name, 30030));
  });

  it('remove deletes the Ingress; removing a missing one is not an error', async () => {
    const name = uniqueName('ing');
    await table.ensure(route(name, upstream(name, 30040)));
    expect(await table.remove(name)).toBe(true);
    expect(api.object('ingresses', NS, objectName(name))).toBeUndefined();
    expect(await table.remove(name)).toBe(false);
  });

  it('its Ingresses are watched: one deleted or edited behind its back enqueues the customer; a foreign one does not', async () => {
    const enqueued: string[] = [];
    const watch = new OwnedObjectsWatch({
      kubeConfig: api.kitControllerConfig(NS),
      ...table.ownedKinds(),
      minBackoffMs: 20,
      maxBackoffMs: 200,
    });
    await watch.start({ enqueue: (c) => enqueued.push(c), resync: () => {} });
    try {
      await waitFor(() => api.watchCount('ingresses') === 1, 5_000, 20);
      const watched = api.requests.find((r) => r.watch);
      expect(new URLSearchParams(watched?.query).get('labelSelector')).toBe(
        'cloud.blytz.managed-by=blytz,cloud.blytz.instance=ingress-test',
      );
      const name = uniqueName('ing');
      await table.ensure(route(name, upstream(name, 30045)));
      await waitFor(() => enqueued.includes(name), 5_000, 20);
      const net = api.kubeConfig().makeApiClient(NetworkingV1Api);
      const seen = enqueued.length;
      await net.deleteNamespacedIngress({ name: objectName(name), namespace: NS });
      await waitFor(() => enqueued.length > seen && enqueued.at(-1) === name, 5_000, 20);

      const foreign = uniqueName('other');
      await net.createNamespacedIngress({
        namespace: NS,
        body: { metadata: { name: foreign, labels: { app: 'theirs' } }, spec: { rules: [{ host: `${foreign}.example.org` }] } },
      });
      await table.ensure(route(name, upstream(name, 30046))); // a later event of ours, to know the foreign one was passed
      await waitFor(() => enqueued.filter((c) => c === name).length >= 3, 5_000, 20);
      expect(enqueued.filter((c) => c !== name)).toEqual([]);
    } finally {
      await watch.stop();
    }
  });

  it('refuses a dial that is not a Service of its own namespace', async () => {
    const name = uniqueName('ing');
    await expect(table.ensure(route(name, { kind: 'upstream', dial: '127.0.0.1:30050' }))).rejects.toThrow(
      /not a Service address/,
    );
    await expect(table.ensure(route(name, { kind: 'upstream', dial: serviceDial(name, 'elsewhere', 30050) }))).rejects.toThrow(
      /namespace elsewhere/,
    );
    expect(api.object('ingresses', NS, objectName(name))).toBeUndefined();
  });

  it('ensureMany writes only what differs; the sweep comparison sees no drift afterwards, then sees a deleted one', async () => {
    const a = uniqueName('ing');
    const b = uniqueName('ing');
    const desired = [route(a, upstream(a, 30060)), route(b, { kind: 'suspended' as const })];
    expect(await table.ensureMany(desired)).toEqual({ written: 2 });
    expect(await table.ensureMany(desired)).toEqual({ written: 0 });

    const mine = (drift: { customer: string }[]) => drift.filter((d) => d.customer === a || d.customer === b);
    let snapshot = await table.snapshot();
    expect(snapshot.serverPresent).toBe(true);
    expect(mine(compareRoutes(snapshot.routes, desired, (r) => table.routeJson(r)))).toEqual([]);

    await table.remove(b);
    snapshot = await table.snapshot();
    expect(mine(compareRoutes(snapshot.routes, desired, (r) => table.routeJson(r)))).toEqual([
      { customer: b, kind: 'route_missing', duplicate: false },
    ]);
  });

  it('ping lists with limit 1 and fails when the API server does', async () => {
    await table.ping();
    expect(api.requests.at(-1)?.query).toContain('limit=1');
    api.failNext('GET', /ingresses$/, 500);
    await expect(table.ping()).rejects.toThrow();
  });
});
