import { randomBytes } from 'node:crypto';
import { createReadStream, existsSync, readdirSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { Writable } from 'node:stream';
import { finished } from 'node:stream/promises';
import type { KubeConfig } from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { extractArchive } from '../../src/backup/archive.js';
import { archiveContext, BackupReconciler } from '../../src/backup/backup-reconciler.js';
import { LocalArchiveStorage } from '../../src/backup/local-storage.js';
import { PodStateSource } from '../../src/backup/pod-state.js';
import { PLANS } from '../../src/domain/customer.js';
import { Metrics } from '../../src/observability/metrics.js';
import { createLogger } from '../../src/observability/logger.js';
import { unguarded } from '../../src/resilience/guard.js';
import { KubernetesRuntime } from '../../src/runtime/kubernetes/kubernetes-runtime.js';
import { objectName } from '../../src/kube-api/customer-object-meta.js';
import { KubernetesRestorePods, restorePodName } from '../../src/runtime/kubernetes/restore-pod.js';
import { renderMarkerPath } from '../../src/workspace/file-workspaces.js';
import { BackupRecords } from '../../src/store/backup-records.js';
import { CustomerStore } from '../../src/store/customer-store.js';
import { FakeKubeApi, type LooseObject } from '../support/fake-kube-api.js';
import { claimPod } from '../support/fake-pod.js';
import { desiredCustomer, stubHealth, testSecretBox, uniqueName } from '../support/fixtures.js';
import { createTestDatabase, type TestDatabase } from '../support/postgres.js';
import { waitFor } from '../support/wait-for.js';

/**
 * Backups on the Kubernetes runtime: the state is on the customer's claim, reached through
 * pods/exec of the real client-node against the in-process API server. The fake's pod runs the
 * commands the way the assistant container would, on a folder standing in for the claim: `tar`
 * (the state streamed out) and `node -e` (SQLite's online backup API, run by the pod's Node).
 * The archive, records and store are the same as on Docker.
 *
 * Restores write the claim through a restore pod (`sh` running `tar -x` and `mv` in it, on the
 * same folder), with the kit's RBAC enforced on every call the controller makes.
 */

const NS = 'customers';
const MOUNT = '/home/node/.openclaw';
const key = randomBytes(32);

describe('backups of a customer on Kubernetes (fake API server, pods/exec)', () => {
  let api: FakeKubeApi;
  let kube: KubeConfig;
  let runtime: KubernetesRuntime;
  let addClaim: (name: string, folder: string) => void;
  /** Each command run in a restore pod: the pod, and how many pods of the assistant there were meanwhile. */
  const restorePodExecs: Array<{ pod: LooseObject; assistantPods: number }> = [];
  let root: string;
  let claim: string;
  let db: TestDatabase;
  const customer = uniqueName('kb');

  beforeAll(async () => {
    api = new FakeKubeApi();
    api.simulateDeployments = true;
    await api.start();
    kube = api.kitControllerConfig(NS);
    runtime = new KubernetesRuntime(unguarded, { kubeConfig: kube, namespace: NS });
    root = await mkdtemp(join(tmpdir(), 'blytz-k8s-backup-'));
    claim = join(root, 'claim');
    // Each customer's pods (the assistant's and its restore pod) on that customer's claim.
    const claims = new Map<string, string>([[customer, claim]]);
    api.execHandler = (call) => {
      const owner = [...claims.keys()].find(
        (name) => call.pod === restorePodName(name) || call.pod.startsWith(`${objectName(name)}-`),
      );
      if (owner !== undefined && call.pod === restorePodName(owner)) {
        const assistantPods = api.objects('pods', NS).filter((p) => p['metadata']['labels']?.['cloud.blytz.customer'] === owner);
        restorePodExecs.push({ pod: api.object('pods', NS, call.pod) as LooseObject, assistantPods: assistantPods.length });
      }
      return claimPod(claims.get(owner ?? '') ?? join(root, 'nowhere'), MOUNT)(call);
    };
    addClaim = (name, folder) => claims.set(name, folder);
    await mkdir(join(claim, 'workspace', 'memory'), { recursive: true });
    await mkdir(join(claim, 'state'), { recursive: true });
    await mkdir(join(claim, 'tmp'), { recursive: true });
    await writeFile(
      join(claim, 'openclaw.json'),
      JSON.stringify({ gateway: { auth: { token: 'gw-secret' } }, meta: { owner: 'tg:42' } }),
    );
    await writeFile(join(claim, 'workspace', 'memory', 'notes.md'), 'the bakery opens at 7\n');
    await writeFile(join(claim, 'tmp', 'gateway.lock'), 'x');
    // The file system's own folder at the root of a volume: not the customer's state.
    await mkdir(join(claim, 'lost+found'));
    await writeFile(join(claim, 'lost+found', '#1234'), 'fsck found this');
    const live = new DatabaseSync(join(claim, 'state', 'openclaw.sqlite'));
    live.exec("PRAGMA journal_mode = WAL; CREATE TABLE pairings (user TEXT); INSERT INTO pairings VALUES ('telegram:4242')");
    live.close();
    await runtime.start(await createCustomer(customer, claim));
    db = await createTestDatabase();
  });

  /** The customer's Deployment, Service, claim (at 0 replicas), its rendered files those of `folder`. */
  async function createCustomer(name: string, folder: string): Promise<string> {
    // The render marker the runtime reads its rendered files by (as FileWorkspaces leaves it,
    // beside the customer folders, out of the assistant's reach).
    await mkdir(dirname(renderMarkerPath(folder)), { recursive: true });
    await writeFile(renderMarkerPath(folder), JSON.stringify({ contentHash: 'x', template: 't', files: ['openclaw.json'] }));
    if (!existsSync(join(folder, 'openclaw.json'))) {
      await mkdir(folder, { recursive: true });
      await writeFile(join(folder, 'openclaw.json'), '{}');
    }
    return runtime.create({
      customer: name,
      image: 'ghcr.io/openclaw/openclaw:2026.9.6',
      containerPort: 18789,
      hostPort: 30001,
      user: '1000:1000',
      mounts: [{ hostPath: folder, containerPath: MOUNT, readOnly: false }],
      env: {},
      resources: PLANS.personal,
      ...stubHealth(),
      specHash: 'h1',
    });
  }

  afterAll(async () => {
    await api?.stop();
    await db?.drop();
    await rm(root, { recursive: true, force: true });
  });

  it('streams a consistent, redacted archive of the claim out of the running pod', async () => {
    const source = new PodStateSource({ runtime, workDir: join(root, 'work'), mountPath: MOUNT });
    expect(await source.exists(customer)).toBe(true);
    const out = join(root, 'archive.blytz');
    const written = await source.archive(customer, { key, context: 'ctx', outFile: out, meta: {} });
    expect(written.manifest.sqlite).toEqual(['state/openclaw.sqlite']);
    // Through the pod: a tar of the mount, then the database through the pod's Node.
    expect(api.execCalls.map((c) => c.command[0])).toEqual(['tar', 'node']);

    const target = join(root, 'restored');
    await extractArchive({ input: createReadStream(out), keys: [key], expectContext: 'ctx', targetDir: target });
    expect(readFileSync(join(target, 'workspace', 'memory', 'notes.md'), 'utf8')).toBe('the bakery opens at 7\n');
    const config = readFileSync(join(target, 'openclaw.json'), 'utf8');
    expect(config).not.toContain('gw-secret');
    expect(JSON.parse(config)).toMatchObject({ meta: { owner: 'tg:42' } });
    expect(existsSync(join(target, 'tmp'))).toBe(false);
    expect(existsSync(join(target, 'lost+found'))).toBe(false);
    const copy = new DatabaseSync(join(target, 'state', 'openclaw.sqlite'), { readOnly: true });
    expect(copy.prepare('PRAGMA integrity_check').get()).toEqual({ integrity_check: 'ok' });
    expect(copy.prepare('SELECT user FROM pairings').all()).toEqual([{ user: 'telegram:4242' }]);
    copy.close();
  });

  it('a pod that fails its tar, or streams garbage, fails the backup with the reason (and nothing is left unhandled)', async () => {
    const source = new PodStateSource({ runtime, workDir: join(root, 'work'), mountPath: MOUNT });
    const handler = api.execHandler;
    try {
      // The pod writes the stream: a hostile one can send anything, then exit as it likes.
      api.execHandler = () => ({ exitCode: 1, stdout: 'not a tar archive, and not 512 bytes long', stderr: 'tar: refused\n' });
      await expect(source.archive(customer, { key, context: 'ctx', outFile: join(root, 'failed-1.blytz'), meta: {} })).rejects.toThrow(
        'tar in the pod exited with 1: tar: refused',
      );
      api.execHandler = () => ({ exitCode: 0, stdout: 'x'.repeat(2048), stderr: '' });
      await expect(source.archive(customer, { key, context: 'ctx', outFile: join(root, 'failed-2.blytz'), meta: {} })).rejects.toThrow(
        /^TAR_[A-Z_]+: /,
      );
    } finally {
      api.execHandler = handler;
    }
    // The controller's work folder keeps nothing of either attempt.
    expect(readdirSync(join(root, 'work'))).toEqual([]);
  });

  it("a pod streaming faster than the controller writes is held back, not buffered in the controller's memory", async () => {
    const id = (await runtime.listFor(customer)).find((c) => c.state === 'running')?.id;
    if (!id) throw new Error('the assistant is not running');
    const sent = 64 * 1024 * 1024;
    const handler = api.execHandler;
    let received = 0;
    let mostHeld = 0;
    // A consumer slower than the network (a slow disk, a tar of many tiny files to unpack): each
    // 1 MiB frame takes it 10 ms. Without back-pressure the pod's 64 MiB would wait in memory.
    const slow = new Writable({
      highWaterMark: 64 * 1024,
      write(chunk: Buffer, _encoding, callback) {
        received += chunk.length;
        mostHeld = Math.max(mostHeld, slow.writableLength);
        setTimeout(callback, 10);
      },
    });
    try {
      api.execHandler = () => ({ exitCode: 0, stdout: Buffer.alloc(sent, 7) });
      const result = await runtime.execStream(id, ['tar', '-c', '-f', '-', '.'], slow);
      expect(result.exitCode).toBe(0);
      await finished(slow);
    } finally {
      api.execHandler = handler;
    }
    expect(received).toBe(sent);
    // A frame or two taken from the socket after it was paused; never the whole stream.
    expect(mostHeld).toBeLessThan(8 * 1024 * 1024);
  });

  describe('restores, through a restore pod on the stopped customer’s claim', () => {
    let store: CustomerStore;
    let records: BackupRecords;
    let storage: LocalArchiveStorage;
    let source: PodStateSource;
    let reconciler: BackupReconciler;
    let backupId: number;
    const work = () => join(root, 'work');

    beforeAll(async () => {
      store = new CustomerStore(db.handle, testSecretBox());
      await store.apply(desiredCustomer(customer));
      records = new BackupRecords(db.handle);
      storage = new LocalArchiveStorage(join(root, 'store'));
      const restorePods = new KubernetesRestorePods(unguarded, { kubeConfig: kube, namespace: NS, waitMs: 60_000, lookMs: 20 });
      source = new PodStateSource({ runtime, workDir: work(), mountPath: MOUNT, restorePods });
      reconciler = new BackupReconciler({
        records,
        store,
        storage,
        state: source,
        runtime,
        keys: { current: key, all: [key] },
        workDir: work(),
        policyOverrides: { scheduleSeconds: 0 },
        metrics: new Metrics({ defaultMetrics: false }),
        logger: createLogger({ level: 'silent' }),
        wakeCustomer: () => {},
      });
      const asked = await records.request(customer, 'manual');
      await reconciler.reconcile(customer, new AbortController().signal);
      expect(await records.get(asked.id)).toMatchObject({ state: 'succeeded', runtime: 'kubernetes' });
      backupId = asked.id;
    });

    /** The backup controller's passes until the restore is done; the customer controller's part played here. */
    async function restore(into: string): Promise<Awaited<ReturnType<BackupRecords['getRestore']>>> {
      const asked = await records.requestRestore(backupId, into);
      await waitFor(async () => {
        await reconciler.reconcile(into, new AbortController().signal);
        const now = await records.getRestore(asked.id);
        if (now?.step === 'starting') {
          // What the customer controller does once the hold is gone: start it; Ready once it is.
          await runtime.start(objectName(into));
          const serving = (await runtime.listFor(into)).some((c) => c.state === 'running' && c.health === 'healthy');
          if (serving) await store.updateStatus(into, { phase: 'Ready' });
        }
        return now?.step === 'succeeded' || now?.step === 'failed' ? now : undefined;
      }, 60_000);
      return records.getRestore(asked.id);
    }

    /** What is on a claim, as relative paths with the content of each file. */
    async function contents(folder: string): Promise<Record<string, string>> {
      const out: Record<string, string> = {};
      const visit = async (rel: string) => {
        for (const entry of await readdir(join(folder, rel), { withFileTypes: true })) {
          const path = rel === '' ? entry.name : `${rel}/${entry.name}`;
          if (entry.isDirectory()) await visit(path);
          else out[path] = entry.name.endsWith('.sqlite') ? '(sqlite)' : await readFile(join(folder, path), 'utf8');
        }
      };
      await visit('');
      return out;
    }

    /** What the pod's own Node reads from the claim: the assistant serves on the restored state. */
    async function readThroughPod(name: string, rel: string): Promise<string> {
      const result = await runtime.exec(objectName(name), [
        'node',
        '-e',
        'process.stdout.write(require("fs").readFileSync(process.argv[1], "utf8"))',
        `${MOUNT}/${rel}`,
      ]);
      expect(result.exitCode).toBe(0);
      return result.stdout;
    }

    function restorePodOf(name: string): unknown {
      return api.object('pods', NS, restorePodName(name));
    }

    it('into the same customer: stopped, the state replaced whole, started again, the restore pod gone', async () => {
      // Written after the backup: changed, added, and the gateway's database gone.
      await writeFile(join(claim, 'workspace', 'memory', 'notes.md'), 'the bakery closed\n');
      await writeFile(join(claim, 'workspace', 'memory', 'later.md'), 'not in the backup\n');
      await rm(join(claim, 'state'), { recursive: true });

      const done = await restore(customer);
      expect(done).toMatchObject({ step: 'succeeded', message: 'restored' });
      const now = await contents(claim);
      expect(now['workspace/memory/notes.md']).toBe('the bakery opens at 7\n');
      expect(now['workspace/memory/later.md']).toBeUndefined();
      expect(now['state/openclaw.sqlite']).toBe('(sqlite)');
      expect(now['lost+found/#1234']).toBe('fsck found this'); // left where it was
      // Redacted in the archive; the seed merges the controller's fields when the pod starts.
      expect(JSON.parse(now['openclaw.json'] ?? '{}')).toMatchObject({ meta: { owner: 'tg:42' } });
      expect(now['openclaw.json']).not.toContain('gw-secret');
      // Nothing of the restore is left: no folder of its own on the claim or beside the controller, no pod.
      expect(Object.keys(now).filter((path) => path.startsWith('.blytz-'))).toEqual([]);
      expect((await readdir(claim)).filter((name) => name.startsWith('.blytz-'))).toEqual([]);
      expect((await readdir(work()).catch(() => [])).filter((name) => name.startsWith('restore-'))).toEqual([]);
      expect(restorePodOf(customer)).toBeUndefined();
      const copy = new DatabaseSync(join(claim, 'state', 'openclaw.sqlite'), { readOnly: true });
      expect(copy.prepare('SELECT user FROM pairings').all()).toEqual([{ user: 'telegram:4242' }]);
      copy.close();
      // The assistant's new pod runs on the restored claim.
      expect(await readThroughPod(customer, 'workspace/memory/notes.md')).toBe('the bakery opens at 7\n');
      // Unpacked, then swapped, each while no pod of the assistant was left (the claim is ReadWriteOnce).
      const restorePodCalls = api.execCalls.filter((c) => c.pod === restorePodName(customer));
      expect(restorePodCalls.map((c) => c.command[0])).toEqual(['sh', 'sh']);
      expect(restorePodExecs.map((e) => e.assistantPods)).toEqual([0, 0]);
      // The assistant's image and user, its claim, no API token, nothing else to reach.
      const assistant = api.object('deployments', NS, objectName(customer)) as LooseObject;
      const pod = restorePodExecs[0]?.pod;
      const template = assistant['spec']['template']['spec'];
      expect(pod?.['metadata']['labels']).toMatchObject({
        'cloud.blytz.managed-by': 'blytz',
        'cloud.blytz.restore-of': customer,
      });
      expect(pod?.['metadata']['labels']['cloud.blytz.customer']).toBeUndefined();
      expect(pod?.['spec']).toMatchObject({
        automountServiceAccountToken: false,
        restartPolicy: 'Never',
        securityContext: template['securityContext'],
        volumes: [{ name: 'workspace', persistentVolumeClaim: { claimName: objectName(customer) } }],
      });
      expect(pod?.['spec']['containers'][0]).toMatchObject({
        image: template['containers'][0]['image'],
        securityContext: { ...template['containers'][0]['securityContext'], readOnlyRootFilesystem: true },
        volumeMounts: [{ name: 'workspace', mountPath: MOUNT }],
      });
    });

    it('into a new customer: its own claim gets the backed-up state', async () => {
      const other = uniqueName('kn');
      const otherClaim = join(root, 'claim-new');
      addClaim(other, otherClaim);
      await mkdir(join(otherClaim, 'workspace'), { recursive: true });
      await writeFile(join(otherClaim, 'workspace', 'AGENTS.md'), 'a fresh workspace\n');
      await store.apply(desiredCustomer(other));
      await runtime.start(await createCustomer(other, otherClaim));

      expect(await restore(other)).toMatchObject({ step: 'succeeded' });
      const now = await contents(otherClaim);
      expect(now['workspace/memory/notes.md']).toBe('the bakery opens at 7\n');
      expect(now['workspace/AGENTS.md']).toBeUndefined();
      expect(restorePodOf(other)).toBeUndefined();
      expect(await readThroughPod(other, 'workspace/memory/notes.md')).toBe('the bakery opens at 7\n');
      // The original customer's claim was not touched.
      expect(readFileSync(join(claim, 'workspace', 'memory', 'notes.md'), 'utf8')).toBe('the bakery opens at 7\n');
    });

    it('a tampered archive is refused before anything reaches the claim; the customer is left as it was', async () => {
      await writeFile(join(claim, 'workspace', 'memory', 'notes.md'), 'written after the restore\n');
      const before = await contents(claim);
      const backup = await records.get(backupId);
      const stored = join(root, 'store', ...backup!.location!.split('/'));
      const original = await readFile(stored);
      const tampered = Buffer.from(original);
      const at = tampered.length - 100;
      tampered[at] = (tampered[at] ?? 0) ^ 0xff;
      await writeFile(stored, tampered);
      try {
        const done = await restore(customer);
        expect(done).toMatchObject({ step: 'failed' });
        expect(done?.message).toMatch(/checksum|authenticat|integrity/i);
      } finally {
        await writeFile(stored, original);
      }
      expect(await contents(claim)).toEqual(before);
      expect(restorePodOf(customer)).toBeUndefined();
      expect((await readdir(work()).catch(() => [])).filter((name) => name.startsWith('restore-'))).toEqual([]);
    });

    describe('a swap a crash interrupted is finished by the next one', () => {
      const stageFor = async (id: number) => {
        await runtime.stop(objectName(customer));
        const backup = await records.get(backupId);
        await source.stage(id, customer, await storage.get(backup!.location!), {
          keys: [key],
          expectContext: archiveContext(backup!),
          sha256: backup!.sha256 ?? undefined,
        });
        expect(existsSync(join(claim, `.blytz-staged-${id}`))).toBe(true);
      };
      const restored = async () => {
        const now = await contents(claim);
        expect(now['workspace/memory/notes.md']).toBe('the bakery opens at 7\n');
        expect(now['workspace/memory/later.md']).toBeUndefined();
        expect(Object.keys(now).filter((path) => path.startsWith('.blytz-'))).toEqual([]);
        expect(restorePodOf(customer)).toBeUndefined();
      };

      it('half the old state moved aside', async () => {
        await writeFile(join(claim, 'workspace', 'memory', 'later.md'), 'not in the backup\n');
        await stageFor(901);
        // The crash: `workspace` already parked, the rest of the old state still in place.
        await mkdir(join(claim, '.blytz-parking-901'));
        await rename(join(claim, 'workspace'), join(claim, '.blytz-parking-901', 'workspace'));
        await source.swap(901, customer);
        await restored();
        // Run again (the step was not recorded before the crash): nothing left to do, done.
        await source.swap(901, customer);
        await restored();
      });

      it('the old state aside, half the restored one moved in', async () => {
        await writeFile(join(claim, 'workspace', 'memory', 'later.md'), 'not in the backup\n');
        await stageFor(902);
        await mkdir(join(claim, '.blytz-parking-902'));
        for (const name of await readdir(claim))
          if (!name.startsWith('.blytz-')) await rename(join(claim, name), join(claim, '.blytz-parking-902', name));
        await rename(join(claim, '.blytz-parking-902'), join(claim, '.blytz-before-902'));
        await rename(join(claim, '.blytz-staged-902', 'workspace'), join(claim, 'workspace'));
        await source.swap(902, customer);
        await restored();
        await source.discard(902, customer);
        await restored();
      });
    });
  });
});
