import { randomBytes } from 'node:crypto';
import { chmod, mkdir, mkdtemp, rm } from 'node:fs/promises';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Docker from 'dockerode';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { removeInstanceObjects } from '../support/docker-cleanup.js';
import { Policies } from '../../src/resilience/policies.js';
import { DockerEventSource } from '../../src/runtime/docker/docker-events.js';
import { DockerRuntime } from '../../src/runtime/docker/docker-runtime.js';
import type { WorldEventSink } from '../../src/controller/event-source.js';
import type { ContainerSpec } from '../../src/runtime/runtime.js';
import { waitFor } from '../support/wait-for.js';
import { stubHealth } from '../support/fixtures.js';

const INSTANCE_LABEL = 'cloud.blytz.instance';
const suffix = randomBytes(3).toString('hex');
const instance = `ev-${suffix}`;
// This file's share of the test port range (docker-runtime.test.ts uses 31000-31249).
const portBase = 31250 + Math.floor(Math.random() * 200);
const name = (n: string) => `ev-${suffix}-${n}`;

const docker = new Docker();
const policies = new Policies({ overrides: { docker: { halfOpenAfterMs: 200 } } });
const runtime = new DockerRuntime(policies.guard('docker'), {
  docker,
  extraLabels: { [INSTANCE_LABEL]: instance },
  stopTimeoutSeconds: 2,
});

class RecordingSink implements WorldEventSink {
  enqueued: string[] = [];
  resyncs: string[] = [];
  enqueue(customer: string): void {
    this.enqueued.push(customer);
  }
  resync(reason: string): void {
    this.resyncs.push(reason);
  }
  clear(): void {
    this.enqueued = [];
    this.resyncs = [];
  }
}

let root: string;
let nextPort = portBase;

async function runningContainer(customer: string, extraLabels?: Record<string, string>): Promise<string> {
  const home = join(root, customer);
  await mkdir(join(home, 'workspace'), { recursive: true });
  await chmod(home, 0o777);
  const spec: ContainerSpec = {
    customer,
    image: 'blytz/assistant-stub:dev',
    containerPort: 18789,
    hostPort: nextPort++,
    user: '1000:1000',
    mounts: [{ hostPath: home, containerPath: '/home/node/.openclaw', readOnly: false }],
    env: {},
    resources: { memoryBytes: 64 * 1024 * 1024, nanoCpus: 100_000_000, pidsLimit: 32, nodeHeapMiB: 64 },
    ...stubHealth(),
    specHash: 'h',
  };
  const r = extraLabels ? new DockerRuntime(policies.guard('docker'), { docker, extraLabels }) : runtime;
  const id = await r.create(spec);
  await r.start(id);
  return id;
}

/**
 * Events arrive in order on one stream: once an event made after X has arrived, X's events
 * (if any were forwarded) have arrived too. This proves "not forwarded" without a sleep.
 */
async function marker(sink: RecordingSink, markerId: string, markerCustomer: string): Promise<void> {
  // pause and unpause: watched events that leave the container as it was.
  await docker.getContainer(markerId).pause();
  await docker.getContainer(markerId).unpause();
  await waitFor(() => sink.enqueued.includes(markerCustomer));
}

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'blytz-docker-events-'));
  await chmod(root, 0o755);
});

afterAll(async () => {
  await removeInstanceObjects(docker, INSTANCE_LABEL, instance);
  await removeInstanceObjects(docker, INSTANCE_LABEL, `${instance}-other`);
  await rm(root, { recursive: true, force: true });
});

