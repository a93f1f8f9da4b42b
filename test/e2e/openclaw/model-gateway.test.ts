import { randomBytes } from 'node:crypto';
import {
  chownSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type Docker from 'dockerode';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { OPENCLAW_IMAGE } from '../../../src/domain/openclaw.js';
import { periodKey } from '../../../src/domain/model-budget.js';
import { modelAccessConfig } from '../../../src/workspace/model-access-config.js';
import { ModelAccessStore } from '../../../src/store/model-access-store.js';
import { SecretBox } from '../../../src/store/secret-box.js';
import { type BlytzRun, docker, freePort, runBlytz, type Served, startServe } from '../../support/blytz-serve.js';
import { startFakeModelProvider, type FakeModelProvider } from '../../support/fake-model-provider.js';
import { createTestDatabase, type TestDatabase } from '../../support/postgres.js';
import { waitFor } from '../../support/wait-for.js';

/**
 * Included model access end to end: the built `blytz serve` with its model gateway on a Docker
 * customers network's own address (platform key from a *_FILE, upstream = the local fake
 * provider, the source check on), a customer applied with `blytz apply`, and that customer's
 * assistant: the real OpenClaw image (ghcr.io/openclaw/openclaw:<pinned>, scripts/build-openclaw-image.sh)
 * in a container on that network, labelled as the customer's, with `modelAccessConfig` in its
 * openclaw.json. A chat message to the assistant is answered through the gateway.
 *
 * The controller does not render the fragment into openclaw.json yet (issue 18 owns that file):
 * the customer is `paused`, so the controller leaves its container alone, and the test does the
 * render's part (its credential, the fragment) and starts the container as the runtime would.
 */

const PLATFORM_KEY = `platform-anthropic-${randomBytes(16).toString('hex')}`;
const OPENCLAW_TOKEN = `openclaw-gateway-token-${randomBytes(12).toString('hex')}`;
const CUSTOMER = `models-e2e-${randomBytes(3).toString('hex')}`;

let db: TestDatabase;
let fake: FakeModelProvider;
let served: Served;
let network: Docker.Network;
let networkName: string;
let assistant: Docker.Container | undefined;
let work: string;
let home: string;
let gatewayUrl: string;
let credential: string;
let assistantPort: number;
let store: ModelAccessStore;
const outputs: string[] = [];

/** `blytz ARGS` as the operator, its output kept for the check that no secret is ever printed. */
async function cli(args: string[], input = ''): Promise<BlytzRun> {
  const result = await runBlytz([...args, '--server', served.url], { env: { BLYTZ_ADMIN_TOKEN: served.adminToken }, input });
  outputs.push(result.stdout, result.stderr);
  return result;
}

/** One model request from inside the assistant's container (its agent's shell could do the same). */
async function fromAssistant(key: string): Promise<number> {
  const exec = await (assistant as Docker.Container).exec({
    Cmd: [
      'node',
      '-e',
      `fetch(process.argv[1], { method: 'POST', headers: { 'content-type': 'application/json', 'x-api-key': process.argv[2], 'anthropic-version': '2023-06-01' }, body: JSON.stringify({ model: 'claude-haiku-4-5', max_tokens: 64, messages: [{ role: 'user', content: 'ping' }] }) }).then((r) => console.log(r.status), (e) => console.log('error', e.message))`,
      `${gatewayUrl}/anthropic/v1/messages`,
      key,
    ],
    AttachStdout: true,
    AttachStderr: true,
  });
  const stream = await exec.start({});
  const out = await new Promise<string>((resolve) => {
    let text = '';
    stream.on('data', (d: Buffer) => (text += d.toString()));
    stream.on('end', () => resolve(text));
  });
  outputs.push(out);
  return Number(/\b(\d{3})\b/.exec(out)?.[1] ?? 0);
}

/** How many model requests the gateway refused for the spent budget (its own counter). */
async function quotaRefusals(): Promise<number> {
  const metrics = await (await fetch(`${served.url}/metrics`)).text();
  return Number(/^blytz_model_requests_total\{api="anthropic-messages",outcome="quota_exceeded"\} (\d+)$/m.exec(metrics)?.[1] ?? 0);
}

/** Regular files under `dir` (links are not followed: OpenClaw links into its own image). */
function filesUnder(dir: string): string[] {
  return readdirSync(dir).flatMap((entry) => {
    const path = join(dir, entry);
    const stat = lstatSync(path);
    return stat.isDirectory() ? filesUnder(path) : stat.isFile() ? [path] : [];
  });
}

function chownTree(path: string): void {
  chownSync(path, 1000, 1000);
  if (statSync(path).isDirectory()) for (const entry of readdirSync(path)) chownTree(join(path, entry));
}

beforeAll(async () => {
  if ((await docker.listImages({ filters: { reference: [OPENCLAW_IMAGE] } })).length === 0) {
    throw new Error(`${OPENCLAW_IMAGE} is missing: run scripts/build-openclaw-image.sh (make test does)`);
  }
  db = await createTestDatabase();
  fake = await startFakeModelProvider({ anthropicKey: PLATFORM_KEY });
  work = mkdtempSync(join(tmpdir(), 'blytz-e2e-models-'));
  const keyFile = join(work, 'anthropic-key');
  writeFileSync(keyFile, `${PLATFORM_KEY}\n`, { mode: 0o600 });

  // The customers' network; the gateway listens on its own address (the bridge on the host).
  const instance = `models-${randomBytes(3).toString('hex')}`;
  networkName = `blytz-e2e-customers-${instance}`;
  network = await docker.createNetwork({ Name: networkName, Driver: 'bridge', Labels: { 'cloud.blytz.instance': instance } });
  const gatewayIp = ((await network.inspect()) as { IPAM: { Config: Array<{ Gateway: string }> } }).IPAM.Config[0]!.Gateway;
  const gatewayPort = await freePort();
  gatewayUrl = `http://${gatewayIp}:${gatewayPort}`;

  const secretKey = randomBytes(32);
  served = await startServe({
    databaseUrl: db.url,
    instance,
    env: {
      BLYTZ_SECRET_KEY: secretKey.toString('base64'),
      BLYTZ_MODEL_GATEWAY_LISTEN: `${gatewayIp}:${gatewayPort}`,
      BLYTZ_MODEL_DEFAULT: 'anthropic/claude-haiku-4-5',
      BLYTZ_ANTHROPIC_API_KEY_FILE: keyFile,
      BLYTZ_ANTHROPIC_API_BASE: fake.url,
    },
  });
  const applied = await cli(
    ['apply', '-f', '-'],
    JSON.stringify({
      apiVersion: 'blytz.cloud/v1alpha1',
      kind: 'Customer',
      metadata: { name: CUSTOMER },
      spec: { email: `${CUSTOMER}@example.com`, displayName: 'Ada', plan: 'personal', instructions: 'Be brief.', paused: true },
    }),
  );
  expect(applied.stderr).toBe('');
  expect(applied.code).toBe(0);

  // The render's part for a customer on the default model: its credential, the fragment.
  store = new ModelAccessStore(db.handle, new SecretBox(secretKey));
  credential = (await store.ensureCredential(CUSTOMER)) as string;
  const access = modelAccessConfig({ gatewayUrl, credential, model: 'anthropic/claude-haiku-4-5' });
  home = join(work, 'openclaw-home');
  mkdirSync(join(home, 'workspace'), { recursive: true, mode: 0o700 });
  writeFileSync(
    join(home, 'openclaw.json'),
    JSON.stringify({
      gateway: {
        mode: 'local',
        port: 18789,
        bind: 'lan',
        auth: { mode: 'token', token: OPENCLAW_TOKEN },
        http: { endpoints: { chatCompletions: { enabled: true } } },
      },
      models: { providers: access.providers },
      agents: { defaults: { workspace: '/home/node/.openclaw/workspace', model: { primary: access.primary } } },
    }),
    { mode: 0o600 },
  );
  chownTree(home);

  // The customer's container, as the Docker runtime makes it: its labels, on the customers' network.
  assistantPort = await freePort();
  assistant = await docker.createContainer({
    Image: OPENCLAW_IMAGE,
    name: `blytz-${CUSTOMER}`,
    Labels: { 'cloud.blytz.managed-by': 'blytz', 'cloud.blytz.customer': CUSTOMER, 'cloud.blytz.instance': instance },
    ExposedPorts: { '18789/tcp': {} },
    HostConfig: {
      NetworkMode: networkName,
      Mounts: [{ Type: 'bind', Source: home, Target: '/home/node/.openclaw', ReadOnly: false }],
      PortBindings: { '18789/tcp': [{ HostIp: '127.0.0.1', HostPort: String(assistantPort) }] },
      Memory: 2 * 1024 ** 3,
      CapDrop: ['ALL'],
      SecurityOpt: ['no-new-privileges:true'],
      Init: true,
    },
  });
  await assistant.start();
  try {
    await waitFor(
      async () => {
        const state = (await (assistant as Docker.Container).inspect()).State;
        if (!state.Running) throw new Error(`the assistant exited with ${state.ExitCode}`);
        return (await fetch(`http://127.0.0.1:${assistantPort}/healthz`)).ok;
      },
      180_000,
      500,
    );
  } catch (error) {
    const logs = (await assistant.logs({ stdout: true, stderr: true, tail: 60 })).toString();
    throw new Error(`the assistant did not start: ${(error as Error).message}\n${logs}`, { cause: error });
  }
}, 300_000);

afterAll(async () => {
  await assistant?.remove({ force: true }).catch(() => {});
  await served?.stop();
  await network?.remove().catch(() => {});
  await fake?.close();
  await db?.drop();
  if (work) rmSync(work, { recursive: true, force: true });
}, 60_000);

describe('a customer on the default model', () => {
  it('gets replies from its real OpenClaw container through the model gateway, metered exactly', async () => {
    const res = await fetch(`http://127.0.0.1:${assistantPort}/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${OPENCLAW_TOKEN}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'openclaw', messages: [{ role: 'user', content: 'Say hello' }] }),
    });
    const body = (await res.json()) as { choices?: Array<{ message?: { content?: string } }> };
    expect(res.status, JSON.stringify(body)).toBe(200);
    expect(body.choices?.[0]?.message?.content).toContain('Hello from the fake model provider.');

    // OpenClaw's model calls reached the provider with the platform key, never the credential.
    const calls = fake.requests.filter((r) => r.api === 'anthropic-messages');
    expect(calls.length).toBeGreaterThan(0);
    for (const call of calls) {
      expect(call.headers['x-api-key']).toBe(PLATFORM_KEY);
      expect(call.streamed).toBe(true);
    }
    // Exactly what the provider reported, once each.
    const reported = fake.reported('anthropic-messages');
    await waitFor(async () => (await store.usage(CUSTOMER, periodKey(new Date()))).requests === calls.length, 20_000);
    expect(await store.usage(CUSTOMER, periodKey(new Date()))).toMatchObject({ requests: calls.length, ...reported });

    const described = await cli(['describe', 'customer', CUSTOMER]);
    expect(described.code).toBe(0);
    expect(described.stdout).toContain('Model Usage:');
    expect(described.stdout).toContain(
      `${(reported.inputTokens + reported.outputTokens).toLocaleString('en-US')} of 2,000,000 tokens included`,
    );

    const metrics = await (await fetch(`${served.url}/metrics`)).text();
    expect(metrics).toMatch(/blytz_model_tokens_total\{api="anthropic-messages",kind="output"\} [1-9]/);
    expect(metrics).toMatch(/blytz_model_requests_total\{api="anthropic-messages",outcome="ok"\} [1-9]/);
  }, 240_000);

  it("a suspended customer's credential stops at once and works again on resume", async () => {
    expect(await fromAssistant(credential)).toBe(200);
    expect((await cli(['suspend', CUSTOMER])).code).toBe(0);
    expect(await fromAssistant(credential)).toBe(401);
    expect((await cli(['resume', CUSTOMER])).code).toBe(0);
    expect(await fromAssistant(credential)).toBe(200);
  }, 60_000);

  it('the credential works only from its own container: from the host it is refused', async () => {
    const res = await fetch(`${gatewayUrl}/anthropic/v1/messages`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-api-key': credential, 'anthropic-version': '2023-06-01' },
      body: JSON.stringify({ model: 'claude-haiku-4-5', max_tokens: 8, messages: [{ role: 'user', content: 'x' }] }),
    });
    outputs.push(await res.text());
    expect(res.status).toBe(403);
  });

  it('past its budget, the assistant tells the user its usage limit is reached and when it returns (the provider is not called)', async () => {
    const period = periodKey(new Date());
    const before = await store.usage(CUSTOMER, period);
    const providerCalls = fake.requests.length;
    const refusedBefore = await quotaRefusals();
    // The month's usage as if the plan's 2,000,000 included tokens were spent.
    await sql`UPDATE model_usage SET output_tokens = output_tokens + 3000000 WHERE customer = ${CUSTOMER} AND period = ${period}::date`.execute(
      db.handle.db,
    );
    try {
      const res = await fetch(`http://127.0.0.1:${assistantPort}/v1/chat/completions`, {
        method: 'POST',
        headers: { authorization: `Bearer ${OPENCLAW_TOKEN}`, 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'openclaw', messages: [{ role: 'user', content: 'Say hello again' }] }),
      });
      const text = await res.text();
      outputs.push(text);
      // OpenClaw relays the provider's answer (Anthropic's reached usage limit, with the date
      // access returns) to the user rather than failing silently or retrying for ever.
      expect(text, `status ${res.status}`).toMatch(
        /reached your specified API usage limits: this assistant's monthly usage limit is used up\. You will regain access on \d{4}-\d{2}-01/,
      );
      expect(fake.requests.length).toBe(providerCalls);
      // Asked once and relayed at once: a monthly limit is not retried (see quotaExceeded).
      expect(await quotaRefusals()).toBe(refusedBefore + 1);
    } finally {
      await sql`UPDATE model_usage SET output_tokens = ${before.outputTokens} WHERE customer = ${CUSTOMER} AND period = ${period}::date`.execute(
        db.handle.db,
      );
    }
  }, 240_000);

  it('blytz rotate-model-key: the old credential is refused at once', async () => {
    const rotated = await cli(['rotate-model-key', CUSTOMER]);
    expect(rotated.stderr).toBe('');
    expect(rotated.code).toBe(0);
    expect(rotated.stdout).toContain(`customer/${CUSTOMER} model key rotated at`);
    expect(await fromAssistant(credential)).toBe(401);
    const fresh = (await store.ensureCredential(CUSTOMER)) as string;
    expect(fresh).not.toBe(credential);
    expect(await fromAssistant(fresh)).toBe(200);
    expect((await cli(['rotate-model-key', 'no-such-customer'])).code).toBe(1);
  }, 60_000);

  it('the platform key is in no container, log, file or API body', async () => {
    expect(JSON.stringify(await (assistant as Docker.Container).inspect())).not.toContain(PLATFORM_KEY);
    const logs = (await (assistant as Docker.Container).logs({ stdout: true, stderr: true })).toString();
    for (const file of [...filesUnder(served.dataDir), ...filesUnder(home)]) {
      expect(readFileSync(file).includes(PLATFORM_KEY), file).toBe(false);
    }
    const json = await cli(['get', 'customer', CUSTOMER, '-o', 'json']);
    const usage = await fetch(`${served.url}/apis/blytz.cloud/v1alpha1/customers/${CUSTOMER}/model-usage`, {
      headers: { authorization: `Bearer ${served.adminToken}` },
    });
    outputs.push(json.stdout, await usage.text());
    for (const text of [...outputs, served.log(), logs]) {
      expect(text).not.toContain(PLATFORM_KEY);
    }
    // Nor a customer's credential in Blytz's own output.
    for (const text of [...outputs, served.log()]) expect(text).not.toMatch(/blytz-mk-[A-Za-z0-9_-]{43}/);
    expect(served.log()).toContain('model gateway listening');
  });
});
