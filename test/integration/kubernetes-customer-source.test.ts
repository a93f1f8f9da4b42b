import { randomBytes } from 'node:crypto';
import { CoreV1Api, CustomObjectsApi, PatchStrategy, setHeaderOptions } from '@kubernetes/client-node';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { CUSTOMER_FINALIZER, customerCrd } from '../../src/kubernetes/crd.js';
import { CustomerResourceSource, type CustomerSourceOptions } from '../../src/kubernetes/customer-source.js';
import { createLogger } from '../../src/observability/logger.js';
import { unguarded } from '../../src/resilience/guard.js';
import { CustomerStore } from '../../src/store/customer-store.js';
import { crdAdmission, FakeKubeApi } from '../support/fake-kube-api.js';
import { TEST_BOT_TOKEN, testSecretBox, uniqueName } from '../support/fixtures.js';
import { createTestDatabase, type TestDatabase } from '../support/postgres.js';
import { waitFor } from '../support/wait-for.js';

const NS = 'blytz';
const logger = createLogger({ level: 'silent' });
const MERGE = setHeaderOptions('Content-Type', PatchStrategy.MergePatch);
type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

describe('Customer custom resources as a source (fake API server, real Postgres)', () => {
  let db: TestDatabase;
  let store: CustomerStore;
  let api: FakeKubeApi;
  let custom: CustomObjectsApi;
  let core: CoreV1Api;
  const sinkLog: { enqueued: string[]; resyncs: string[] } = { enqueued: [], resyncs: [] };
  const sink = { enqueue: (n: string) => sinkLog.enqueued.push(n), resync: (r: string) => sinkLog.resyncs.push(r) };
  const sources: CustomerResourceSource[] = [];

  beforeAll(async () => {
    db = await createTestDatabase();
    store = new CustomerStore(db.handle, testSecretBox());
    api = new FakeKubeApi({ admit: { customers: crdAdmission(customerCrd()) }, bookmarkIntervalMs: 100 });
    await api.start();
    custom = api.kubeConfig().makeApiClient(CustomObjectsApi);
    core = api.kubeConfig().makeApiClient(CoreV1Api);
  });

  afterEach(async () => {
    for (const s of sources.splice(0)) await s.stop();
    api.rejectWatches = undefined;
  });

  afterAll(async () => {
    await api.stop();
    await db.drop();
  });

  async function startSource(options: Partial<CustomerSourceOptions> = {}): Promise<CustomerResourceSource> {
    const source = new CustomerResourceSource({
      kubeConfig: api.kubeConfig(),
      namespace: NS,
      store,
      guard: unguarded,
      logger,
      minBackoffMs: 20,
      maxBackoffMs: 200,
      statusIntervalMs: 100,
      retryIntervalMs: 100,
      ...options,
    });
    sources.push(source);
    await source.start(sink);
    return source;
  }

  const ref = { group: 'blytz.cloud', version: 'v1alpha1', namespace: NS, plural: 'customers' };
  const getCr = (name: string): Promise<Json> => custom.getNamespacedCustomObject({ ...ref, name }) as Promise<Json>;
  const createCr = (name: string, spec: Json): Promise<Json> =>
    custom.createNamespacedCustomObject({
      ...ref,
      body: { apiVersion: 'blytz.cloud/v1alpha1', kind: 'Customer', metadata: { name, labels: { team: 'a' } }, spec },
    }) as Promise<Json>;
  const crGone = async (name: string) => {
    try {
      await getCr(name);
      return false;
    } catch (error) {
      return (error as { code?: number }).code === 404;
    }
  };
  async function createBotSecret(name: string, token = TEST_BOT_TOKEN): Promise<void> {
    await core.createNamespacedSecret({
      namespace: NS,
      body: { metadata: { name }, data: { token: Buffer.from(`${token}\n`).toString('base64') } },
    });
  }

  /** What the reconciler would write once the customer runs. */
  async function reconciled(name: string, phase: 'Ready' | 'Terminated'): Promise<void> {
    const customer = await store.get(name);
    if (!customer) throw new Error('no customer');
    const time = new Date().toISOString();
    await store.updateStatus(name, {
      phase,
      observedGeneration: customer.generation,
      url: `https://${name}.blytz.localhost`,
      conditions: [
        {
          type: 'Ready',
          status: phase === 'Ready' ? 'True' : 'False',
          reason: phase,
          message: '',
          lastTransitionTime: time,
          observedGeneration: customer.generation,
        },
      ],
    });
  }

  it('apply, edit and delete round-trip through the store and back to status; the finalizer holds deletion until teardown', async () => {
    const name = uniqueName('cr');
    await createBotSecret(`${name}-bot`);
    const source = await startSource();
    await createCr(name, {
      email: `${name}@example.com`,
      displayName: 'Ada',
      telegram: { botTokenSecretRef: { name: `${name}-bot`, key: 'token' } },
    });

    // Mirrored into the store with the CRD's defaults and the token from the Secret.
    const stored = await waitFor(() => store.get(name));
    expect(stored.spec).toMatchObject({ email: `${name}@example.com`, displayName: 'Ada', plan: 'personal', state: 'active' });
    expect(stored.spec.telegram).toEqual({ botTokenSet: true, botTokenSecretRef: { name: `${name}-bot`, key: 'token' } });
    expect(stored.labels).toEqual({ team: 'a' });
    expect((await store.readSecrets(name)).telegramBotToken).toBe(TEST_BOT_TOKEN);
    expect((await getCr(name))['metadata']['finalizers']).toEqual([CUSTOMER_FINALIZER]);
    expect(sinkLog.enqueued).toContain(name);

    // Status flows back through the status subresource, with the resource's own generation.
    await reconciled(name, 'Ready');
    expect(await source.syncStatus(name)).toBe(true);
    let cr = await getCr(name);
    expect(cr['status']).toMatchObject({ phase: 'Ready', observedGeneration: 1, url: `https://${name}.blytz.localhost` });
    expect(cr['status']['conditions'][0]).toMatchObject({ type: 'Ready', status: 'True', observedGeneration: 1 });
    expect(await source.syncStatus(name)).toBe(false); // unchanged: no write

    // An edit reaches the store; status keeps the old observedGeneration until the store catches up.
    await custom.patchNamespacedCustomObject({ ...ref, name, body: { spec: { displayName: 'Ada L.', plan: 'pro' } } }, MERGE);
    await waitFor(async () => (await store.get(name))?.spec.displayName === 'Ada L.');
    expect((await store.get(name))?.spec.plan).toBe('pro');
    await source.syncStatus(name);
    cr = await getCr(name);
    expect(cr['metadata']['generation']).toBe(2);
    expect(cr['status']['observedGeneration']).toBe(1);
    await reconciled(name, 'Ready');
    await waitFor(async () => (await getCr(name))['status']['observedGeneration'] === 2); // the periodic pass

    // kubectl delete: the resource stays (finalizer) while the store tears the customer down.
    await custom.deleteNamespacedCustomObject({ ...ref, name });
    await waitFor(async () => (await store.get(name))?.spec.state === 'cancelled');
    await source.syncStatus(name);
    cr = await getCr(name);
    expect(cr['metadata']['deletionTimestamp']).toBeDefined();
    expect(cr['metadata']['finalizers']).toEqual([CUSTOMER_FINALIZER]);

    await reconciled(name, 'Terminated');
    await waitFor(() => crGone(name));
  });

  it('a missing Secret is reported in status and picked up once it exists', async () => {
    const name = uniqueName('cr');
    await startSource();
    await createCr(name, {
      email: `${name}@example.com`,
      displayName: 'Bo',
      telegram: { botTokenSecretRef: { name: `${name}-bot`, key: 'token' } },
    });
    const status = await waitFor(async () => (await getCr(name))['status']);
    expect(status['phase']).toBe('Pending');
    const accepted = (status['conditions'] as Json[]).find((c) => c['type'] === 'SpecAccepted');
    expect(accepted).toMatchObject({ status: 'False', reason: 'SecretNotFound' });
    expect(await store.get(name)).toBeUndefined();

    await createBotSecret(`${name}-bot`);
    await waitFor(() => store.get(name));
    expect((await store.readSecrets(name)).telegramBotToken).toBe(TEST_BOT_TOKEN);
    await waitFor(
      async () => !((await getCr(name))['status']?.['conditions'] ?? []).some((c: Json) => c['type'] === 'SpecAccepted'),
    );
  });

  it('a Secret that holds no bot token is refused without echoing it', async () => {
    const name = uniqueName('cr');
    await createBotSecret(`${name}-bot`, 'not-a-token-s3cr3t');
    await startSource();
    await createCr(name, {
      email: `${name}@example.com`,
      displayName: 'Cy',
      telegram: { botTokenSecretRef: { name: `${name}-bot`, key: 'token' } },
    });
    const accepted = await waitFor(async () =>
      ((await getCr(name))['status']?.['conditions'] as Json[] | undefined)?.find((c) => c['type'] === 'SpecAccepted'),
    );
    expect(accepted['reason']).toBe('InvalidSecret');
    expect(JSON.stringify(await getCr(name))).not.toContain('s3cr3t');
    expect(await store.get(name)).toBeUndefined();
  });

  it('a model API key is read from its Secret too, stored encrypted; a key missing from the Secret is reported', async () => {
    const name = uniqueName('cr');
    const apiKey = `sk-ant-${randomBytes(12).toString('hex')}`;
    await core.createNamespacedSecret({
      namespace: NS,
      body: {
        metadata: { name: `${name}-creds` },
        data: {
          token: Buffer.from(TEST_BOT_TOKEN).toString('base64'),
          'anthropic-key': Buffer.from(`${apiKey}\n`).toString('base64'),
        },
      },
    });
    await startSource();
    const model = { provider: 'anthropic', apiKeySecretRef: { name: `${name}-creds`, key: 'anthropic-key' } };
    await createCr(name, {
      email: `${name}@example.com`,
      displayName: 'Di',
      telegram: { botTokenSecretRef: { name: `${name}-creds`, key: 'token' } },
      model,
    });
    const stored = await waitFor(() => store.get(name));
    expect(stored.spec.model).toEqual({ ...model, apiKeySet: true });
    expect(await store.readSecrets(name)).toEqual({ telegramBotToken: TEST_BOT_TOKEN, modelApiKey: apiKey });

    const other = uniqueName('cr');
    await createCr(other, {
      email: `${other}@example.com`,
      displayName: 'Ed',
      telegram: { botTokenSecretRef: { name: `${name}-creds`, key: 'token' } },
      model: { apiKeySecretRef: { name: `${name}-creds`, key: 'openai-key' } },
    });
    const accepted = await waitFor(async () =>
      ((await getCr(other))['status']?.['conditions'] as Json[] | undefined)?.find((c) => c['type'] === 'SpecAccepted'),
    );
    expect(accepted).toMatchObject({
      status: 'False',
      reason: 'SecretNotFound',
      message: `Secret ${name}-creds has no key openai-key`,
    });
    expect(await store.get(other)).toBeUndefined();
  });

  it('a secret written inline is accepted with a warning event that names the field and the reference to use', async () => {
    const name = uniqueName('cr');
    const source = await startSource();
    await createCr(name, { email: `${name}@example.com`, displayName: 'Fay', telegram: { botToken: TEST_BOT_TOKEN } });
    await waitFor(() => store.get(name));
    const warning = await waitFor(async () => (await store.listEvents(name)).find((e) => e.reason === 'InlineSecret'));
    expect(warning.type).toBe('Warning');
    expect(warning.message).toContain('spec.telegram.botToken');
    expect(warning.message).toContain('spec.telegram.botTokenSecretRef');
    expect(warning.message).not.toContain(TEST_BOT_TOKEN);
    expect(warning.count).toBe(1);
    // Events of the resource that change no spec (a label, its status written back) add nothing.
    await custom.patchNamespacedCustomObject({ ...ref, name, body: { metadata: { labels: { team: 'b' } } } }, MERGE);
    await waitFor(async () => (await store.get(name))?.labels['team'] === 'b');
    await source.syncStatus(name);
    expect((await store.listEvents(name)).find((e) => e.reason === 'InlineSecret')?.count).toBe(1);
  });

  it('a watch broken mid-stream is restarted and a resync requested', async () => {
    const source = await startSource();
    await waitFor(() => source.watching);
    const resyncsBefore = sinkLog.resyncs.length;
    api.breakWatches();
    const name = uniqueName('cr');
    await createCr(name, { email: `${name}@example.com`, displayName: 'Di' });
    await waitFor(() => store.get(name));
    await waitFor(() => source.watching && api.watchCount('customers') === 1);
    await waitFor(() => sinkLog.resyncs.length > resyncsBefore);
  });

  it('410 Gone after a compaction relists and recovers changes made meanwhile', async () => {
    const source = await startSource();
    await waitFor(() => source.watching);
    const listsBefore = source.lists;
    // The API server restarts: watches are cut and refused; meanwhile a resource changes and the
    // history is compacted, so the old resourceVersion is too old when the watch comes back.
    api.rejectWatches = 503;
    api.breakWatches();
    const name = uniqueName('cr');
    await createCr(name, { email: `${name}@example.com`, displayName: 'Ed' });
    api.compact();
    api.rejectWatches = undefined;
    await waitFor(() => store.get(name));
    expect(source.lists).toBeGreaterThan(listsBefore);
    await waitFor(() => source.watching);
    // And the new watch delivers later changes.
    await custom.patchNamespacedCustomObject({ ...ref, name, body: { spec: { displayName: 'Ed W.' } } }, MERGE);
    await waitFor(async () => (await store.get(name))?.spec.displayName === 'Ed W.');
  });

  it('a standby (not leading) only watches; it mirrors when it becomes leader', async () => {
    let leading = false;
    const listeners = new Set<(l: boolean) => void>();
    const leadership = {
      isLeader: () => leading,
      onChange: (l: (leading: boolean) => void) => {
        listeners.add(l);
        return () => listeners.delete(l);
      },
    };
    const source = await startSource({ leadership });
    const name = uniqueName('cr');
    await createCr(name, { email: `${name}@example.com`, displayName: 'Flo' });
    await waitFor(() => source.watching);
    // Nothing written while standing by: the resource is seen but neither mirrored nor finalized.
    await waitFor(() => source.known().includes(name));
    await source.syncAllStatus();
    expect(await store.get(name)).toBeUndefined();
    expect((await getCr(name))['metadata']['finalizers']).toBeUndefined();
    leading = true;
    for (const l of listeners) l(true);
    await waitFor(() => store.get(name));
    await waitFor(async () => ((await getCr(name))['metadata']['finalizers'] ?? []).includes(CUSTOMER_FINALIZER));
  });
});