describe('DockerEventSource', () => {
  const sink = new RecordingSink();
  const events = new DockerEventSource(policies.guard('docker'), { docker, extraLabels: { [INSTANCE_LABEL]: instance } });

  beforeAll(async () => {
    await events.start(sink);
    expect(events.connected).toBe(true);
  });
  afterAll(async () => {
    await events.stop();
  });

  it('enqueues the customer on start, docker kill, docker stop and docker rm -f', async () => {
    const customer = name('alice');
    const markerCustomer = name('alice-marker');
    const markerId = await runningContainer(markerCustomer);
    const id = await runningContainer(customer);
    await waitFor(() => sink.enqueued.includes(customer)); // start

    /** `act` enqueues the customer: every earlier event is in first (the marker), so none passes for its own. */
    const enqueuedBy = async (act: () => Promise<unknown>) => {
      sink.clear();
      await marker(sink, markerId, markerCustomer);
      sink.clear();
      await act();
      await waitFor(() => sink.enqueued.includes(customer));
    };
    await enqueuedBy(() => docker.getContainer(id).kill());
    await docker.getContainer(id).start();
    await enqueuedBy(() => docker.getContainer(id).stop({ t: 1 }));
    await docker.getContainer(id).start();
    await enqueuedBy(() => docker.getContainer(id).remove({ force: true }));
    expect(sink.resyncs).toEqual([]);
  });

  it('does not forward a signal that leaves the process running (a kill event is no change)', async () => {
    const customer = name('hup');
    const markerCustomer = name('hup-marker');
    const id = await runningContainer(customer);
    const markerId = await runningContainer(markerCustomer);
    await waitFor(() => sink.enqueued.includes(customer) && sink.enqueued.includes(markerCustomer));

    sink.clear();
    // busybox httpd ignores SIGWINCH: the engine logs a kill event and nothing else happens.
    await docker.getContainer(id).kill({ signal: 'SIGWINCH' });
    await marker(sink, markerId, markerCustomer);
    expect(sink.enqueued).not.toContain(customer);
    expect((await docker.getContainer(id).inspect()).State.Running).toBe(true);
  });

  it('does not forward exec events, nor containers of another instance', async () => {
    const execCustomer = name('exec');
    const markerCustomer = name('marker');
    const execId = await runningContainer(execCustomer);
    const markerId = await runningContainer(markerCustomer);
    await waitFor(() => sink.enqueued.includes(execCustomer) && sink.enqueued.includes(markerCustomer));

    sink.clear();
    const result = await runtime.exec(execId, ['sh', '-c', 'echo hi']);
    expect(result.exitCode).toBe(0);
    const foreignCustomer = name('foreign');
    const foreignId = await runningContainer(foreignCustomer, { [INSTANCE_LABEL]: `${instance}-other` });
    await docker.getContainer(foreignId).kill();

    await marker(sink, markerId, markerCustomer);
    expect(sink.enqueued).not.toContain(execCustomer);
    expect(sink.enqueued).not.toContain(foreignCustomer);
  });
});

/**
 * The engine "goes away" without restarting the shared dockerd: the source talks to the engine
 * through a Unix-socket relay that the test can cut and restore.
 */
class EngineRelay {
  readonly path: string;
  #server: Server | undefined;
  readonly #sockets = new Set<Socket>();

  constructor(dir: string) {
    this.path = join(dir, 'relay.sock');
  }

  async up(): Promise<void> {
    await rm(this.path, { force: true });
    const server = createServer((client) => {
      const engine = createConnection('/var/run/docker.sock');
      this.#sockets.add(client).add(engine);
      client.pipe(engine).pipe(client);
      const close = () => {
        client.destroy();
        engine.destroy();
        this.#sockets.delete(client);
        this.#sockets.delete(engine);
      };
      client.on('error', close).on('close', close);
      engine.on('error', close).on('close', close);
    });
    await new Promise<void>((resolve) => server.listen(this.path, resolve));
    this.#server = server;
  }

  async down(): Promise<void> {
    const server = this.#server;
    this.#server = undefined;
    for (const socket of this.#sockets) socket.destroy();
    if (server) await new Promise((resolve) => server.close(resolve));
  }
}

describe('DockerEventSource across an engine outage', () => {
  it('reconnects with since, replays what happened in the gap, and asks for a resync', async () => {
    const relay = new EngineRelay(root);
    await relay.up();
    const sink = new RecordingSink();
    const events = new DockerEventSource(policies.guard('docker'), {
      docker: new Docker({ socketPath: relay.path }),
      extraLabels: { [INSTANCE_LABEL]: instance },
      minReconnectMs: 50,
      maxReconnectMs: 200,
    });
    try {
      const customer = name('gap');
      const id = await runningContainer(customer);
      await events.start(sink);
      expect(events.connected).toBe(true);

      await relay.down();
      await waitFor(() => !events.connected);
      // While the source cannot reach the engine, the container dies.
      await docker.getContainer(id).kill();
      const dead = await waitFor(async () => ((await docker.getContainer(id).inspect()).State.Running ? undefined : true));
      expect(dead).toBe(true);
      sink.clear();

      await relay.up();
      await waitFor(() => sink.resyncs.length > 0, 15_000);
      expect(sink.resyncs[0]).toMatch(/docker event stream reconnected after/);
      // The kill in the gap is replayed from `since`.
      await waitFor(() => sink.enqueued.includes(customer));
    } finally {
      await events.stop();
      await relay.down();
    }
  });
});
