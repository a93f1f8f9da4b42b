import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmod, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createConnection, createServer, type AddressInfo, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Docker from 'dockerode';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Metrics } from '../../src/observability/metrics.js';
import { Policies } from '../../src/resilience/policies.js';
import { DockerRuntime } from '../../src/runtime/docker/docker-runtime.js';
import {
  bridgeName,
  CustomerNetworks,
  customerNetworkName,
  formatIp,
  NetworkPoolExhaustedError,
  overlaps,
  parseCidr,
} from '../../src/runtime/docker/networks.js';
import type { ContainerSpec } from '../../src/runtime/runtime.js';
import { removeInstanceObjects } from '../support/docker-cleanup.js';
import { stubHealth } from '../support/fixtures.js';
import { waitFor } from '../support/wait-for.js';

/**
 * Issue 19, item 4: tenants cannot reach each other. Two customers' assistants run through the
 * real DockerRuntime on the machine's engine; from inside one of them (a hostile agent with a
 * shell) we try the other's gateway port, directly and through the host, and the host's own
 * ports (blytz's API stands for them). Every try must fail, while Caddy's way in (the port
 * published on the host's loopback) keeps working.
 *
 * This engine runs without iptables (ENVIRONMENT.md), so Docker itself filters nothing: what
 * isolates is a network per customer (runtime/docker/networks.ts) plus the host's nftables table
 * deploy/host/blytz-tenants.nft, which scripts/services.sh loads. Without either, these fail.
 */

const IMAGE = 'blytz/assistant-stub:dev';
const INSTANCE_LABEL = 'cloud.blytz.instance';
const instance = `iso-${randomBytes(3).toString('hex')}`;
const docker = new Docker();
const runtime = new DockerRuntime(new Policies({ metrics: new Metrics({ defaultMetrics: false }) }).guard('docker'), {
  docker,
  extraLabels: { [INSTANCE_LABEL]: instance },
});
// This file's share of the test port range: 31600-31799 (pairing-api.test.ts has 31500-31599; two
// files binding the same host port in parallel fail with "port is already allocated").
const portBase = 31600 + Math.floor(Math.random() * 190);

let root: string;
let hostService: Server;
let hostServicePort: number;
const customers = { alice: `${instance}-alice`, mallory: `${instance}-mallory` };
const ids: Record<string, string> = {};
const addresses: Record<string, { ip: string; gateway: string; hostPort: number }> = {};

async function spec(customer: string, hostPort: number): Promise<ContainerSpec> {
  const home = join(root, customer);
  await mkdir(join(home, 'workspace'), { recursive: true });
  await writeFile(join(home, 'workspace', 'AGENTS.md'), `# ${customer}'s private assistant\n`);
  await chmod(home, 0o777);
  return {
    customer,
    image: IMAGE,
    containerPort: 18789,
    hostPort,
    user: '1000:1000',
    mounts: [{ hostPath: home, containerPath: '/home/node/.openclaw', readOnly: false }],
    env: { PORT: '18789', OPENCLAW_HOME: '/home/node/.openclaw' },
    resources: { memoryBytes: 64 * 1024 * 1024, nanoCpus: 250_000_000, pidsLimit: 64, nodeHeapMiB: 32 },
    ...stubHealth(),
    specHash: `hash-${customer}`,
  };
}

/**
 * Whether a TCP connection from inside `customer`'s container to host:port succeeds, within
 * `seconds` (a dropped packet is only ever a timeout). The refusals wait 3 s; the one that must
 * succeed gets longer, since the stand-in forks a shell per connection, slow on a loaded machine.
 */
async function reachesFrom(customer: string, host: string, port: number, seconds = 3): Promise<boolean> {
  const result = await runtime.exec(
    ids[customer] as string,
    ['sh', '-c', `echo | timeout ${seconds} nc ${host} ${port}`],
    (seconds + 12) * 1000,
  );
  return result.exitCode === 0;
}

beforeAll(async () => {
  const table = (() => {
    try {
      return execFileSync('nft', ['list', 'table', 'inet', 'blytz_tenants'], { encoding: 'utf8' });
    } catch {
      return '';
    }
  })();
  if (!table.includes('bz-')) {
    throw new Error(
      'the host has no tenant isolation ruleset: run `scripts/services.sh isolation` as root (deploy/host/blytz-tenants.nft)',
    );
  }
  root = await mkdtemp(join(tmpdir(), 'blytz-isolation-'));
  await chmod(root, 0o755);
  // A service on all of the host's addresses, as `blytz serve` with HOST=0.0.0.0 (its default) is.
  hostService = createServer((socket) => socket.end('blytz\n'));
  await new Promise<void>((resolve) => hostService.listen(0, '0.0.0.0', resolve));
  hostServicePort = (hostService.address() as AddressInfo).port;

  for (const [i, customer] of Object.values(customers).entries()) {
    const hostPort = portBase + i;
    ids[customer] = await runtime.create(await spec(customer, hostPort));
    await runtime.start(ids[customer] as string);
    const info = await docker.getContainer(ids[customer] as string).inspect();
    // Whatever network it is on (the first test checks it is its own).
    const [network] = Object.values(info.NetworkSettings.Networks);
    addresses[customer] = { ip: network?.IPAddress ?? '', gateway: network?.Gateway ?? '', hostPort };
  }
  await waitFor(async () => {
    const all = await Promise.all(
      Object.values(customers).map((c) => fetch(`http://127.0.0.1:${addresses[c]?.hostPort}/AGENTS.md`).catch(() => undefined)),
    );
    return all.every((r) => r?.status === 200);
  }, 20_000);
});

