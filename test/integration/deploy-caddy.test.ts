import { request } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Server } from 'node:http';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Router } from 'express';
import { parseAllDocuments } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { adminApiRouter, CUSTOMERS_PATH } from '../../src/http/admin-api.js';
import { createHttpApp } from '../../src/http/app.js';
import { createCaddyAskRouter } from '../../src/http/caddy-ask.js';
import { createHttpServer } from '../../src/http/http-server.js';
import { createPagesRouter } from '../../src/http/pages.js';
import { HealthChecks } from '../../src/observability/health.js';
import { createLogger } from '../../src/observability/logger.js';
import { Metrics } from '../../src/observability/metrics.js';
import { CustomerStore } from '../../src/store/customer-store.js';
import { startCaddy, type TestCaddy } from '../support/caddy.js';
import { desiredCustomer, testSecretBox, uniqueName } from '../support/fixtures.js';
import { createTestDatabase, type TestDatabase } from '../support/postgres.js';
import { waitFor } from '../support/wait-for.js';

/**
 * Issue 19, item 5: the internet reaches only the public surface. Each shipped Caddy config
 * (compose, also installed by the systemd guide; the Kubernetes kit's ConfigMap) is loaded into a
 * real Caddy 2.6.2 in front of a real blytz app holding a customer, and an attacker who knows the
 * admin token tries the admin API, /metrics, /readyz and the ask endpoint through it, directly
 * and with path tricks. None reaches the app; every public path does.
 */

const ROOT = join(import.meta.dirname, '../..');
const BASE = 'blytz.localhost';
const ADMIN_TOKEN = 'deploy-caddy-admin-token-0123456789';

let db: TestDatabase;
let caddy: TestCaddy;
let app: Server;
let appPort: number;
let customer: string;
/** Every path the app received, and the client address it believed for each. */
const reached: string[] = [];
const clients: Array<string | undefined> = [];

const CONFIGS: Array<[string, () => Record<string, unknown>]> = [
  [
    'deploy/compose/caddy/bootstrap.json (compose, systemd)',
    () => JSON.parse(readFileSync(join(ROOT, 'deploy/compose/caddy/bootstrap.json'), 'utf8')),
  ],
  [
    'deploy/kubernetes/caddy.yaml (ConfigMap blytz-caddy)',
    () => {
      const docs = parseAllDocuments(readFileSync(join(ROOT, 'deploy/kubernetes/caddy.yaml'), 'utf8')).map((d) => d.toJS());
      const configMap = docs.find((d) => d?.kind === 'ConfigMap');
      return JSON.parse(configMap.data['bootstrap.json'] as string);
    },
  ],
];

beforeAll(async () => {
  db = await createTestDatabase();
  const store = new CustomerStore(db.handle, testSecretBox());
  customer = uniqueName('public');
  await store.apply(desiredCustomer(customer));
  const express = createHttpApp({
    logger: createLogger({ level: 'silent' }),
    metrics: new Metrics({ defaultMetrics: false }),
    health: new HealthChecks(),
    readiness: { breakers: () => ({}), leader: () => true },
    // As in compose and systemd (.env.example): Caddy on the loopback is the one trusted proxy.
    trustProxy: 'loopback',
    routers: [
      Router().use((req, _res, next) => {
        reached.push(req.originalUrl);
        clients.push(req.ip);
        next();
      }),
      createCaddyAskRouter({ isReachableHost: async () => true }),
      createPagesRouter(),
      adminApiRouter({ store, adminToken: ADMIN_TOKEN }),
    ],
  });
  app = createHttpServer(express);
  await new Promise<void>((resolve) => app.listen(0, '127.0.0.1', resolve));
  appPort = (app.address() as AddressInfo).port;
  caddy = await startCaddy();
});

afterAll(async () => {
  await caddy?.stop();
  app?.closeAllConnections();
  await new Promise((resolve) => app?.close(resolve));
  await db?.drop();
});

/** A raw request through Caddy: the path exactly as given (no client-side normalisation). */
function viaCaddy(method: string, path: string, headers: Record<string, string> = {}): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(
      { host: '127.0.0.1', port: caddy.listenPorts[0], method, path, headers: { host: BASE, connection: 'close', ...headers } },
      (res) => {
        let body = '';
        res.on('data', (d: Buffer) => (body += d.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      },
    );
    req.on('error', reject);
    req.end(method === 'POST' ? '{}' : undefined);
  });
}

/** The shipped config, with its placeholders and addresses pointed at this test's Caddy and app. */
function load(config: Record<string, unknown>): Record<string, unknown> {
  const text = JSON.stringify(config)
    .replaceAll('{env.BLYTZ_BASE_DOMAIN}', BASE)
    .replaceAll('127.0.0.1:{env.BLYTZ_PORT}', `127.0.0.1:${appPort}`)
    .replaceAll('blytz-controller:8080', `127.0.0.1:${appPort}`);
  const out = JSON.parse(text) as {
    admin: Record<string, unknown>;
    apps: { http: { servers: Record<string, { listen: string[] }> } };
  };
  out.admin = caddy.emptyConfig()['admin'] as Record<string, unknown>;
  for (const server of Object.values(out.apps.http.servers)) server.listen = [`:${caddy.listenPorts[0]}`];
  return out;
}

const bearer = { authorization: `Bearer ${ADMIN_TOKEN}` };

