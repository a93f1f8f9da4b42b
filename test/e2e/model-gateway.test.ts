import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { periodKey } from '../../src/models/budget.js';
import { modelAccessConfig } from '../../src/models/model-access-config.js';
import { ModelAccessStore } from '../../src/store/model-access-store.js';
import { SecretBox } from '../../src/store/secret-box.js';
import { BLYTZ, baseEnv, docker, freePort, ROOT, startServe, type Served } from '../support/blytz-serve.js';
import { startFakeModelProvider, type FakeModelProvider } from '../support/fake-model-provider.js';
import { openclawBin, openclawEnv } from '../support/openclaw-cli.js';
import { createTestDatabase, waitFor, type TestDatabase } from '../support/postgres.js';

/**
 * Included model access end to end: the built `blytz serve` with its model gateway (platform key
 * from a *_FILE, upstream = the local fake provider), a customer applied with `blytz apply`, and
 * the real OpenClaw gateway (the pinned npm package, run on the host) configured with
 * `modelAccessConfig` for that customer, answering a chat message through Blytz's gateway.
 *
 * Until the controller renders the fragment into the customer's container (issue 18's
 * openclaw.json rewrite), OpenClaw runs on the host from the installed package and the test
 * writes its config; the source check is off for that reason (the host is not the customer's
 * container; model-gateway-docker.test.ts covers that check).
 */

const PLATFORM_KEY = `platform-anthropic-${randomBytes(16).toString('hex')}`;
const OPENCLAW_TOKEN = `openclaw-gateway-token-${randomBytes(12).toString('hex')}`;
const CUSTOMER = `models-e2e-${randomBytes(3).toString('hex')}`;

let db: TestDatabase;
let fake: FakeModelProvider;
let served: Served;
let work: string;
let gatewayUrl: string;
let credential: string;
let openclaw: ChildProcess | undefined;
let openclawLog = '';
let openclawPort: number;
let store: ModelAccessStore;
const outputs: string[] = [];

function cli(args: string[], input = ''): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(BLYTZ, [...args, '--server', served.url], {
      cwd: ROOT,
      env: { ...baseEnv(), BLYTZ_ADMIN_TOKEN: served.adminToken },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => {
      outputs.push(stdout, stderr);
      resolve({ code: code ?? -1, stdout, stderr });
    });
    child.stdin.end(input);
  });
}

/** One request straight to Blytz's gateway, as the assistant's Anthropic SDK makes it. */
async function gatewayCall(key: string): Promise<number> {
  const res = await fetch(`${gatewayUrl}/anthropic/v1/messages`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-api-key': key, 'anthropic-version': '2023-06-01' },
    body: JSON.stringify({ model: 'claude-haiku-4-5', max_tokens: 64, messages: [{ role: 'user', content: 'ping' }] }),
  });
  outputs.push(await res.text());
  return res.status;
}

function filesUnder(dir: string): string[] {
  return readdirSync(dir).flatMap((entry) => {
    const path = join(dir, entry);
    const stat = statSync(path);
    return stat.isDirectory() ? filesUnder(path) : stat.isFile() ? [path] : [];
  });
}

