import { KubeConfig, type Exec, type V1Pod, type V1Status } from '@kubernetes/client-node';
import { describe, expect, it } from 'vitest';
import { PLANS } from '../../src/domain/customer.js';
import { deploymentManifest, secretManifest, serviceManifest } from '../../src/runtime/kubernetes/manifests.js';
import { objectName, serviceDial } from '../../src/runtime/kubernetes/names.js';
import { observeDeployment } from '../../src/runtime/kubernetes/observe.js';
import { exitCodeOf, pickExecPod, runPodExec } from '../../src/runtime/kubernetes/pod-exec.js';
import { ContainerNotRunningError, ExecTimeoutError } from '../../src/runtime/exec-output.js';
import { isTransient } from '../../src/resilience/transient.js';
import { unguarded } from '../../src/resilience/guard.js';
import { KubernetesRuntime } from '../../src/runtime/kubernetes/kubernetes-runtime.js';
import type { ContainerSpec } from '../../src/runtime/runtime.js';
import { stubHealth } from '../support/fixtures.js';

const options = { namespace: 'ns', extraLabels: {}, storageSize: '1Gi' };
const spec: ContainerSpec = {
  customer: 'ada',
  image: 'img',
  containerPort: 18789,
  hostPort: 30001,
  user: '1000:1001',
  mounts: [{ hostPath: '/data/ada', containerPath: '/home/node/.openclaw', readOnly: false }],
  env: { A: 'b' },
  resources: PLANS.personal,
  ...stubHealth(),
  specHash: 'abc',
};
const files = [
  { path: 'workspace/AGENTS.md', content: Buffer.from('a') },
  { path: 'openclaw.json', content: Buffer.from('{}') },
];