afterAll(async () => {
  hostService?.close();
  await removeInstanceObjects(docker, INSTANCE_LABEL, instance);
  if (root) await rm(root, { recursive: true, force: true });
});

describe('tenant isolation on Docker', () => {
  it('gives each customer a network of its own: its own subnet and bz- bridge, no shared bridge', async () => {
    const { alice, mallory } = customers;
    for (const customer of [alice, mallory]) {
      const info = await docker.getContainer(ids[customer] as string).inspect();
      expect(Object.keys(info.NetworkSettings.Networks)).toEqual([customerNetworkName(customer)]);
      const network = await docker.getNetwork(customerNetworkName(customer)).inspect();
      expect(network.Options?.['com.docker.network.bridge.name']).toBe(bridgeName(customer, instance));
      expect(Object.keys(network.Containers ?? {})).toEqual([ids[customer]]);
    }
    expect(addresses[alice]?.gateway).not.toBe(addresses[mallory]?.gateway);
  });

  it('sanity: a container reaches its own gateway port, and the host reaches each through the published loopback port', async () => {
    const { alice, mallory } = customers;
    expect(await reachesFrom(alice, addresses[alice]?.ip as string, 18789, 20)).toBe(true);
    for (const customer of [alice, mallory]) {
      const res = await fetch(`http://127.0.0.1:${addresses[customer]?.hostPort}/AGENTS.md`);
      expect(await res.text()).toContain(`${customer}'s private assistant`);
    }
  });

  it("one customer's container cannot reach another's gateway port, directly or through either host end", async () => {
    const { alice, mallory } = customers;
    const target = addresses[alice] as { ip: string; gateway: string; hostPort: number };
    // Directly, and (the published port is bound to the host's loopback only) through either bridge's host end.
    const tries = await Promise.all([
      reachesFrom(mallory, target.ip, 18789),
      reachesFrom(mallory, target.gateway, target.hostPort),
      reachesFrom(mallory, addresses[mallory]?.gateway as string, target.hostPort),
    ]);
    expect(tries).toEqual([false, false, false]);
  });

  it("a customer's container cannot reach the host's own ports (blytz's API, here on 0.0.0.0)", async () => {
    const { mallory } = customers;
    // The host end of its own bridge, another customer's, and Docker's default bridge.
    const hostEnds = [addresses[mallory]?.gateway, addresses[customers.alice]?.gateway, '172.17.0.1'] as string[];
    expect(await Promise.all(hostEnds.map((address) => reachesFrom(mallory, address, hostServicePort)))).toEqual([
      false,
      false,
      false,
    ]);
    // The listener itself answers from the host, so the refusals above are the filter's.
    const local = await new Promise<string>((resolve, reject) => {
      const socket = createConnection(hostServicePort, '127.0.0.1');
      let text = '';
      socket.on('data', (d: Buffer) => (text += d.toString()));
      socket.on('end', () => resolve(text));
      socket.on('error', reject);
    });
    expect(local).toBe('blytz\n');
  });

  it("removing a customer's last container removes its network", async () => {
    const { mallory } = customers;
    await runtime.remove(ids[mallory] as string);
    const gone = await docker
      .getNetwork(customerNetworkName(mallory))
      .inspect()
      .then(
        () => false,
        (error: { statusCode?: number }) => error.statusCode === 404,
      );
    expect(gone).toBe(true);
  });
});

describe("customer networks' addresses on the real engine", () => {
  it('skips subnets other networks hold, and says so when the pool is full', async () => {
    const guard = new Policies({ metrics: new Metrics({ defaultMetrics: false }) }).guard('docker');
    // A /27 (two customer subnets) of 10.198.0.0/16 that no network on this engine overlaps.
    const existing = (await docker.listNetworks())
      .flatMap((n) => n.IPAM?.Config ?? [])
      .flatMap((c) => {
        try {
          return c.Subnet ? [parseCidr(c.Subnet)] : [];
        } catch {
          return []; // IPv6
        }
      });
    let pool = parseCidr('10.198.0.0/27');
    while (existing.some((e) => overlaps(e, pool)))
      pool = { base: pool.base + 32 * (1 + Math.floor(Math.random() * 2000)), prefix: 27 };
    const poolText = `${formatIp(pool.base)}/27`;
    const networks = new CustomerNetworks({
      docker,
      guard,
      extraLabels: { [INSTANCE_LABEL]: instance },
      pool: poolText,
      routes: async () => [],
    });
    // Someone else holds the first half of the pool.
    const foreign = await docker.createNetwork({
      Name: `${instance}-foreign`,
      IPAM: { Driver: 'default', Config: [{ Subnet: `${formatIp(pool.base)}/28` }] },
      Labels: { [INSTANCE_LABEL]: instance },
    });
    try {
      const first = await networks.ensure(`${instance}-one`);
      const subnet = (await docker.getNetwork(first).inspect()).IPAM?.Config?.[0]?.Subnet;
      expect(subnet).toBe(`${formatIp(pool.base + 16)}/28`);
      expect(await networks.ensure(`${instance}-one`)).toBe(first); // idempotent
      await expect(networks.ensure(`${instance}-two`)).rejects.toBeInstanceOf(NetworkPoolExhaustedError);
    } finally {
      await foreign.remove().catch(() => {});
    }
  });
});
