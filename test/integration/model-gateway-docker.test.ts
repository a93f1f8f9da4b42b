import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmod, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Docker from 'dockerode';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { periodKey } from '../../src/domain/model-budget.js';
import { ModelGateway } from '../../src/models/gateway.js';
import { AddressBook } from '../../src/runtime/customer-addresses.js';
import { Upstream } from '../../src/model-providers/upstream.js';
import { createLogger } from '../../src/observability/logger.js';
import { Metrics } from '../../src/observability/metrics.js';
import { Policies } from '../../src/resilience/policies.js';
import { unguarded } from '../../src/resilience/guard.js';
import { dockerContainerAddresses } from '../../src/runtime/docker/container-addresses.js';
import { DockerRuntime } from '../../src/runtime/docker/docker-runtime.js';
import { BRIDGE_PREFIX, customerNetworkName } from '../../src/runtime/docker/networks.js';
import type { ContainerSpec } from '../../src/runtime/runtime.js';
import { CustomerStore } from '../../src/store/customer-store.js';
import { ModelAccessStore } from '../../src/store/model-access-store.js';
import { freePort, STUB_IMAGE } from '../support/blytz-serve.js';
import { removeInstanceObjects } from '../support/docker-cleanup.js';
import {
  FAKE_ANTHROPIC_KEY,
  FAKE_OPENAI_KEY,
  startFakeModelProvider,
  type FakeModelProvider,
} from '../support/fake-model-provider.js';
import { desiredCustomer, stubHealth, testSecretBox, uniqueName } from '../support/fixtures.js';
import { createTestDatabase, type TestDatabase } from '../support/postgres.js';
import { openHostPortsToCustomers } from '../support/tenant-firewall.js';
import { waitFor } from '../support/wait-for.js';

/**
 * The source check against a real Docker engine in the topology production has: each customer's
 * assistant made by the real DockerRuntime, so on a network of its own (`blytz-<name>`, a /28
 * and a `bz-` bridge, runtime/docker/networks.ts); the gateway listening where the deploy kits
 * put it, on docker0's address, which every customer network reaches through the host (the
 * tenant ruleset opens the gateway's port to `bz-` interfaces, as deploy/host/blytz-tenants.nft
 * does for 8090); and the runtime's listing of container addresses deciding whose container a
 * request came from. A credential copied into another customer's container is refused; the right
 * one from the right container works. (Each run labels what it makes with its own instance and
 * removes it.)
 */

const INSTANCE_LABEL = 'cloud.blytz.instance';
const docker = new Docker({ socketPath: '/var/run/docker.sock' });
const instance = `mgw-${randomBytes(4).toString('hex')}`;
const runtime = new DockerRuntime(new Policies({ metrics: new Metrics({ defaultMetrics: false }) }).guard('docker'), {
  docker,
  extraLabels: { [INSTANCE_LABEL]: instance },
});
let root: string;
let gatewayIp: string;
let db: TestDatabase;
let fake: FakeModelProvider;
let gateway: ModelGateway;
let port: number;
let closeHostPorts: (() => Promise<void>) | undefined;
let store: ModelAccessStore;
let customers: CustomerStore;

/** docker0's address: where the kits make the gateway listen (BLYTZ_MODEL_GATEWAY_LISTEN=172.17.0.1:8090). */
function defaultBridgeGateway(): string {
  const out = execFileSync('docker', ['network', 'inspect', 'bridge', '--format', '{{range .IPAM.Config}}{{.Gateway}}{{end}}'], {
    encoding: 'utf8',
  }).trim();
  return out || '172.17.0.1';
}

/** A customer's assistant as `blytz serve` runs it: through DockerRuntime, on its own network. */
async function customerContainer(customer: string): Promise<string> {
  const home = join(root, customer);
  await mkdir(join(home, 'workspace'), { recursive: true });
  await writeFile(join(home, 'workspace', 'AGENTS.md'), `# ${customer}\n`);
  await chmod(home, 0o777);
  const spec: ContainerSpec = {
    customer,
    image: STUB_IMAGE,
    containerPort: 18789,
    hostPort: await freePort(),
    user: '1000:1000',
    mounts: [{ hostPath: home, containerPath: '/home/node/.openclaw', readOnly: false }],
    env: { PORT: '18789', OPENCLAW_HOME: '/home/node/.openclaw' },
    resources: { memoryBytes: 64 * 1024 * 1024, nanoCpus: 250_000_000, pidsLimit: 64, nodeHeapMiB: 32 },
    ...stubHealth(),
    specHash: `hash-${customer}`,
  };
  const id = await runtime.create(spec);
  await runtime.start(id);
  return id;
}

/** The container's networks: name, address and gateway of each. */
async function networksOf(id: string): Promise<Array<{ name: string; ip: string; gateway: string }>> {
  const info = await docker.getContainer(id).inspect();
  return Object.entries(info.NetworkSettings.Networks).map(([name, n]) => ({ name, ip: n.IPAddress, gateway: n.Gateway }));
}

