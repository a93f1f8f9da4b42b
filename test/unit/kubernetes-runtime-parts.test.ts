import { KubeConfig, type Exec, type V1Pod, type V1Status } from '@kubernetes/client-node';
import { Readable } from 'node:stream';
import { describe, expect, it, vi } from 'vitest';
import { PLANS } from '../../src/domain/customer.js';
import {
  deploymentManifest,
  fileKeys,
  OWNED_CONFIG_ANNOTATION,
  secretManifest,
  serviceManifest,
} from '../../src/runtime/kubernetes/manifests.js';
import { OWNED_PATHS } from '../../src/workspace/openclaw-config.js';
import { objectName, serviceDial } from '../../src/kube-api/customer-object-meta.js';
import { observeDeployment } from '../../src/runtime/kubernetes/observe.js';
import { exitCodeOf, pickExecPod, runPodExec } from '../../src/runtime/kubernetes/pod-exec.js';
import { ContainerNotRunningError, ExecTimeoutError } from '../../src/runtime/exec-output.js';
import { isTransient } from '../../src/resilience/transient.js';
import { unguarded } from '../../src/resilience/guard.js';
import { KubernetesRuntime } from '../../src/runtime/kubernetes/kubernetes-runtime.js';
import type { ContainerSpec } from '../../src/runtime/runtime.js';
import { stubHealth } from '../support/fixtures.js';
import { waitFor } from '../support/wait-for.js';

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
    expect(main?.env).toEqual([{ name: 'A', value: 'b' }]);
    expect(d.spec?.template.metadata?.labels?.['cloud.blytz.spec-hash']).toBe('abc');
    // Nothing outside the workspace volume and the template's tmpfs folders is writable.
    for (const c of [...(pod?.containers ?? []), ...(pod?.initContainers ?? [])])
      expect(c.securityContext?.readOnlyRootFilesystem, c.name).toBe(true);
    const twoTmpfs = deploymentManifest({ ...spec, tmpfs: ['/tmp', '/home/node/.cache'] }, files, options).spec?.template.spec;
    expect(twoTmpfs?.volumes?.filter((v) => v.emptyDir)).toEqual([
      { name: 'tmpfs-0', emptyDir: { medium: 'Memory', sizeLimit: '256Mi' } },
      { name: 'tmpfs-1', emptyDir: { medium: 'Memory', sizeLimit: '256Mi' } },
    ]);
    expect(twoTmpfs?.containers[0]?.volumeMounts?.filter((m) => m.name.startsWith('tmpfs-')).map((m) => m.mountPath)).toEqual([
      '/tmp',
      '/home/node/.cache',
    ]);
    expect(main?.volumeMounts?.filter((m) => m.name.startsWith('tmpfs-')).map((m) => m.mountPath)).toEqual(spec.tmpfs);
    expect(() => deploymentManifest({ ...spec, user: '0:0' }, files, options)).toThrow(/non-root/);
  });

  it('probes are exec probes that check the body the template declares; values are arguments, never program or shell text', () => {
    const hostile = {
      ...spec,
      probes: {
        startup: { path: '/startupz', expect: { ok: true, status: 'started' } },
        liveness: { path: "/healthz';process.exit(0);'", expect: { status: '$(reboot)' } },
        readiness: { path: '/readyz', expect: { ready: true } },
      },
      startTimeoutSeconds: 90,
    };
    const main = deploymentManifest(hostile, files, options).spec?.template.spec?.containers[0];
    for (const probe of [main?.readinessProbe, main?.livenessProbe, main?.startupProbe]) {
      expect(probe?.httpGet).toBeUndefined();
      const [node, flag, program, separator] = probe?.exec?.command ?? [];
      expect([node, flag, separator]).toEqual(['node', '-e', '--']);
      expect(program).not.toMatch(/healthz|reboot|startupz|readyz|18789/);
    }
    expect(main?.livenessProbe?.exec?.command?.slice(4)).toEqual([
      "/healthz';process.exit(0);'",
      '{"status":"$(reboot)"}',
      '18789',
      '192.0.2.1',
    ]);
    expect(main?.readinessProbe?.exec?.command?.slice(4, 6)).toEqual(['/readyz', '{"ready":true}']);
    // The start timeout (90 s) in startup probe periods (5 s) before liveness counts.
    expect(main?.startupProbe).toMatchObject({ periodSeconds: 5, failureThreshold: 18 });
    expect(main?.startupProbe?.exec?.command?.slice(4, 6)).toEqual(['/startupz', '{"ok":true,"status":"started"}']);
  });

  it('the seed links rendered files and merges the owned fields of openclaw.json (OWNED_PATHS, passed as data); the pod template carries their hash', () => {
    const owned = { gateway: { auth: { mode: 'token', token: 'secret-1' } } };
    const withConfig = [
      { path: 'workspace/AGENTS.md', content: Buffer.from('a') },
      { path: 'openclaw.json', content: Buffer.from(JSON.stringify(owned)) },
    ];
    const d = deploymentManifest(spec, withConfig, options);
    const seed = d.spec?.template.spec?.initContainers?.[0]?.command ?? [];
    expect(seed.slice(0, 2)).toEqual(['node', '-e']);
    expect(seed[2]).not.toMatch(/AGENTS|openclaw\.json|gateway|secret-1/);
    const keyOf = (path: string) => fileKeys(withConfig).find((k) => k.path === path)?.key;
    expect(JSON.parse(seed[4] ?? '')).toEqual({
      workspace: '/home/node/.openclaw',
      rendered: '/blytz/rendered',
      links: [{ key: keyOf('workspace/AGENTS.md'), path: 'workspace/AGENTS.md' }],
      config: { key: keyOf('openclaw.json'), path: 'openclaw.json' },
      ownedPaths: OWNED_PATHS,
    });
    // No secret in the pod spec: the token reaches the pod only through the Secret.
    expect(JSON.stringify(d)).not.toContain('secret-1');
    const hash = d.spec?.template.metadata?.annotations?.[OWNED_CONFIG_ANNOTATION];
    expect(hash).toMatch(/^[0-9a-f]{16}$/);
    // The same fields in another order or layout: the same hash (no restart); another token: another.
    const reordered = [withConfig[0]!, { path: 'openclaw.json', content: Buffer.from(JSON.stringify(owned, null, 2)) }];
    expect(deploymentManifest(spec, reordered, options).spec?.template.metadata?.annotations?.[OWNED_CONFIG_ANNOTATION]).toBe(
      hash,
    );
    const rotated = [
      withConfig[0]!,
      {
        path: 'openclaw.json',
        content: Buffer.from(JSON.stringify({ gateway: { auth: { mode: 'token', token: 'secret-2' } } })),
      },
    ];
    expect(deploymentManifest(spec, rotated, options).spec?.template.metadata?.annotations?.[OWNED_CONFIG_ANNOTATION]).not.toBe(
      hash,
    );
  });

  it('the Secret holds the files by key; the Service maps the reserved port to the container port', () => {
    const s = secretManifest('ada', files, options);
    const agents = fileKeys(files).find((k) => k.path === 'workspace/AGENTS.md')?.key ?? '';
    expect(Object.keys(s.data ?? {}).sort()).toEqual(
      fileKeys(files)
        .map((k) => k.key)
        .sort(),
    );
    expect(Buffer.from(s.data?.[agents] ?? '', 'base64').toString()).toBe('a');
    expect(() => secretManifest('ada', [{ path: 'big', content: Buffer.alloc(1024 * 1024) }], options)).toThrow(/1 MiB/);
    expect(serviceManifest(spec, options).spec?.ports).toEqual([
      { name: 'http', protocol: 'TCP', port: 30001, targetPort: 18789 },
    ]);
  });

  it("a file's Secret key depends on its path alone: adding or removing other files never points a running pod's link at another file", () => {
    const keys = (paths: string[]) =>
      new Map(fileKeys(paths.map((path) => ({ path, content: Buffer.from(path) }))).map((k) => [k.path, k.key]));
    const before = keys(['openclaw.json', 'workspace/AGENTS.md', 'workspace/USER.md']);
    // A template that adds a file sorting first, and drops one.
    const after = keys(['a-first.md', 'openclaw.json', 'workspace/USER.md']);
    expect(after.get('openclaw.json')).toBe(before.get('openclaw.json'));
    expect(after.get('workspace/USER.md')).toBe(before.get('workspace/USER.md'));
    expect(new Set(after.values()).size).toBe(3);
    for (const key of [...before.values(), ...after.values()]) expect(key).toMatch(/^[-._a-zA-Z0-9]{1,253}$/);
    // Paths that differ only in characters a key cannot hold still get different keys.
    const close = keys(['a/b.md', 'a.b.md', 'a_b.md']);
    expect(new Set(close.values()).size).toBe(3);
  });

  it("the Deployment carries the customer's own hash, and observing it reads it back (so a plan change is the customer's, not a fleet rollout waiting on a backup)", () => {
    const d = deploymentManifest({ ...spec, ownHash: 'own-1' }, files, options);
    expect(observeDeployment(d).ownHash).toBe('own-1');
    expect(observeDeployment(deploymentManifest(spec, files, options)).ownHash).toBeUndefined();
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
      // Fake timers: the 80 + 30 ms against 60 ms below is decided by the clock the test moves,
      // not by how busy the machine is.
      vi.useFakeTimers();
      try {
        const slowOpen: Connect = (status) =>
          new Promise((resolve) => {
            setTimeout(() => {
              resolve(socket());
              setTimeout(() => status({ status: 'Success' }), 30);
            }, 80);
          });
        // Opened at 80 ms, ended at 110 ms: past 60 ms from the call, within 60 ms of the open.
        const opened = runPodExec(execWith(slowOpen), target, ['true'], 60, signal(), 1_000);
        await vi.runAllTimersAsync();
        await expect(opened).resolves.toMatchObject({ exitCode: 0 });
        const neverEnds: Connect = () => Promise.resolve(socket());
        const endless = runPodExec(execWith(neverEnds), target, ['sleep', '9'], 40, signal(), 1_000);
        const outcome = expect(endless).rejects.toBeInstanceOf(ExecTimeoutError);
        await vi.runAllTimersAsync();
        await outcome;
      } finally {
        vi.useRealTimers();
      }
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

    it('stdin goes no faster than the socket sends: nothing more is read while much waits to be sent', async () => {
      const MiB = 1024 * 1024;
      let produced = 0;
      let looks = 0;
      let buffered = 64 * MiB; // a slow network: much still waiting in the socket
      let sent = 0;
      const stdin = Readable.from(
        (function* () {
          for (let i = 0; i < 100; i++) {
            produced += 1;
            yield Buffer.alloc(MiB);
          }
        })(),
      );
      let finish: (s: V1Status) => void = () => {};
      // As client-node does: every chunk of stdin sent as it comes, the status once it has ended.
      const exec = {
        exec: (...args: unknown[]) => {
          const input = args[6] as Readable;
          finish = args[8] as (s: V1Status) => void;
          input.on('data', (chunk: Buffer) => (sent += chunk.length));
          input.on('end', () => finish({ status: 'Success' }));
          return Promise.resolve({
            close: () => {},
            addEventListener: () => {},
            get bufferedAmount() {
              looks += 1;
              return buffered;
            },
          });
        },
      } as unknown as Pick<Exec, 'exec'>;
      const done = runPodExec(exec, target, ['tar', '-x'], 60_000, signal(), 1_000, undefined, stdin);
      await waitFor(() => looks >= 5);
      expect(sent).toBe(0);
      expect(produced).toBeLessThan(40);
      buffered = 0;
      await expect(done).resolves.toMatchObject({ exitCode: 0 });
      expect(sent).toBe(100 * MiB);
    });

    it('a command that ends before reading all its input stops the pacing and closes the input', async () => {
      const MiB = 1024 * 1024;
      let looks = 0;
      const stdin = Readable.from(
        (function* () {
          for (let i = 0; i < 100; i++) yield Buffer.alloc(MiB);
        })(),
      );
      let finish: (s: V1Status) => void = () => {};
      const exec = {
        exec: (...args: unknown[]) => {
          finish = args[8] as (s: V1Status) => void;
          return Promise.resolve({
            close: () => {},
            addEventListener: () => {},
            get bufferedAmount() {
              looks += 1;
              return 64 * MiB; // a socket that never drains: the pod stopped reading
            },
          });
        },
      } as unknown as Pick<Exec, 'exec'>;
      // The pacing's clock is the test's: it looks every 10 ms while the socket is full.
      vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
      try {
        const done = runPodExec(exec, target, ['tar', '-x'], 60_000, signal(), 1_000, undefined, stdin);
        await vi.advanceTimersByTimeAsync(50);
        expect(looks).toBeGreaterThanOrEqual(3);
        finish({ status: 'Success' }); // the restore pod's command is over, most of the input unsent
        await expect(done).resolves.toMatchObject({ exitCode: 0 });
        await vi.advanceTimersByTimeAsync(0);
        expect(stdin.destroyed).toBe(true);
        // Nothing looks at the socket any more (it kept looking every 10 ms for good before).
        const after = looks;
        await vi.advanceTimersByTimeAsync(10_000);
        expect(looks).toBe(after);
      } finally {
        vi.useRealTimers();
      }
    });
  });
});
