import { randomBytes } from 'node:crypto';
import { createReadStream, existsSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
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
import { renderMarkerPath } from '../../src/workspace/file-workspaces.js';
import { BackupRecords } from '../../src/store/backup-records.js';
import { CustomerStore } from '../../src/store/customer-store.js';
import { FakeKubeApi } from '../support/fake-kube-api.js';
import { claimPod } from '../support/fake-pod.js';
import { desiredCustomer, stubHealth, testSecretBox, uniqueName } from '../support/fixtures.js';
import { createTestDatabase, type TestDatabase } from '../support/postgres.js';

/**
 * Backups on the Kubernetes runtime: the state is on the customer's claim, reached through
 * pods/exec of the real client-node against the in-process API server. The fake's pod runs the
 * commands the way the assistant container would, on a folder standing in for the claim: `tar`
 * (the state streamed out) and `node -e` (SQLite's online backup API, run by the pod's Node).
 * The archive, records and store are the same as on Docker.
 */

const NS = 'customers';
const MOUNT = '/home/node/.openclaw';
const key = randomBytes(32);

describe('backups of a customer on Kubernetes (fake API server, pods/exec)', () => {
  let api: FakeKubeApi;
  let runtime: KubernetesRuntime;
  let root: string;
  let claim: string;
  let db: TestDatabase;
  const customer = uniqueName('kb');

  beforeAll(async () => {
    api = new FakeKubeApi();
    api.simulateDeployments = true;
    await api.start();
    runtime = new KubernetesRuntime(unguarded, { kubeConfig: api.kubeConfig(), namespace: NS });
    root = await mkdtemp(join(tmpdir(), 'blytz-k8s-backup-'));
    claim = join(root, 'claim');
    api.execHandler = claimPod(claim, MOUNT);
    await mkdir(join(claim, 'workspace', 'memory'), { recursive: true });
    await mkdir(join(claim, 'state'), { recursive: true });
    await mkdir(join(claim, 'tmp'), { recursive: true });
    await writeFile(
      join(claim, 'openclaw.json'),
      JSON.stringify({ gateway: { auth: { token: 'gw-secret' } }, meta: { owner: 'tg:42' } }),
    );
    await writeFile(join(claim, 'workspace', 'memory', 'notes.md'), 'the bakery opens at 7\n');
    await writeFile(join(claim, 'tmp', 'gateway.lock'), 'x');
    // The render marker the runtime reads its rendered files by (as FileWorkspaces leaves it,
    // beside the customer folders, out of the assistant's reach).
    await mkdir(dirname(renderMarkerPath(claim)), { recursive: true });
    await writeFile(renderMarkerPath(claim), JSON.stringify({ contentHash: 'x', template: 't', files: ['openclaw.json'] }));
    const live = new DatabaseSync(join(claim, 'state', 'openclaw.sqlite'));
    live.exec("PRAGMA journal_mode = WAL; CREATE TABLE pairings (user TEXT); INSERT INTO pairings VALUES ('telegram:4242')");
    live.close();

    const id = await runtime.create({
      customer,
      image: 'ghcr.io/openclaw/openclaw:2026.9.6',
      containerPort: 18789,
      hostPort: 30001,
      user: '1000:1000',
      mounts: [{ hostPath: claim, containerPath: MOUNT, readOnly: false }],
      env: {},
      resources: PLANS.personal,
      ...stubHealth(),
      specHash: 'h1',
    });
    await runtime.start(id);
    db = await createTestDatabase();
  });
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
    const copy = new DatabaseSync(join(target, 'state', 'openclaw.sqlite'), { readOnly: true });
    expect(copy.prepare('PRAGMA integrity_check').get()).toEqual({ integrity_check: 'ok' });
    expect(copy.prepare('SELECT user FROM pairings').all()).toEqual([{ user: 'telegram:4242' }]);
    copy.close();
  });

  it('the backup controller records it like any other; a restore into it is refused, not half done', async () => {
    const store = new CustomerStore(db.handle, testSecretBox());
    await store.apply(desiredCustomer(customer));
    const records = new BackupRecords(db.handle);
    const storage = new LocalArchiveStorage(join(root, 'store'));
    const reconciler = new BackupReconciler({
      records,
      store,
      storage,
      state: new PodStateSource({ runtime, workDir: join(root, 'work'), mountPath: MOUNT }),
      runtime,
      keys: { current: key, all: [key] },
      workDir: join(root, 'work'),
      policyOverrides: { scheduleSeconds: 0 },
      metrics: new Metrics({ defaultMetrics: false }),
      logger: createLogger({ level: 'silent' }),
      wakeCustomer: () => {},
    });
    const asked = await records.request(customer, 'manual');
    await reconciler.reconcile(customer, new AbortController().signal);
    const done = await records.get(asked.id);
    expect(done).toMatchObject({ state: 'succeeded', runtime: 'kubernetes' });
    const restored = join(root, 'from-store');
    await extractArchive({
      input: await storage.get(done!.location!),
      keys: [key],
      expectContext: archiveContext(done!),
      targetDir: restored,
      sha256: done!.sha256 ?? undefined,
    });
    expect(readFileSync(join(restored, 'workspace', 'memory', 'notes.md'), 'utf8')).toBe('the bakery opens at 7\n');

    const restore = await records.requestRestore(asked.id, customer);
    await reconciler.reconcile(customer, new AbortController().signal);
    expect(await records.getRestore(restore.id)).toMatchObject({
      step: 'failed',
      message: expect.stringMatching(/not supported yet/),
    });
    expect(readFileSync(join(claim, 'workspace', 'memory', 'notes.md'), 'utf8')).toBe('the bakery opens at 7\n');
  });
});
