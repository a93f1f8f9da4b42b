import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MODEL_PROVIDERS } from '../../src/domain/customer.js';
import { OPENCLAW_VERSION } from '../../src/domain/openclaw.js';
import { applyOwnedConfig, type JsonObject } from '../../src/workspace/openclaw-config.js';
import { FileWorkspaces } from '../../src/workspace/file-workspaces.js';
import type { WorkspaceInput } from '../../src/workspace/workspace.js';
import { mapLimit } from '../../src/runtime/docker/health.js';

/**
 * Every openclaw.json the controller renders, checked by the pinned OpenClaw package's own
 * validator (`openclaw config validate --json`, the zod schema the gateway refuses to start
 * without). The package is the one `make openclaw-image` installs into .tools/openclaw/<version>.
 */

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const OPENCLAW = join(ROOT, '.tools', 'openclaw', OPENCLAW_VERSION, 'node_modules', 'openclaw', 'openclaw.mjs');
const BOT_TOKEN = '123456789:AAbbCCddEEffGGhhIIjjKKllMMnnOOppQQr';
const run = promisify(execFile);

let dir: string;
beforeAll(async () => {
  if (!existsSync(OPENCLAW)) throw new Error(`${OPENCLAW} is missing: run scripts/services.sh openclaw (make test does)`);
  dir = await mkdtemp(join(tmpdir(), 'blytz-openclaw-validate-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

interface Verdict {
  valid: boolean;
  issues?: unknown;
  error?: unknown;
}

/** Runs the pinned validator on a config; exit 1 with the offending key when it is invalid. */
async function validate(name: string, config: JsonObject): Promise<Verdict & { output: string }> {
  const path = join(dir, `${name}.json`);
  await writeFile(path, JSON.stringify(config, null, 2));
  const home = join(dir, `home-${name}`);
  // A clean environment: OpenClaw's CLI does nothing at all under VITEST / NODE_ENV=test.
  const env = { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: home, OPENCLAW_CONFIG_PATH: path, OPENCLAW_STATE_DIR: join(home, '.openclaw') };
  const { stdout, stderr, code } = await run(process.execPath, [OPENCLAW, 'config', 'validate', '--json'], { env, timeout: 120_000 })
    .then((r) => ({ ...r, code: 0 }))
    .catch((error: { stdout?: string; stderr?: string; code?: number }) => ({
      stdout: error.stdout ?? '',
      stderr: error.stderr ?? '',
      code: error.code ?? 1,
    }));
  const output = `${stdout}${stderr}`;
  const json = /\{[\s\S]*\}/.exec(stdout)?.[0];
  const verdict = json ? (JSON.parse(json) as Verdict) : { valid: false };
  expect(verdict.valid, output).toBe(code === 0);
  return { ...verdict, output };
}

const workspaces = new FileWorkspaces({
  dataDir: '/nonexistent',
  templatesDir: join(ROOT, 'templates'),
  defaults: { image: 'unused', containerPort: 18789 },
});

async function rendered(overrides: Partial<WorkspaceInput> = {}, secrets: Partial<WorkspaceInput['secrets']> = {}): Promise<JsonObject> {
  const input: WorkspaceInput = {
    customer: 'alice-example-com',
    email: 'alice@example.com',
    displayName: 'Jarvis',
    instructions: 'I run a bakery.',
    plan: 'personal',
    template: 'personal-assistant',
    publicOrigins: ['https://alice-example-com.blytz.localhost', 'https://alice-example-com.blytz.localhost:8443'],
    trustedProxies: ['172.17.0.1', '10.244.0.0/16'],
    ...overrides,
    secrets: { gatewayToken: 'gw-0123456789abcdef', ...secrets },
  };
  const out = await workspaces.render(input);
  const file = out.files.find((f) => f.merge === 'openclaw-config');
  if (!file) throw new Error('no openclaw.json rendered');
  return JSON.parse(file.content) as JsonObject;
}

describe(`openclaw.json accepted by OpenClaw ${OPENCLAW_VERSION}'s own validator`, () => {
  it('every template, every provider, with and without Telegram, and merged with what the gateway writes', async () => {
    const cases: Array<[string, JsonObject]> = [];
    for (const template of ['personal-assistant', 'web-assistant']) {
      cases.push([`${template}-bare`, await rendered({ template }, {})]);
    }
    for (const provider of MODEL_PROVIDERS) {
      cases.push([
        `telegram-${provider}`,
        await rendered(
          { modelProvider: provider, telegramApiRoot: 'http://127.0.0.1:9999/telegram' },
          { telegramBotToken: BOT_TOKEN, modelApiKey: `key-for-${provider}` },
        ),
      ]);
    }
    cases.push(['no-telegram-key-only', await rendered({}, { modelApiKey: 'sk-ant-only' })]);
    // After a pairing the gateway records its owner in the same file; ours merged over it stays valid.
    cases.push([
      'merged-with-gateway-writes',
      applyOwnedConfig(
        { meta: { lastTouchedVersion: OPENCLAW_VERSION }, channels: { telegram: { allowFrom: ['4242'] } } },
        await rendered({}, { telegramBotToken: BOT_TOKEN }),
      ),
    ]);
    const verdicts = await mapLimit(cases, 2, async ([name, config]) => ({ name, ...(await validate(name, config)) }));
    for (const verdict of verdicts) expect(verdict.valid, `${verdict.name}: ${verdict.output}`).toBe(true);
  });

  it('the validator is really consulted: a key the schema does not define fails, naming it', async () => {
    const config = await rendered({}, { telegramBotToken: BOT_TOKEN });
    (config.gateway as JsonObject).notAKey = true;
    const verdict = await validate('unknown-key', config);
    expect(verdict.valid).toBe(false);
    expect(verdict.output).toMatch(/notAKey/);
    // The shape the controller rendered before (a model key under env.<NAME>, not env.vars) fails too.
    const old = await rendered({}, { modelApiKey: 'sk-ant-x' });
    old.env = { ANTHROPIC_API_KEY: 'sk-ant-x' };
    expect((await validate('old-env-shape', old)).valid).toBe(false);
  });
});