beforeAll(async () => {
  db = await createTestDatabase();
  fake = await startFakeModelProvider({ anthropicKey: PLATFORM_KEY });
  work = mkdtempSync(join(tmpdir(), 'blytz-e2e-models-'));
  const keyFile = join(work, 'anthropic-key');
  writeFileSync(keyFile, `${PLATFORM_KEY}\n`, { mode: 0o600 });
  const secretKey = randomBytes(32);
  const gatewayPort = await freePort();
  gatewayUrl = `http://127.0.0.1:${gatewayPort}`;
  served = await startServe({
    databaseUrl: db.url,
    env: {
      BLYTZ_SECRET_KEY: secretKey.toString('base64'),
      BLYTZ_MODEL_GATEWAY_LISTEN: `127.0.0.1:${gatewayPort}`,
      BLYTZ_MODEL_SOURCE_CHECK: 'off',
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
      spec: { email: `${CUSTOMER}@example.com`, displayName: 'Ada', plan: 'personal', instructions: 'Be brief.' },
    }),
  );
  expect(applied.stderr).toBe('');
  expect(applied.code).toBe(0);

  // What the controller's render does for a customer on the default model (issue 18 wires it).
  store = new ModelAccessStore(db.handle, new SecretBox(secretKey));
  credential = (await store.ensureCredential(CUSTOMER)) as string;
  const access = modelAccessConfig({ gatewayUrl, credential, model: 'anthropic/claude-haiku-4-5' });
  const home = join(work, 'home');
  mkdirSync(join(home, '.openclaw', 'workspace'), { recursive: true });
  openclawPort = await freePort();
  const configPath = join(home, '.openclaw', 'openclaw.json');
  writeFileSync(
    configPath,
    JSON.stringify({
      gateway: {
        mode: 'local',
        port: openclawPort,
        bind: 'loopback',
        auth: { mode: 'token', token: OPENCLAW_TOKEN },
        http: { endpoints: { chatCompletions: { enabled: true } } },
      },
      models: { providers: access.providers },
      agents: { defaults: { workspace: join(home, '.openclaw', 'workspace'), model: { primary: access.primary } } },
    }),
    { mode: 0o600 },
  );
  openclaw = spawn(openclawBin(), ['gateway', 'run'], {
    env: openclawEnv({ HOME: home, OPENCLAW_CONFIG_PATH: configPath }),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  openclaw.stdout?.on('data', (d: Buffer) => (openclawLog += d.toString()));
  openclaw.stderr?.on('data', (d: Buffer) => (openclawLog += d.toString()));
  try {
    await waitFor(
      async () => {
        if (openclaw?.exitCode !== null) throw new Error(`openclaw exited with ${openclaw?.exitCode}`);
        return (await fetch(`http://127.0.0.1:${openclawPort}/healthz`)).ok;
      },
      150_000,
      500,
    );
  } catch (error) {
    throw new Error(`openclaw did not start: ${(error as Error).message}\n${openclawLog.slice(-3000)}`, { cause: error });
  }
}, 240_000);

afterAll(async () => {
  if (openclaw && openclaw.exitCode === null) {
    const exited = new Promise((r) => openclaw?.once('exit', r));
    openclaw.kill('SIGTERM');
    await Promise.race([exited, new Promise((r) => setTimeout(r, 15_000))]);
    if (openclaw.exitCode === null) openclaw.kill('SIGKILL');
  }
  await served?.stop();
  await fake?.close();
  await db?.drop();
  if (work) rmSync(work, { recursive: true, force: true });
}, 60_000);

describe('a customer on the default model', () => {
  it('gets replies from the real OpenClaw through the model gateway, metered exactly', async () => {
    const res = await fetch(`http://127.0.0.1:${openclawPort}/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${OPENCLAW_TOKEN}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'openclaw', messages: [{ role: 'user', content: 'Say hello' }] }),
    });
    const body = (await res.json()) as { choices?: Array<{ message?: { content?: string } }> };
    expect(res.status, JSON.stringify(body)).toBe(200);
    expect(body.choices?.[0]?.message?.content).toContain('Hello from the fake model provider.');

    // OpenClaw's own model calls reached the provider with the platform key, never the credential.
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
  }, 180_000);

  it("a suspended customer's credential stops at once and works again on resume", async () => {
    expect(await gatewayCall(credential)).toBe(200);
    expect((await cli(['suspend', CUSTOMER])).code).toBe(0);
    expect(await gatewayCall(credential)).toBe(401);
    expect((await cli(['resume', CUSTOMER])).code).toBe(0);
    expect(await gatewayCall(credential)).toBe(200);
  });

  it('blytz rotate-model-key: the old credential is refused at once', async () => {
    const rotated = await cli(['rotate-model-key', CUSTOMER]);
    expect(rotated.stderr).toBe('');
    expect(rotated.code).toBe(0);
    expect(rotated.stdout).toContain(`customer/${CUSTOMER} model key rotated at`);
    expect(await gatewayCall(credential)).toBe(401);
    const fresh = (await store.ensureCredential(CUSTOMER)) as string;
    expect(fresh).not.toBe(credential);
    expect(await gatewayCall(fresh)).toBe(200);
    expect((await cli(['rotate-model-key', 'no-such-customer'])).code).toBe(1);
  });

  it('the platform key is in no container, log, file or API body', async () => {
    const container = await docker.listContainers({
      all: true,
      filters: { label: [`cloud.blytz.customer=${CUSTOMER}`, `cloud.blytz.instance=${served.instance}`] },
    });
    expect(container.length).toBeGreaterThan(0);
    for (const c of container) expect(JSON.stringify(await docker.getContainer(c.Id).inspect())).not.toContain(PLATFORM_KEY);
    for (const file of filesUnder(served.dataDir)) expect(readFileSync(file).includes(PLATFORM_KEY), file).toBe(false);
    const json = await cli(['get', 'customer', CUSTOMER, '-o', 'json']);
    const usage = await fetch(`${served.url}/apis/blytz.cloud/v1alpha1/customers/${CUSTOMER}/model-usage`, {
      headers: { authorization: `Bearer ${served.adminToken}` },
    });
    outputs.push(json.stdout, await usage.text());
    for (const text of [...outputs, served.log(), openclawLog]) {
      expect(text).not.toContain(PLATFORM_KEY);
      // Nor a customer's credential in Blytz's own output.
      expect(text).not.toMatch(/blytz-mk-[A-Za-z0-9_-]{43}/);
    }
    expect(served.log()).toContain('model gateway listening');
  });
});