/** POST from inside a container with busybox wget, as an agent's shell tool would: exit code and output. */
async function postFrom(id: string, credential: string): Promise<{ ok: boolean; out: string }> {
  const body = JSON.stringify({ model: 'gpt-5-mini', messages: [{ role: 'user', content: 'hello' }] });
  const result = await runtime.exec(id, [
    'wget',
    '-q',
    '-O',
    '-',
    '--header',
    `Authorization: Bearer ${credential}`,
    '--header',
    'Content-Type: application/json',
    '--post-data',
    body,
    `http://${gatewayIp}:${port}/openai/v1/chat/completions`,
  ]);
  return { ok: result.exitCode === 0, out: `${result.stdout}${result.stderr}` };
}

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'blytz-mgw-'));
  await chmod(root, 0o755);
  gatewayIp = defaultBridgeGateway();
  db = await createTestDatabase();
  fake = await startFakeModelProvider();
  const box = testSecretBox();
  store = new ModelAccessStore(db.handle, box);
  customers = new CustomerStore(db.handle, box);
  gateway = new ModelGateway({
    store,
    upstreams: {
      openai: new Upstream('openai', { baseUrl: fake.url, apiKey: FAKE_OPENAI_KEY }),
      anthropic: new Upstream('anthropic', { baseUrl: fake.url, apiKey: FAKE_ANTHROPIC_KEY }),
    },
    guards: { openai: unguarded, anthropic: unguarded },
    sources: new AddressBook(dockerContainerAddresses(docker, unguarded, { [INSTANCE_LABEL]: instance })),
    budgets: { personal: { includedTokens: 1_000_000 }, pro: { includedTokens: 1_000_000 } },
    allowedModels: { openai: ['gpt-5-mini'], anthropic: [] },
    logger: createLogger({ level: 'silent' }),
  });
  port = (await gateway.listen(gatewayIp, 0)).port;
  // The tenant ruleset drops customer -> host except its listed ports: this gateway's, as the kit's 8090.
  closeHostPorts = await openHostPortsToCustomers([port]);
});

afterAll(async () => {
  await closeHostPorts?.();
  await gateway?.close();
  await removeInstanceObjects(docker, INSTANCE_LABEL, instance);
  await fake?.close();
  await db?.drop();
  if (root) await rm(root, { recursive: true, force: true });
});

describe('model gateway on docker0, customers on networks of their own', () => {
  it("refuses a customer's credential from another customer's container, and takes it from its own", async () => {
    const alice = uniqueName('alice');
    const bob = uniqueName('bob');
    await customers.apply(desiredCustomer(alice));
    await customers.apply(desiredCustomer(bob));
    const aliceKey = (await store.ensureCredential(alice)) as string;
    const bobKey = (await store.ensureCredential(bob)) as string;
    const [aliceBox, bobBox] = [await customerContainer(alice), await customerContainer(bob)];

    // The production topology: each on its own network, neither on the gateway's bridge.
    const [aliceNet, bobNet] = [await networksOf(aliceBox), await networksOf(bobBox)];
    expect(aliceNet.map((n) => n.name)).toEqual([customerNetworkName(alice)]);
    expect(bobNet.map((n) => n.name)).toEqual([customerNetworkName(bob)]);
    expect(aliceNet[0]?.gateway).not.toBe(bobNet[0]?.gateway);
    for (const net of [...aliceNet, ...bobNet]) expect(net.gateway).not.toBe(gatewayIp);
    const bridge = (await docker.getNetwork(customerNetworkName(bob)).inspect()).Options?.['com.docker.network.bridge.name'];
    expect(bridge?.startsWith(BRIDGE_PREFIX)).toBe(true);

    const forwarded = fake.requests.length;
    // Bob's agent found Alice's key (say, she pasted it in a shared note): refused at the gateway.
    const stolen = await postFrom(bobBox, aliceKey);
    expect(stolen.ok).toBe(false);
    expect(stolen.out).toContain('403');
    expect(fake.requests.length).toBe(forwarded);

    // Each from its own container, across the host from its own network, works.
    const own = await postFrom(aliceBox, aliceKey);
    expect(own.out).toContain('Hello from the fake model provider.');
    expect(own.ok).toBe(true);
    expect((await postFrom(bobBox, bobKey)).ok).toBe(true);
    await waitFor(async () => (await store.usage(alice, periodKey(new Date()))).requests === 1);
    expect((await store.usage(bob, periodKey(new Date()))).requests).toBe(1);
  });

  it("a container that is not a customer's (no customer label) is refused even with a valid credential on a customer's network", async () => {
    const carol = uniqueName('carol');
    await customers.apply(desiredCustomer(carol));
    const key = (await store.ensureCredential(carol)) as string;
    await customerContainer(carol); // makes carol's network
    // Someone attached a container of their own to carol's network: it comes in through her bridge.
    const stranger = await docker.createContainer({
      Image: STUB_IMAGE,
      name: `blytz-stranger-${instance}`,
      Cmd: ['/bin/sh', '-c', 'sleep 600'],
      Labels: { [INSTANCE_LABEL]: instance },
      HostConfig: { NetworkMode: customerNetworkName(carol), CapDrop: ['ALL'] },
    });
    await stranger.start();
    const forwarded = fake.requests.length;
    const answer = await postFrom(stranger.id, key);
    expect(answer.ok).toBe(false);
    expect(answer.out).toContain('403');
    expect(fake.requests.length).toBe(forwarded);
  });
});
