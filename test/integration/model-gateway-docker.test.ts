import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { promisify } from 'node:util';
import Docker from 'dockerode';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { periodKey } from '../../src/domain/model-budget.js';
import { ModelGateway } from '../../src/models/gateway.js';
import { AddressBook } from '../../src/runtime/customer-addresses.js';
import { Upstream } from '../../src/model-providers/upstream.js';
import { createLogger } from '../../src/observability/logger.js';
import { unguarded } from '../../src/resilience/guard.js';
import { dockerContainerAddresses } from '../../src/runtime/docker/container-addresses.js';
import { CustomerStore } from '../../src/store/customer-store.js';
import { ModelAccessStore } from '../../src/store/model-access-store.js';
import { STUB_IMAGE } from '../support/blytz-serve.js';
import {
  FAKE_ANTHROPIC_KEY,
  FAKE_OPENAI_KEY,
  startFakeModelProvider,
  type FakeModelProvider,
} from '../support/fake-model-provider.js';
import { desiredCustomer, testSecretBox, uniqueName } from '../support/fixtures.js';
import { createTestDatabase, type TestDatabase } from '../support/postgres.js';
import { waitFor } from '../support/wait-for.js';

/**
 * The source check against a real Docker engine, as on a production host: the gateway listens on
 * the customers' network's own address (its bridge on the host), customer containers on that
 * network call it, and the runtime's listing of container addresses decides whose container a
 * request came from. A credential copied into another customer's container is refused; the
 * right one from the right container works. (Each test run makes its own network and
 * containers, labelled with its own instance, and removes them.)
 */

const docker = new Docker({ socketPath: '/var/run/docker.sock' });
const instance = `mgw-${randomBytes(4).toString('hex')}`;
const networkName = `blytz-models-test-${instance}`;
let network: Docker.Network;
let gatewayIp: string;
let db: TestDatabase;
let fake: FakeModelProvider;
let gateway: ModelGateway;
let port: number;
let store: ModelAccessStore;
let customers: CustomerStore;
const containers: Docker.Container[] = [];

async function customerContainer(customer: string): Promise<Docker.Container> {
  const container = await docker.createContainer({
    Image: STUB_IMAGE,
    name: `blytz-${customer}-${instance}`,
    // The stand-in's busybox sleeps; a request is made from inside with `wget`, as an agent's shell tool would.
    Cmd: ['/bin/sh', '-c', 'sleep 600'],
    Labels: { 'cloud.blytz.managed-by': 'blytz', 'cloud.blytz.customer': customer, 'cloud.blytz.instance': instance },
    HostConfig: { NetworkMode: networkName, AutoRemove: false, CapDrop: ['ALL'] },
  });
  containers.push(container);
  await container.start();
  return container;
}

/** POST from inside a container with busybox wget: exit code and what it printed. */
async function postFrom(container: Docker.Container, credential: string): Promise<{ ok: boolean; out: string }> {
  const body = JSON.stringify({ model: 'gpt-5-mini', messages: [{ role: 'user', content: 'hello' }] });
  try {
    const { stdout, stderr } = await promisify(execFile)('docker', [
      'exec',
      container.id,
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
    return { ok: true, out: stdout + stderr };
  } catch (error) {
    const e = error as { stdout?: string; stderr?: string };
    return { ok: false, out: `${e.stdout ?? ''}${e.stderr ?? ''}` };
  }
}

beforeAll(async () => {
  network = await docker.createNetwork({ Name: networkName, Driver: 'bridge', Labels: { 'cloud.blytz.instance': instance } });
  const info = (await network.inspect()) as { IPAM: { Config: Array<{ Gateway?: string }> } };
  gatewayIp = info.IPAM.Config[0]?.Gateway ?? '';
  expect(gatewayIp).toMatch(/^\d+\.\d+\.\d+\.\d+$/);
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
    sources: new AddressBook(dockerContainerAddresses(docker, unguarded, { 'cloud.blytz.instance': instance })),
    budgets: { personal: { includedTokens: 1_000_000 }, pro: { includedTokens: 1_000_000 } },
    allowedModels: { openai: ['gpt-5-mini'], anthropic: [] },
    logger: createLogger({ level: 'silent' }),
  });
  // The customers' network's own address: reachable from its containers, not from elsewhere.
  port = (await gateway.listen(gatewayIp, 0)).port;
});

afterAll(async () => {
  await gateway?.close();
  for (const container of containers) await container.remove({ force: true }).catch(() => {});
  await network?.remove().catch(() => {});
  await fake?.close();
  await db?.drop();
});

describe('model gateway on a Docker customers network', () => {
  it("refuses a customer's credential from another customer's container, and takes it from its own", async () => {
    const alice = uniqueName('alice');
    const bob = uniqueName('bob');
    await customers.apply(desiredCustomer(alice));
    await customers.apply(desiredCustomer(bob));
    const aliceKey = (await store.ensureCredential(alice)) as string;
    const bobKey = (await store.ensureCredential(bob)) as string;
    const [aliceBox, bobBox] = [await customerContainer(alice), await customerContainer(bob)];
    const forwarded = fake.requests.length;

    // Bob's agent found Alice's key (say, she pasted it in a shared note): refused at the gateway.
    const stolen = await postFrom(bobBox, aliceKey);
    expect(stolen.ok).toBe(false);
    expect(stolen.out).toContain('403');
    expect(fake.requests.length).toBe(forwarded);

    // Each from its own container works.
    const own = await postFrom(aliceBox, aliceKey);
    expect(own.out).toContain('Hello from the fake model provider.');
    expect(own.ok).toBe(true);
    expect((await postFrom(bobBox, bobKey)).ok).toBe(true);
    await waitFor(async () => (await store.usage(alice, periodKey(new Date()))).requests === 1);
    expect((await store.usage(bob, periodKey(new Date()))).requests).toBe(1);
  });

  it('a container that is not a customer (no labels) is refused even with a valid credential', async () => {
    const carol = uniqueName('carol');
    await customers.apply(desiredCustomer(carol));
    const key = (await store.ensureCredential(carol)) as string;
    const stranger = await docker.createContainer({
      Image: STUB_IMAGE,
      name: `blytz-stranger-${instance}`,
      Cmd: ['/bin/sh', '-c', 'sleep 600'],
      Labels: { 'cloud.blytz.instance': instance },
      HostConfig: { NetworkMode: networkName },
    });
    containers.push(stranger);
    await stranger.start();
    const answer = await postFrom(stranger, key);
    expect(answer.ok).toBe(false);
    expect(answer.out).toContain('403');
  });
});