describe('kubernetes runtime parts', () => {
  it('object names are blytz-<name>, cut and hashed only when longer than 63', () => {
    expect(objectName('ada')).toBe('blytz-ada');
    const long = 'x'.repeat(63);
    const name = objectName(long);
    expect(name.length).toBeLessThanOrEqual(63);
    expect(name).toMatch(/^blytz-x+-[0-9a-f]{8}$/);
    expect(objectName(`${'x'.repeat(62)}y`)).not.toBe(name);
    expect(objectName('x'.repeat(57))).toBe(`blytz-${'x'.repeat(57)}`); // exactly 63
    expect(() => objectName('Bad')).toThrow(/DNS-1123/);
    expect(serviceDial('ada', 'ns', 30001)).toBe('blytz-ada.ns.svc:30001');
  });

  it('the Deployment strategy follows the template: Recreate, or RollingUpdate surging one for blueGreen', () => {
    expect(deploymentManifest({ ...spec, updateStrategy: 'recreate' }, files, options).spec?.strategy).toEqual({
      type: 'Recreate',
    });
    expect(deploymentManifest({ ...spec, updateStrategy: 'blueGreen' }, files, options).spec?.strategy).toEqual({
      type: 'RollingUpdate',
      rollingUpdate: { maxSurge: 1, maxUnavailable: 0 },
    });
  });

  it('the Deployment is hardened like the Docker container and sized by the plan', () => {
    const d = deploymentManifest(spec, files, options);
    expect(d.spec?.replicas).toBe(0);
    expect(d.spec?.strategy?.type).toBe('Recreate');
    const pod = d.spec?.template.spec;
    expect(pod?.automountServiceAccountToken).toBe(false);
    expect(pod?.securityContext).toMatchObject({ runAsNonRoot: true, runAsUser: 1000, runAsGroup: 1001, fsGroup: 1001 });
    for (const c of [...(pod?.containers ?? []), ...(pod?.initContainers ?? [])]) {
      expect(c.securityContext).toMatchObject({
        allowPrivilegeEscalation: false,
        capabilities: { drop: ['ALL'] },
        runAsNonRoot: true,
      });
    }
    const main = pod?.containers[0];
    expect(main?.resources?.limits).toEqual({ cpu: '1000m', memory: String(1536 * 1024 * 1024) });
    expect(main?.readinessProbe?.httpGet).toEqual({ path: '/readyz', port: 'http' });
    expect(main?.startupProbe?.httpGet).toEqual({ path: '/startupz', port: 'http' });
    expect(main?.env).toEqual([{ name: 'A', value: 'b' }]);
    expect(d.spec?.template.metadata?.labels?.['cloud.blytz.spec-hash']).toBe('abc');
    // Rendered paths are handed to the seed step as arguments, never spliced into its script.
    const seed = pod?.initContainers?.[0]?.command ?? [];
    expect(seed.slice(4).sort()).toEqual(['f0=openclaw.json', 'f1=workspace/AGENTS.md']);
    expect(seed[2]).not.toContain('AGENTS');
    expect(() => deploymentManifest({ ...spec, user: '0:0' }, files, options)).toThrow(/non-root/);
  });

  it('the Secret holds the files by key; the Service maps the reserved port to the container port', () => {
    const s = secretManifest('ada', files, options);
    expect(Object.keys(s.data ?? {})).toEqual(['f0', 'f1']);
    expect(Buffer.from(s.data?.['f1'] ?? '', 'base64').toString()).toBe('a');
    expect(() => secretManifest('ada', [{ path: 'big', content: Buffer.alloc(1024 * 1024) }], options)).toThrow(/1 MiB/);
    expect(serviceManifest(spec, options).spec?.ports).toEqual([
      { name: 'http', protocol: 'TCP', port: 30001, targetPort: 18789 },
    ]);
  });

  it('Deployment status maps to state and health', () => {
    const base = {
      metadata: {
        name: 'blytz-ada',
        generation: 2,
        labels: { 'cloud.blytz.customer': 'ada', 'cloud.blytz.spec-hash': 'abc', 'cloud.blytz.host-port': '30001' },
      },
      spec: { replicas: 1, selector: {}, template: {} },
    };
    expect(observeDeployment({ ...base, status: { observedGeneration: 2, readyReplicas: 1, updatedReplicas: 1 } })).toMatchObject(
      {
        id: 'blytz-ada',
        customer: 'ada',
        specHash: 'abc',
        hostPort: 30001,
        state: 'running',
        health: 'healthy',
      },
    );
    expect(observeDeployment({ ...base, status: { observedGeneration: 1, readyReplicas: 1 } })).toMatchObject({
      health: 'starting',
    });
    expect(observeDeployment({ ...base, spec: { ...base.spec, replicas: 0 } })).toMatchObject({ state: 'exited' });
    expect(observeDeployment(base, ['Secret'])).toMatchObject({ state: 'dead', healthMessage: 'missing Secret' });
    const quota = { type: 'ReplicaFailure', status: 'True', reason: 'FailedCreate', message: 'quota' };
    expect(observeDeployment({ ...base, status: { observedGeneration: 2, conditions: [quota] } })).toMatchObject({
      state: 'running',
      health: 'unhealthy',
      healthMessage: 'FailedCreate: quota',
    });
    // Conditions of an older generation are stale: the new spec is still being rolled out.
    expect(observeDeployment({ ...base, status: { observedGeneration: 1, conditions: [quota] } })).toMatchObject({
      health: 'starting',
      healthMessage: 'rollout not observed yet',
    });
    // Within 30 s of our own start a failure is a start settling, not yet a reason to restart again.
    const started = {
      ...base,
      metadata: { ...base.metadata, annotations: { 'cloud.blytz/started-at': '2026-12-02T10:00:00.000Z' } },
    };
    const at = (iso: string) => Date.parse(iso);
    expect(
      observeDeployment({ ...started, status: { observedGeneration: 2, conditions: [quota] } }, [], at('2026-12-02T10:00:20Z')),
    ).toMatchObject({
      health: 'starting',
      healthMessage: 'started moments ago; FailedCreate: quota',
    });
    expect(
      observeDeployment({ ...started, status: { observedGeneration: 2, conditions: [quota] } }, [], at('2026-12-02T10:00:31Z')),
    ).toMatchObject({
      health: 'unhealthy',
    });
    const deadline = { type: 'Progressing', status: 'False', reason: 'ProgressDeadlineExceeded', message: 'stuck' };
    expect(observeDeployment({ ...base, status: { observedGeneration: 2, conditions: [deadline] } })).toMatchObject({
      health: 'unhealthy',
      healthMessage: 'progress deadline exceeded: stuck',
    });
    expect(observeDeployment({ ...base, metadata: { ...base.metadata, deletionTimestamp: new Date() } })).toMatchObject({
      state: 'removing',
    });
  });

  it("routes dial the customer's Service by its cluster DNS name, on the reserved port (the Service port)", () => {
    const kc = new KubeConfig();
    kc.loadFromOptions({
      clusters: [{ name: 'c', server: 'http://127.0.0.1:1' }],
      users: [{ name: 'u' }],
      contexts: [{ name: 'x', cluster: 'c', user: 'u' }],
      currentContext: 'x',
    });
    const runtime = new KubernetesRuntime(unguarded, { kubeConfig: kc, namespace: 'blytz-prod' });
    expect(runtime.upstream('ada', 30001)).toBe('blytz-ada.blytz-prod.svc:30001');
    expect(runtime.upstream('ada', 30001)).toBe(serviceDial('ada', 'blytz-prod', 30001));
    // Long names are cut like the Service's own name, so the DNS name is the Service's.
    const long = 'x'.repeat(63);
    expect(runtime.upstream(long, 30002)).toBe(`${objectName(long)}.blytz-prod.svc:30002`);
    expect(serviceManifest({ ...spec, customer: long, hostPort: 30002 }, options).metadata?.name).toBe(objectName(long));
    expect(serviceManifest({ ...spec, hostPort: 30002 }, options).spec?.ports?.[0]?.port).toBe(30002);
  });
});

