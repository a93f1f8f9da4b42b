import { randomBytes } from 'node:crypto';
import { chmod, mkdir, mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Docker from 'dockerode';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { removeInstanceObjects } from '../support/docker-cleanup.js';
import { CUSTOMER_LABEL, MANAGED_BY_LABEL, SPEC_HASH_LABEL } from '../../src/domain/naming.js';
import { Metrics } from '../../src/observability/metrics.js';
import { Policies } from '../../src/resilience/policies.js';
import { containerConfig } from '../../src/runtime/docker/container-config.js';
import { DockerRuntime } from '../../src/runtime/docker/docker-runtime.js';
import { ContainerNotRunningError, ExecTimeoutError } from '../../src/runtime/exec-output.js';
import { PortClashError, type ContainerSpec } from '../../src/runtime/runtime.js';
import { waitFor } from '../support/wait-for.js';
import { stubHealth } from '../support/fixtures.js';

const IMAGE = 'blytz/assistant-stub:dev';
const INSTANCE_LABEL = 'cloud.blytz.instance';
const suffix = randomBytes(3).toString('hex');
const instance = `rt-${suffix}`;
// This file's share of the test port range (docker-events.test.ts uses 31250-31499).
const portBase = 31000 + Math.floor(Math.random() * 200);
const SECRET = `s3cr3t-${randomBytes(8).toString('hex')}`;

const docker = new Docker();
const metrics = new Metrics({ defaultMetrics: false });
const policies = new Policies({ metrics });
const runtime = new DockerRuntime(policies.guard('docker'), { docker, extraLabels: { [INSTANCE_LABEL]: instance } });

let root: string;

/** A customer folder as the workspace module lays it out: ~/.openclaw with workspace/ and a 0600 secret. */
async function customerHome(customer: string): Promise<string> {
  const home = join(root, customer);
  await mkdir(join(home, 'workspace'), { recursive: true });
  await writeFile(join(home, 'workspace', 'AGENTS.md'), `# Agents of ${customer}\n`);
  await writeFile(join(home, 'secrets.json'), JSON.stringify({ botToken: SECRET }), { mode: 0o600 });
  await chmod(home, 0o777); // the container runs as 1000:1000, the test as root
  await chmod(join(home, 'workspace'), 0o755);
  return home;
}

async function spec(customer: string, hostPort: number, overrides: Partial<ContainerSpec> = {}): Promise<ContainerSpec> {
  return {
    customer,
    image: IMAGE,
    containerPort: 18789,
    hostPort,
    user: '1000:1000',
    mounts: [{ hostPath: await customerHome(customer), containerPath: '/home/node/.openclaw', readOnly: false }],
    env: { PORT: '18789', OPENCLAW_HOME: '/home/node/.openclaw', TZ: 'UTC' },
    resources: { memoryBytes: 128 * 1024 * 1024, nanoCpus: 250_000_000, pidsLimit: 64, nodeHeapMiB: 64 },
    ...stubHealth(),
    specHash: `hash-${customer}`,
    ...overrides,
  };
}

const name = (n: string) => `rt-${suffix}-${n}`;

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'blytz-docker-runtime-'));
  await chmod(root, 0o755);
});

afterAll(async () => {
  // Only what this file created: our unique instance label.
  await removeInstanceObjects(docker, INSTANCE_LABEL, instance);
  await rm(root, { recursive: true, force: true });
});

