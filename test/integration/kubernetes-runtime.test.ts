import { AppsV1Api, CoreV1Api } from '@kubernetes/client-node';
import { mkdtemp, mkdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { pairingApprover } from '../../src/controller/customer/pairing.js';
import { MERGE_PATCH } from '../../src/kubernetes/client.js';
import { PLANS } from '../../src/domain/customer.js';
import { unguarded } from '../../src/resilience/guard.js';
import { ContainerNotRunningError, ExecTimeoutError } from '../../src/runtime/exec-output.js';
import { KubernetesRuntime } from '../../src/runtime/kubernetes/kubernetes-runtime.js';
import { KubernetesWorkspaces } from '../../src/runtime/kubernetes/kubernetes-workspaces.js';
import { objectName } from '../../src/runtime/kubernetes/names.js';
import type { ContainerSpec } from '../../src/runtime/runtime.js';
import type { Workspaces } from '../../src/workspace/workspace.js';
import { FakeKubeApi, type FakeExecCall, type FakeExecResult } from '../support/fake-kube-api.js';
import { uniqueName, stubHealth } from '../support/fixtures.js';

const NS = 'customers';
type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

describe('Kubernetes runtime (fake API server driven by @kubernetes/client-node)', () => {
  let api: FakeKubeApi;
  let runtime: KubernetesRuntime;
  let root: string;

  beforeAll(async () => {
    api = new FakeKubeApi();
    api.simulateDeployments = true;
    await api.start();
    runtime = new KubernetesRuntime(unguarded, {
      kubeConfig: api.kubeConfig(),
      namespace: NS,
      extraLabels: { 'cloud.blytz.instance': 'k8s-test' },
    });
    root = await mkdtemp(join(tmpdir(), 'blytz-k8s-'));
  });

  afterAll(async () => {
    await api.stop();
    await rm(root, { recursive: true, force: true });
  });

  beforeEach(() => {
    api.requests.length = 0;
  });

  /** A rendered workspace folder as FileWorkspaces leaves it (files plus the render marker). */
  async function workspace(customer: string, files: Record<string, string>): Promise<string> {
    const dir = join(root, customer);
    for (const [path, content] of Object.entries(files)) {
      await mkdir(join(dir, path, '..'), { recursive: true });
      await writeFile(join(dir, path), content);
    }
    await writeFile(
      join(dir, '.blytz-render.json'),
      JSON.stringify({ contentHash: 'x', template: 't', files: Object.keys(files) }),
    );
    return dir;
  }

  function spec(customer: string, dir: string, specHash: string, hostPort = 30001): ContainerSpec {
    return {
      customer,
      image: 'blytz/assistant-stub:dev',
      containerPort: 18789,
      hostPort,
      user: '1000:1000',
      mounts: [
        { hostPath: dir, containerPath: '/home/node/.openclaw', readOnly: false },
        { hostPath: join(dir, 'openclaw.json'), containerPath: '/home/node/.openclaw/openclaw.json', readOnly: true },
      ],
      env: { TZ: 'UTC' },
      resources: PLANS.personal,
      ...stubHealth(),
      specHash,
    };
  }

  const deployment = (customer: string): Json | undefined =>
    api.object('deployments', NS, objectName(customer)) as Json | undefined;

  it('creates Secret, PVC, Service and a stopped Deployment, all with the contract labels', async () => {
    const customer = uniqueName('k');
    const dir = await workspace(customer, { 'workspace/AGENTS.md': '# agents', 'openclaw.json': '{"token":"t0p"}' });
    const id = await runtime.create(spec(customer, dir, 'hash-1'));
    expect(id).toBe(`blytz-${customer}`);
    for (const plural of ['secrets', 'persistentvolumeclaims', 'services', 'deployments']) {
      const object = api.object(plural, NS, id) as Json | undefined;
      expect(object?.['metadata']['labels'], plural).toMatchObject({
        'cloud.blytz.managed-by': 'blytz',
        'cloud.blytz.customer': customer,
        'cloud.blytz.instance': 'k8s-test',
      });
    }
    const d = deployment(customer) as Json;
    expect(d['metadata']['labels']['cloud.blytz.spec-hash']).toBe('hash-1');
    expect(d['spec']['replicas']).toBe(0);
    const secret = api.object('secrets', NS, id) as Json;
    const contents = Object.values(secret['data'] as Record<string, string>).map((v) => Buffer.from(v, 'base64').toString());
    expect(contents.sort()).toEqual(['# agents', '{"token":"t0p"}']);
    expect((api.object('services', NS, id) as Json)['spec']['ports'][0]).toMatchObject({ port: 30001, targetPort: 18789 });

    const [observed] = await runtime.listFor(customer);
    expect(observed).toMatchObject({ id, customer, specHash: 'hash-1', state: 'exited', hostPort: 30001 });

    await runtime.start(id);
    expect((await runtime.listFor(customer))[0]).toMatchObject({ state: 'running', health: 'healthy' });
    await runtime.stop(id);
    expect((await runtime.listFor(customer))[0]).toMatchObject({ state: 'exited' });
  });

  it('observes with one list per kind', async () => {
    await runtime.list();
    const gets = api.requests.filter((r) => r.method === 'GET');
    expect(gets.map((r) => r.path.split('/').at(-1)).sort()).toEqual([
      'deployments',
      'persistentvolumeclaims',
      'secrets',
      'services',
    ]);
    for (const r of gets)
      expect(decodeURIComponent(r.query)).toContain('cloud.blytz.managed-by=blytz,cloud.blytz.instance=k8s-test');
  });

  it('updates the Deployment only when the spec hash changes', async () => {
    const customer = uniqueName('k');
    const dir = await workspace(customer, { 'workspace/AGENTS.md': 'a', 'openclaw.json': '{}' });
    const id = await runtime.create(spec(customer, dir, 'hash-1'));
    await runtime.start(id);
    const generation = deployment(customer)?.['metadata']['generation'];
    api.requests.length = 0;
    await runtime.create(spec(customer, dir, 'hash-1'));
    expect(api.requests.filter((r) => r.method === 'PUT')).toEqual([]);
    expect(deployment(customer)?.['spec']['replicas']).toBe(1); // untouched: still running

    await runtime.create(spec(customer, dir, 'hash-2'));
    const updated = deployment(customer) as Json;
    expect(updated['metadata']['labels']['cloud.blytz.spec-hash']).toBe('hash-2');
    expect(updated['spec']['template']['metadata']['labels']['cloud.blytz.spec-hash']).toBe('hash-2');
    expect(updated['metadata']['generation']).toBeGreaterThan(generation);
    expect((await runtime.listFor(customer))[0]).toMatchObject({ specHash: 'hash-2', state: 'exited' });
  });

  it('re-rendered files reach the Secret through KubernetesWorkspaces, unchanged ones cause no write', async () => {
    const customer = uniqueName('k');
    const dir = await workspace(customer, { 'workspace/AGENTS.md': 'v1', 'openclaw.json': '{}' });
    const id = await runtime.create(spec(customer, dir, 'h'));
    const written: string[] = [];
    const inner = { write: async (c: string) => void written.push(c) } as unknown as Workspaces;
    const workspaces = new KubernetesWorkspaces(inner, runtime);
    const rendered = (agents: string) =>
      ({
        files: [
          { path: 'workspace/AGENTS.md', content: agents, secret: false },
          { path: 'openclaw.json', content: '{}', secret: true },
        ],
      }) as never;
    api.requests.length = 0;
    await workspaces.write(customer, rendered('v1'));
    expect(api.requests.filter((r) => r.method === 'PUT')).toEqual([]);
    await workspaces.write(customer, rendered('v2'));
    const secret = api.object('secrets', NS, id) as Json;
    expect(Object.values(secret['data'] as Record<string, string>).map((v) => Buffer.from(v, 'base64').toString())).toContain(
      'v2',
    );
    expect(written).toEqual([customer, customer]);
  });

  it('remove deletes Deployment, Service and Secret but keeps the workspace volume until the purge', async () => {
    const customer = uniqueName('k');
    const dir = await workspace(customer, { 'workspace/AGENTS.md': 'a', 'openclaw.json': '{}' });
    const id = await runtime.create(spec(customer, dir, 'h'));
    expect(await runtime.listVolumes()).toContain(customer);
    await runtime.remove(id);
    await runtime.remove(id); // idempotent
    expect(await runtime.listFor(customer)).toEqual([]);
    for (const plural of ['deployments', 'services', 'secrets']) expect(api.object(plural, NS, id), plural).toBeUndefined();
    expect(api.object('persistentvolumeclaims', NS, id)).toBeDefined();
    await runtime.removeWorkspace(customer);
    expect(api.object('persistentvolumeclaims', NS, id)).toBeUndefined();
  });

  it('an orphan (our marks, no customer behind it) is listed and removed like any other', async () => {
    const customer = uniqueName('orphan');
    const dir = await workspace(customer, { 'openclaw.json': '{}' });
    await runtime.create(spec(customer, dir, 'h'));
    const orphan = (await runtime.list()).find((c) => c.customer === customer);
    expect(orphan).toBeDefined();
    await runtime.remove(orphan?.id ?? '');
    expect((await runtime.list()).some((c) => c.customer === customer)).toBe(false);
  });

  it('a missing part makes the Deployment dead (so the planner recreates it); Deployment status maps to health', async () => {
    const customer = uniqueName('k');
    const dir = await workspace(customer, { 'openclaw.json': '{}' });
    const id = await runtime.create(spec(customer, dir, 'h'));
    await runtime.start(id);
    api.simulateDeployments = false;
    try {
      // Started a minute ago: past the grace in which a failure only means "still starting".
      await api
        .kubeConfig()
        .makeApiClient(AppsV1Api)
        .patchNamespacedDeployment(
          {
            name: id,
            namespace: NS,
            body: { metadata: { annotations: { 'cloud.blytz/started-at': new Date(Date.now() - 60_000).toISOString() } } },
          },
          MERGE_PATCH,
        );
      api.setStatus('deployments', NS, id, {
        observedGeneration: deployment(customer)?.['metadata']['generation'],
        replicas: 1,
        conditions: [{ type: 'Progressing', status: 'False', reason: 'ProgressDeadlineExceeded', message: 'stuck' }],
      });
      expect((await runtime.listFor(customer))[0]).toMatchObject({ state: 'running', health: 'unhealthy' });
      api.setStatus('deployments', NS, id, {
        observedGeneration: deployment(customer)?.['metadata']['generation'],
        replicas: 1,
        readyReplicas: 0,
      });
      expect((await runtime.listFor(customer))[0]).toMatchObject({ state: 'running', health: 'starting' });
    } finally {
      api.simulateDeployments = true;
    }
    const core = api.kubeConfig().makeApiClient(CoreV1Api);
    await core.deleteNamespacedService({ name: id, namespace: NS });
    expect((await runtime.listFor(customer))[0]).toMatchObject({ state: 'dead', healthMessage: 'missing Service' });
    await runtime.create(spec(customer, dir, 'h'));
    expect((await runtime.listFor(customer))[0]?.state).not.toBe('dead');
  });

  it('names for 63-character customers stay within 63 characters and keep the full name in the label', async () => {
    const customer = `${'a'.repeat(30)}-${'b'.repeat(32)}`;
    expect(customer).toHaveLength(63);
    const dir = await workspace(customer, { 'openclaw.json': '{}' });
    const id = await runtime.create(spec(customer, dir, 'h'));
    expect(id.length).toBeLessThanOrEqual(63);
    expect(id).toMatch(/^blytz-a+-b+-[0-9a-f]{8}$/);
    expect((await runtime.listFor(customer))[0]).toMatchObject({ id, customer });
    await runtime.remove(id);
  });

  describe('exec through pods/exec (pairing approval)', () => {
    const approve = (code: string) => ['openclaw', 'pairing', 'approve', 'telegram', code];
    // The assistant's side: one pending code is known; anything else is "no pending request".
    const standIn = (call: FakeExecCall): FakeExecResult =>
      call.command.join(' ') === approve('ABCD2345').join(' ')
        ? { exitCode: 0, stdout: 'Approved telegram sender 42.\n' }
        : { exitCode: 1, stderr: 'No pending pairing request for that code.\n' };

    afterEach(() => {
      api.execHandler = (call) => ({ exitCode: 127, stderr: `sh: ${call.command[0] ?? ''}: not found\n` });
    });

    async function runningCustomer(): Promise<{ customer: string; id: string }> {
      const customer = uniqueName('pair');
      const dir = await workspace(customer, { 'openclaw.json': '{}' });
      const id = await runtime.create(spec(customer, dir, 'h'));
      await runtime.start(id);
      return { customer, id };
    }

    it("runs the command in the assistant container of the Deployment's pod and returns exit code and output", async () => {
      api.execHandler = standIn;
      const { id } = await runningCustomer();
      const calls = api.execCalls.length;
      await expect(runtime.exec(id, approve('ABCD2345'))).resolves.toEqual({
        exitCode: 0,
        stdout: 'Approved telegram sender 42.\n',
        stderr: '',
      });
      await expect(runtime.exec(id, approve('ZZZZ9999'))).resolves.toEqual({
        exitCode: 1,
        stdout: '',
        stderr: 'No pending pairing request for that code.\n',
      });
      const [pod] = api.objects('pods', NS).filter((p) => p['metadata']['name'].startsWith(`${id}-`));
      expect(api.execCalls.slice(calls)).toEqual([
        { namespace: NS, pod: pod?.['metadata']['name'], container: 'assistant', command: approve('ABCD2345') },
        { namespace: NS, pod: pod?.['metadata']['name'], container: 'assistant', command: approve('ZZZZ9999') },
      ]);
    });

    it('pairingApprover on Kubernetes: approved, rejected, and not_running when scaled to 0 or gone', async () => {
      api.execHandler = standIn;
      const approvePairing = pairingApprover(runtime);
      const { customer, id } = await runningCustomer();
      expect(await approvePairing(customer, 'ABCD2345')).toBe('approved');
      expect(await approvePairing(customer, 'ZZZZ9999')).toBe('rejected');
      await runtime.stop(id);
      expect(api.objects('pods', NS).some((p) => p['metadata']['name'].startsWith(`${id}-`))).toBe(false);
      expect(await approvePairing(customer, 'ABCD2345')).toBe('not_running');
      // Asked directly, exec finds no pod to run in.
      await expect(runtime.exec(id, approve('ABCD2345'))).rejects.toBeInstanceOf(ContainerNotRunningError);
      await runtime.remove(id);
      await expect(runtime.exec(id, approve('ABCD2345'))).rejects.toThrow(/no such Deployment/);
    });

    it('a pod that is not running yet is not_running, not an error', async () => {
      api.execHandler = standIn;
      const { customer, id } = await runningCustomer();
      const [pod] = api.objects('pods', NS).filter((p) => p['metadata']['name'].startsWith(`${id}-`));
      api.setStatus('pods', NS, pod?.['metadata']['name'], { phase: 'Pending', containerStatuses: [] });
      expect(await pairingApprover(runtime)(customer, 'ABCD2345')).toBe('not_running');
    });

    it('a container that stops between the listing and the exec is not_running, not a server error', async () => {
      const { customer, id } = await runningCustomer();
      const [pod] = api.objects('pods', NS).filter((p) => p['metadata']['name'].startsWith(`${id}-`));
      api.execHandler = () => {
        // The kubelet finds the container gone: the API server answers with a generic failure.
        api.setStatus('pods', NS, pod?.['metadata']['name'], {
          phase: 'Running',
          containerStatuses: [{ name: 'assistant', state: { waiting: {} } }],
        });
        throw new Error('container not found ("assistant")');
      };
      await expect(runtime.exec(id, approve('ABCD2345'))).rejects.toBeInstanceOf(ContainerNotRunningError);
      expect(await pairingApprover(runtime)(customer, 'ABCD2345')).toBe('not_running');
    });

    it('a command that outlives its timeout is an ExecTimeoutError (not a dependency failure)', async () => {
      api.execHandler = () => new Promise((resolve) => setTimeout(() => resolve({ exitCode: 0 }), 2_000));
      const { id } = await runningCustomer();
      const started = performance.now();
      await expect(runtime.exec(id, ['sleep', '2'], 300)).rejects.toBeInstanceOf(ExecTimeoutError);
      expect(performance.now() - started).toBeLessThan(1_500);
    });

    it("a failure that is no exit code (the runtime could not start the command) is an error with the server's message", async () => {
      api.execHandler = () => {
        throw new Error('OCI runtime exec failed: executable file not found in $PATH');
      };
      const { id } = await runningCustomer();
      await expect(runtime.exec(id, ['nope'])).rejects.toThrow(/exec failed: OCI runtime exec failed/);
    });
  });
});