describe('pods/exec parts', () => {
  const pod = (
    name: string,
    options: { phase?: string; ready?: boolean; running?: boolean; deleting?: boolean; created?: string },
  ): V1Pod => ({
    metadata: {
      name,
      creationTimestamp: new Date(options.created ?? '2026-12-01T10:00:00Z'),
      ...(options.deleting ? { deletionTimestamp: new Date('2026-12-01T11:00:00Z') } : {}),
    },
    status: {
      phase: options.phase ?? 'Running',
      conditions: [{ type: 'Ready', status: options.ready === false ? 'False' : 'True' }],
      containerStatuses: [
        {
          name: 'assistant',
          image: 'img',
          imageID: '',
          ready: options.ready !== false,
          restartCount: 0,
          state: options.running === false ? { waiting: { reason: 'CrashLoopBackOff' } } : { running: {} },
        },
      ],
    },
  });

  it('picks a running, not-deleting pod whose container runs: ready before unready, then the newest', () => {
    expect(pickExecPod([], 'assistant')).toBeUndefined();
    expect(
      pickExecPod(
        [pod('pending', { phase: 'Pending' }), pod('leaving', { deleting: true }), pod('crashing', { running: false })],
        'assistant',
      ),
    ).toBeUndefined();
    expect(pickExecPod([pod('a', {})], 'sidecar')).toBeUndefined();
    const old = pod('old', { created: '2026-12-01T09:00:00Z' });
    const young = pod('young', { created: '2026-12-01T10:00:00Z' });
    const youngest = pod('youngest-unready', { created: '2026-12-01T11:00:00Z', ready: false });
    expect(pickExecPod([old, youngest, young], 'assistant')?.metadata?.name).toBe('young');
    expect(pickExecPod([old, youngest], 'assistant')?.metadata?.name).toBe('old');
    expect(pickExecPod([youngest], 'assistant')?.metadata?.name).toBe('youngest-unready');
  });

  it("reads the exit code from the API server's Status; other failures are errors with its message", () => {
    expect(exitCodeOf({ status: 'Success' })).toBe(0);
    expect(
      exitCodeOf({ status: 'Failure', reason: 'NonZeroExitCode', details: { causes: [{ reason: 'ExitCode', message: '3' }] } }),
    ).toBe(3);
    expect(() => exitCodeOf({ status: 'Failure', reason: 'NonZeroExitCode', details: { causes: [] } })).toThrow(/exec failed/);
    expect(() =>
      exitCodeOf({ status: 'Failure', reason: 'InternalError', message: 'container not found ("assistant")' }),
    ).toThrow('exec failed: container not found ("assistant")');
  });

  describe('runPodExec against a stand-in for client-node Exec', () => {
    const target = { namespace: 'ns', pod: 'blytz-ada-1', container: 'assistant' };
    type Connect = (status: (s: V1Status) => void) => Promise<unknown>;
    const execWith = (connect: Connect) =>
      ({
        exec: (
          _ns: string,
          _pod: string,
          _c: string,
          _cmd: string[],
          _out: unknown,
          _err: unknown,
          _in: unknown,
          _tty: boolean,
          cb: (s: V1Status) => void,
        ) => connect(cb),
      }) as unknown as Pick<Exec, 'exec'>;
    const socket = () => ({ close: () => {}, addEventListener: () => {} });
    const signal = () => new AbortController().signal;

    it('an upgrade that never completes is an ETIMEDOUT (the API server failing, counted by the breaker), not the command timing out', async () => {
      const error = await runPodExec(
        execWith(() => new Promise(() => {})),
        target,
        ['true'],
        5_000,
        signal(),
        50,
      ).catch((e: unknown) => e);
      expect(error).not.toBeInstanceOf(ExecTimeoutError);
      expect((error as Error).message).toMatch(/no WebSocket upgrade within 50 ms/);
      expect(isTransient(error)).toBe(true);
    });

    it("the command's timeout starts once the socket is open", async () => {
      const slowOpen: Connect = (status) =>
        new Promise((resolve) => {
          setTimeout(() => {
            resolve(socket());
            setTimeout(() => status({ status: 'Success' }), 30);
          }, 80);
        });
      await expect(runPodExec(execWith(slowOpen), target, ['true'], 60, signal(), 1_000)).resolves.toMatchObject({ exitCode: 0 });
      const neverEnds: Connect = () => Promise.resolve(socket());
      await expect(runPodExec(execWith(neverEnds), target, ['sleep', '9'], 40, signal(), 1_000)).rejects.toBeInstanceOf(
        ExecTimeoutError,
      );
    });

    it('a 404 on the upgrade is a pod that is gone; other answers are errors the breaker ignores; a refused socket counts', async () => {
      const refused = (message: string, code?: string) => () =>
        Promise.reject({ error: Object.assign(new Error(message), code ? { code } : {}) });
      await expect(
        runPodExec(execWith(refused('Unexpected server response: 404')), target, ['true'], 1_000, signal()),
      ).rejects.toBeInstanceOf(ContainerNotRunningError);
      const kubeletError = await runPodExec(
        execWith(refused('Unexpected server response: 500')),
        target,
        ['true'],
        1_000,
        signal(),
      ).catch((e: unknown) => e);
      expect((kubeletError as Error).message).toBe('exec in pod blytz-ada-1: Unexpected server response: 500');
      expect(isTransient(kubeletError)).toBe(false);
      const down = await runPodExec(
        execWith(refused('connect ECONNREFUSED 10.0.0.1:443', 'ECONNREFUSED')),
        target,
        ['true'],
        1_000,
        signal(),
      ).catch((e: unknown) => e);
      expect(isTransient(down)).toBe(true);
    });
  });
});