describe('DockerRuntime', () => {
  it('answers ping', async () => {
    await expect(runtime.ping()).resolves.toBeUndefined();
  });

  it('create + start: a running, hardened container serving its bind-mounted workspace on 127.0.0.1 only', async () => {
    const customer = name('alice');
    const s = await spec(customer, portBase);
    const id = await runtime.create(s);
    await runtime.start(id);

    const info = await docker.getContainer(id).inspect();
    expect(info.Name).toBe(`/blytz-${customer}`);
    expect(info.State.Running).toBe(true);
    expect(info.Config.Labels).toMatchObject({
      [MANAGED_BY_LABEL]: 'blytz',
      [CUSTOMER_LABEL]: customer,
      [SPEC_HASH_LABEL]: `hash-${customer}`,
      [INSTANCE_LABEL]: instance,
    });
    expect(info.Config.User).toBe('1000:1000');
    const host = info.HostConfig;
    expect(host.Memory).toBe(128 * 1024 * 1024);
    expect(host.NanoCpus).toBe(250_000_000);
    expect(host.PidsLimit).toBe(64);
    expect(host.SecurityOpt).toContain('no-new-privileges:true');
    expect(host.CapDrop).toEqual(['ALL']);
    expect(host.CapAdd ?? []).toEqual([]);
    expect(host.Privileged).toBe(false);
    expect(host.RestartPolicy?.Name).toBe('unless-stopped');
    expect(host.Init).toBe(true);
    // Read-only root; the template's tmpfs folders are the only writable places outside the mount.
    expect(host.ReadonlyRootfs).toBe(true);
    expect(host.Tmpfs).toEqual({ '/tmp': 'rw,nosuid,nodev,size=256m,uid=1000,gid=1000,mode=0700' });
    expect(host.LogConfig).toEqual({ Type: 'json-file', Config: { 'max-size': '10m', 'max-file': '3' } });
    expect(host.PortBindings).toEqual({ '18789/tcp': [{ HostIp: '127.0.0.1', HostPort: String(portBase) }] });
    // On its customer's own network, never Docker's shared bridge (tenant-isolation.test.ts).
    expect(host.NetworkMode).toBe(`blytz-${customer}`);
    expect(Object.keys(info.NetworkSettings.Networks)).toEqual([`blytz-${customer}`]);
    // What the engine actually bound: 127.0.0.1 only, no 0.0.0.0 or [::].
    expect(info.NetworkSettings.Ports['18789/tcp']).toEqual([{ HostIp: '127.0.0.1', HostPort: String(portBase) }]);
    expect(info.Mounts).toEqual([
      expect.objectContaining({ Type: 'bind', Source: join(root, customer), Destination: '/home/node/.openclaw', RW: true }),
    ]);

    // Env holds only the spec's plain settings (and the image's own); the secret is nowhere in the container's config.
    expect(info.Config.Env).toEqual(expect.arrayContaining(['PORT=18789', 'OPENCLAW_HOME=/home/node/.openclaw', 'TZ=UTC']));
    expect(info.Config.Env.some((e) => /token|secret|key/i.test(e))).toBe(false);
    expect(JSON.stringify(info)).not.toContain(SECRET);

    // The mounted folder is served on the host port.
    await writeFile(join(root, customer, 'workspace', 'hello.txt'), `hello ${customer}\n`);
    const body = await waitFor(async () => {
      const res = await fetch(`http://127.0.0.1:${portBase}/hello.txt`);
      return res.ok ? res.text() : undefined;
    });
    expect(body).toBe(`hello ${customer}\n`);

    const observed = await waitFor(async () => {
      const [c] = await runtime.listFor(customer);
      return c?.health === 'healthy' ? c : undefined;
    });
    expect(observed).toMatchObject({
      id,
      customer,
      name: `blytz-${customer}`,
      specHash: `hash-${customer}`,
      state: 'running',
      health: 'healthy',
      hostPort: portBase,
    });
  });

  it('a container left on Docker\'s shared bridge (made before customers had networks) reads as another spec, so it is recreated', async () => {
    const customer = name('legacy');
    const s = await spec(customer, portBase + 40);
    const config = containerConfig(s, { [INSTANCE_LABEL]: instance }); // no network: the default bridge
    const legacy = await docker.createContainer(config);
    const [observed] = await runtime.listFor(customer);
    expect(observed?.id).toBe(legacy.id);
    expect(observed?.specHash).toBe(`hash-${customer}+shared-network`);
    await runtime.remove(legacy.id);
    expect(await runtime.listFor(customer)).toEqual([]);
  });

  it('list() is one call scoped by the extra labels: another instance sees none of ours', async () => {
    const customer = name('scoped');
    const id = await runtime.create(await spec(customer, portBase + 1));
    const ours = await runtime.list();
    expect(ours.map((c) => c.id)).toContain(id);
    expect(ours.every((c) => c.customer.startsWith(`rt-${suffix}-`))).toBe(true);
    const created = ours.find((c) => c.id === id);
    expect(created).toMatchObject({ state: 'created', health: 'unknown', hostPort: portBase + 1 });

    const other = new DockerRuntime(policies.guard('docker'), { docker, extraLabels: { [INSTANCE_LABEL]: `other-${suffix}` } });
    expect((await other.list()).map((c) => c.id)).not.toContain(id);
    expect(await runtime.listFor(name('nobody'))).toEqual([]);
    await runtime.remove(id);
  });

  it('stop, start and remove are idempotent', async () => {
    const customer = name('idem');
    const id = await runtime.create(await spec(customer, portBase + 2));
    await runtime.start(id);
    await runtime.start(id); // already running
    await runtime.stop(id);
    await runtime.stop(id); // already stopped
    expect((await runtime.listFor(customer))[0]?.state).toBe('exited');

    await runtime.start(id);
    expect((await runtime.listFor(customer))[0]?.state).toBe('running');

    await runtime.remove(id);
    await runtime.remove(id); // already gone
    await runtime.stop(id); // gone: the goal of stop holds
    expect(await runtime.listFor(customer)).toEqual([]);
  });

  it('listFor, asked the moment the die event arrives, sees the container stopped (the engine list still says running then)', async () => {
    const customer = name('died');
    const id = await runtime.create(await spec(customer, portBase + 12));
    await runtime.start(id);
    const events = (await docker.getEvents({
      filters: { type: ['container'], label: [`${CUSTOMER_LABEL}=${customer}`], event: ['die'] },
    })) as NodeJS.ReadableStream & { destroy(): void };
    try {
      const died = new Promise<void>((resolve) => events.once('data', () => resolve()));
      // Not awaited before the event: the engine answers the kill only once it is done with the exit.
      const killed = docker.getContainer(id).kill();
      await died;
      const [seen] = await runtime.listFor(customer);
      await killed;
      expect(seen?.state).toBe('exited');
      expect(seen?.health).not.toBe('unhealthy'); // a restart, never a crash-loop count
      expect(seen?.healthMessage).toMatch(/^Exited \(137\)/);
      // The engine is free to start it again at once.
      await runtime.start(id);
      expect((await runtime.listFor(customer))[0]?.state).toBe('running');
    } finally {
      events.destroy();
    }
  });

  it('a host port taken by another container: start throws PortClashError and leaves a created container', async () => {
    const first = name('clash-a');
    const second = name('clash-b');
    const port = portBase + 3;
    await runtime.start(await runtime.create(await spec(first, port)));
    const id = await runtime.create(await spec(second, port));

    const error = await runtime.start(id).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(PortClashError);
    expect((error as PortClashError).port).toBe(port);
    const [left] = await runtime.listFor(second);
    expect(left).toMatchObject({ id, state: 'created' });
    // A clash is an answer, not an engine failure: the breaker stays closed.
    expect(policies.states()['docker']).toBe('closed');
  });

  it('a host port taken by a host process: start throws PortClashError', async () => {
    const port = portBase + 4;
    const server: Server = createServer();
    await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
    try {
      const id = await runtime.create(await spec(name('clash-host'), port));
      const error = await runtime.start(id).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(PortClashError);
      expect((error as PortClashError).port).toBe(port);
      expect((await runtime.listFor(name('clash-host')))[0]?.state).toBe('created');
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
  });

  /** Waits until the customer's container is observed with this health, and returns it. */
  const observedAs = (customer: string, health: string) =>
    waitFor(async () => {
      const [c] = await runtime.listFor(customer);
      return c?.health === health ? c : undefined;
    });

  it('health: starting while nothing listens within the start timeout, unhealthy with the reason after it', async () => {
    // The stub listens on $PORT: send it elsewhere, so nothing answers on the published port.
    const young = name('deaf-young');
    await runtime.start(await runtime.create(await spec(young, portBase + 5, { env: { PORT: '18790' }, startTimeoutSeconds: 600 })));
    expect(await observedAs(young, 'starting')).toMatchObject({ state: 'running', healthMessage: expect.stringMatching(/^starting: /) });

    const old = name('deaf-old');
    await runtime.start(await runtime.create(await spec(old, portBase + 8, { env: { PORT: '18790' }, startTimeoutSeconds: 0 })));
    const broken = await observedAs(old, 'unhealthy');
    expect(broken.healthMessage).toMatch(/^not started after \d+ s \(start timeout 0 s\): GET \/startupz: nothing answers on host port/);
  });

  it('health: a 200 that is not the declared JSON (a catch-all HTML page on every path) is not healthy', async () => {
    const customer = name('catchall');
    const id = await runtime.create(await spec(customer, portBase + 6, { startTimeoutSeconds: 0 }));
    await runtime.start(id);
    await observedAs(customer, 'healthy');
    // What the OpenClaw gateway does on every path it does not know: 200 with its Control UI page.
    const page = '<!doctype html><html><body>Control UI</body></html>';
    await runtime.exec(id, ['sh', '-c', `for p in healthz startupz readyz; do echo '${page}' > /tmp/www/$p; done`]);
    const broken = await observedAs(customer, 'unhealthy');
    expect(broken.healthMessage).toMatch(/GET \/startupz answered 200 but not with JSON: <!doctype html>/);
  });

  it('health: alive and started but not ready is unready (kept, not restarted), with the readiness answer', async () => {
    const customer = name('unready');
    const id = await runtime.create(await spec(customer, portBase + 9, { startTimeoutSeconds: 0 }));
    await runtime.start(id);
    await observedAs(customer, 'healthy');
    await runtime.exec(id, ['sh', '-c', `echo '{"ready":false,"failing":["channel:telegram"]}' > /tmp/www/readyz`]);
    const unready = await observedAs(customer, 'unready');
    expect(unready.healthMessage).toBe('not ready: GET /readyz answered ready=false (expected true)');
    // Liveness failing once started is unhealthy, whatever the readiness says.
    await runtime.exec(id, ['sh', '-c', `echo '{"ok":false,"status":"live"}' > /tmp/www/healthz`]);
    expect((await observedAs(customer, 'unhealthy')).healthMessage).toBe(
      'liveness probe failing: GET /healthz answered ok=false (expected true)',
    );
  });

  it('health: an answer of 500 or more is starting within the start timeout, then unhealthy', async () => {
    const home = async (customer: string) => {
      const dir = await customerHome(customer);
      // busybox httpd runs /cgi-bin/* scripts: one that fails.
      await mkdir(join(dir, 'workspace', 'cgi-bin'), { recursive: true });
      await writeFile(
        join(dir, 'workspace', 'cgi-bin', 'health'),
        '#!/bin/sh\nprintf "Status: 503 Service Unavailable\\r\\nContent-Type: text/plain\\r\\n\\r\\ndown\\n"\n',
        { mode: 0o755 },
      );
    };
    const failing = { path: '/cgi-bin/health', expect: { ok: true } };
    const probes = { startup: failing, liveness: failing, readiness: failing };
    const young = name('cgi-young');
    await home(young);
    await runtime.start(await runtime.create(await spec(young, portBase + 10, { probes, startTimeoutSeconds: 600 })));
    // Just started: a 503 is a container warming up (no restart yet), and says so.
    const warming = await waitFor(async () => {
      const [c] = await runtime.listFor(young);
      return c?.healthMessage?.includes('answered 503') ? c : undefined;
    });
    expect(warming).toMatchObject({ health: 'starting', healthMessage: 'starting: GET /cgi-bin/health answered 503: down' });

    const old = name('cgi-old');
    await home(old);
    await runtime.start(await runtime.create(await spec(old, portBase + 11, { probes, startTimeoutSeconds: 0 })));
    const broken = await waitFor(async () => {
      const [c] = await runtime.listFor(old);
      return c?.healthMessage?.includes('answered 503') ? c : undefined;
    });
    expect(broken.health).toBe('unhealthy');
  });

  it('a stopped (suspended) customer keeps its network when another container of theirs is removed, and starts again', async () => {
    const customer = name('sleeper');
    const id = await runtime.create(await spec(customer, portBase + 13));
    await runtime.start(id);
    await runtime.stop(id);
    // A container of the same customer made by hand (the controller removes it as a stray).
    const stray = await docker.createContainer({
      Image: IMAGE,
      name: `stray-${customer}`,
      Labels: { [MANAGED_BY_LABEL]: 'blytz', [CUSTOMER_LABEL]: customer, [INSTANCE_LABEL]: instance },
    });
    await runtime.remove(stray.id);
    // The stopped container still needs its network: the engine counts no endpoint for it.
    await docker.getNetwork(`blytz-${customer}`).inspect();
    await runtime.start(id);
    expect((await runtime.listFor(customer))[0]?.state).toBe('running');
  });

  it('exec: stdout, stderr and the exit code of a command in the container; a timeout', async () => {
    const customer = name('exec');
    const s = await spec(customer, portBase + 7);
    const id = await runtime.create(s);
    await runtime.start(id);
    await writeFile(join(root, customer, 'pending-pairing-codes'), 'ABCD1234\n');

    const ok = await runtime.exec(id, ['openclaw', 'pairing', 'approve', 'telegram', 'ABCD1234']);
    expect(ok.exitCode).toBe(0);
    expect(ok.stdout).toContain('Approved telegram pairing ABCD1234');
    expect(ok.stderr).toBe('');

    const wrong = await runtime.exec(id, ['openclaw', 'pairing', 'approve', 'telegram', 'WRONG999']);
    expect(wrong.exitCode).toBe(1);
    expect(wrong.stdout).toBe('');
    expect(wrong.stderr).toContain('No pending pairing request');

    const calls = await runtime.exec(id, ['cat', '/tmp/openclaw-calls.log']);
    expect(calls.stdout.trim().split('\n')).toEqual(['pairing approve telegram ABCD1234', 'pairing approve telegram WRONG999']);

    // A command writing byte by byte, to both streams: one frame per write on the engine's stream.
    const tiny = await runtime.exec(id, ['sh', '-c', 'i=0; while [ $i -lt 3000 ]; do printf x; printf y >&2; i=$((i+1)); done']);
    expect(tiny).toEqual({ exitCode: 0, stdout: 'x'.repeat(3000), stderr: 'y'.repeat(3000) });

    await expect(runtime.exec(id, ['sleep', '5'], 300)).rejects.toBeInstanceOf(ExecTimeoutError);
    expect(policies.states()['docker']).toBe('closed');

    // Stopped, then gone: an answer about the container (pairing says not_running), not an engine failure.
    await runtime.stop(id);
    await expect(runtime.exec(id, ['true'])).rejects.toBeInstanceOf(ContainerNotRunningError);
    await runtime.remove(id);
    await expect(runtime.exec(id, ['true'])).rejects.toBeInstanceOf(ContainerNotRunningError);
    expect(policies.states()['docker']).toBe('closed');
  });

  it('create refuses root and names that are not DNS-1123 labels', async () => {
    await expect(runtime.create(await spec(name('root'), portBase + 8, { user: '0:0' }))).rejects.toThrow(/non-root/);
    await expect(runtime.create({ ...(await spec(name('bad'), portBase + 8)), customer: '../etc' })).rejects.toThrow(/DNS-1123/);
    expect(await runtime.listFor(name('root'))).toEqual([]);
  });

  it('records engine calls in blytz_external_call_duration_seconds', async () => {
    const { values } = await metrics.externalCallDuration.get();
    const count = (operation: string, outcome: string) =>
      values.find(
        (v) =>
          v.metricName === 'blytz_external_call_duration_seconds_count' &&
          v.labels['operation'] === operation &&
          v.labels['outcome'] === outcome,
      )?.value ?? 0;
    expect(count('createContainer', 'success')).toBeGreaterThan(0);
    expect(count('listContainers', 'success')).toBeGreaterThan(0);
    expect(count('startContainer', 'error')).toBeGreaterThan(0); // the port clashes
  });
  it('seesHostFile: a running container sees a file in the folder it mounted, not in one put in that folder\'s place until it starts again', async () => {
    const customer = name('swap');
    const s = await spec(customer, portBase + 190);
    const home = s.mounts[0]!.hostPath;
    await writeFile(join(home, 'before'), 'x');
    const id = await runtime.create(s);
    await runtime.start(id);
    expect(await runtime.seesHostFile(id, join(home, 'before'))).toBe(true);
    expect(await runtime.seesHostFile(id, join(home, 'nothing-here'))).toBe(false);
    expect(await runtime.seesHostFile(id, join(root, 'outside-any-mount'))).toBe(false);

    // What a restore's swap does: the folder moves aside, another takes its path.
    await rename(home, `${home}-replaced`);
    await mkdir(home, { mode: 0o777 });
    await writeFile(join(home, 'after'), 'y');
    expect(await runtime.seesHostFile(id, join(home, 'after'))).toBe(false);
    expect(await runtime.seesHostFile(id, join(home, 'before'))).toBe(true); // still the old folder

    await runtime.stop(id);
    expect(await runtime.seesHostFile(id, join(home, 'after'))).toBe(false); // not running
    await runtime.start(id);
    expect(await runtime.seesHostFile(id, join(home, 'after'))).toBe(true);
    expect(await runtime.seesHostFile(id, join(home, 'before'))).toBe(false);
  });
});