describe.each(CONFIGS)('%s', (_name, read) => {
  beforeAll(async () => {
    await caddy.load(load(read()));
    await waitFor(async () => (await viaCaddy('GET', '/').catch(() => undefined))?.status === 200, 10_000);
  });

  it.each([
    ['GET', '/'],
    ['GET', '/configure'],
    ['GET', '/status/some-customer'],
    ['GET', '/assets/style.css'],
    ['POST', '/api/signup'],
    ['GET', '/api/customers/some-customer/status'],
    ['POST', '/api/customers/some-customer/pairing'],
    ['POST', '/api/customers/some-customer/checkout'],
    ['GET', '/api/customers/some-customer/model-usage'],
    ['GET', '/api/customers/some-customer/export'],
    ['POST', '/api/webhooks/stripe'],
  ])('proxies the public %s %s to blytz', async (method, path) => {
    reached.length = 0;
    await viaCaddy(method, path);
    expect(reached).toEqual([path]);
  });

  it.each([
    ['the admin API (with the right token)', 'GET', CUSTOMERS_PATH],
    ['one customer through the admin API', 'GET', `${CUSTOMERS_PATH}/CUSTOMER`],
    ['a delete through the admin API', 'DELETE', `${CUSTOMERS_PATH}/CUSTOMER`],
    ['the diagnostics', 'GET', '/apis/blytz.cloud/v1alpha1/diagnostics'],
    ['/metrics', 'GET', '/metrics'],
    ['/readyz', 'GET', '/readyz'],
    ['/healthz', 'GET', '/healthz'],
    ['the on-demand TLS ask endpoint', 'GET', '/api/caddy/ask?domain=evil.example.com'],
    ['a path with a traversal', 'GET', `/status/../apis/blytz.cloud/v1alpha1/customers`],
    ['a traversal after a public path', 'GET', '/api/customers/x/status/../../../metrics'],
    ['an encoded traversal', 'GET', '/status/..%2f..%2fapis%2fblytz.cloud%2fv1alpha1%2fcustomers'],
    ['a doubled slash', 'GET', `//apis/blytz.cloud/v1alpha1/customers`],
    ['another case', 'GET', '/APIS/blytz.cloud/v1alpha1/customers'],
    ['an encoded slash in the ask path', 'GET', '/api/caddy%2fask?domain=evil.example.com'],
    ['a deeper path under a customer', 'GET', '/api/customers/x/y/status'],
  ])('answers 404 for %s (%s %s) without reaching blytz', async (_what, method, path) => {
    reached.length = 0;
    const res = await viaCaddy(method, path.replace('CUSTOMER', customer), bearer);
    expect(res.status).toBe(404);
    expect(res.body).not.toContain(customer);
    expect(reached).toEqual([]);
  });
});

describe('clients behind the shipped Caddy', () => {
  it("are the real clients: Caddy replaces a client's own X-Forwarded-For with the address it saw", async () => {
    await caddy.load(load(CONFIGS[0]![1]()));
    await waitFor(async () => (await viaCaddy('GET', '/').catch(() => undefined))?.status === 200, 10_000);
    clients.length = 0;
    await viaCaddy('POST', '/api/signup', { 'x-forwarded-for': '198.51.100.66' });
    expect(clients).toEqual(['127.0.0.1']);
  });

  it('Kubernetes kit: the controller trusts pod addresses, only Caddy and Prometheus may connect, and the load balancer keeps client addresses', () => {
    // eslint-disable-next-line @typescript-eslint/no-explicit-any -- manifests are read as loose JSON
    type Loose = Record<string, any>;
    const docs = (file: string) =>
      parseAllDocuments(readFileSync(join(ROOT, 'deploy/kubernetes', file), 'utf8')).map((d) => d.toJS() as Loose);
    const controller = docs('deployment.yaml').find((d) => d['kind'] === 'Deployment')!;
    const env = controller['spec']['template']['spec']['containers'][0]['env'] as Array<{ name: string; value?: string }>;
    expect(env.find((e) => e.name === 'BLYTZ_TRUST_PROXY')?.value).toBe('uniquelocal');
    const [policy] = docs('networkpolicy.yaml');
    expect(policy?.['spec']['podSelector']['matchLabels']).toEqual(controller['spec']['template']['metadata']['labels']);
    expect(policy?.['spec']['policyTypes']).toEqual(['Ingress']);
    const sources = (policy?.['spec']['ingress'] as Array<{ from: unknown[] }>).flatMap((rule) => rule.from);
    expect(sources).toEqual([
      { podSelector: { matchLabels: { 'app.kubernetes.io/name': 'blytz', 'app.kubernetes.io/component': 'caddy' } } },
      { namespaceSelector: {}, podSelector: { matchLabels: { 'app.kubernetes.io/name': 'prometheus' } } },
      { podSelector: { matchLabels: { 'cloud.blytz.managed-by': 'blytz' } } },
    ]);
    // Customer pods (the third rule) reach the model gateway's port only, never the HTTP port.
    const ports = (policy?.['spec']['ingress'] as Array<{ ports: Array<{ port: string }> }>).map((rule) =>
      rule.ports.map((p) => p.port),
    );
    expect(ports).toEqual([['http'], ['http'], ['models']]);
    const lb = docs('caddy.yaml').find((d) => d['kind'] === 'Service' && d['spec']['type'] === 'LoadBalancer')!;
    expect(lb['spec']['externalTrafficPolicy']).toBe('Local');
  });
});

describe('the app behind it', () => {
  it('does serve those paths directly (so the 404s above are Caddy keeping them out)', async () => {
    const direct = (path: string) => fetch(`http://127.0.0.1:${appPort}${path}`, { headers: bearer });
    expect((await direct(CUSTOMERS_PATH)).status).toBe(200);
    expect(await (await direct(CUSTOMERS_PATH)).text()).toContain(customer);
    expect((await direct('/readyz')).status).toBe(200);
    expect((await direct('/api/caddy/ask?domain=evil.example.com')).status).toBe(200);
  });
});
