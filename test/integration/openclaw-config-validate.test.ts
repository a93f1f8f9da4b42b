import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MODEL_PROVIDERS } from '../../src/domain/customer.js';
import { OPENCLAW_VERSION } from '../../src/domain/openclaw.js';
import { applyOwnedConfig, type JsonObject } from '../../src/workspace/openclaw-config.js';
import { FileWorkspaces } from '../../src/workspace/file-workspaces.js';
import type { WorkspaceInput } from '../../src/workspace/workspace.js';
import { mapLimit } from '../../src/runtime/docker/health.js';
import { modelAccessConfig } from '../../src/workspace/model-access-config.js';
import { validateOpenClawConfig, type Validation } from '../support/openclaw-cli.js';

/**
 * Every openclaw.json the controller renders, checked by the pinned OpenClaw package's own
 * validator (`openclaw config validate --json`, the zod schema the gateway refuses to start
 * without), run through test/support/openclaw-cli.ts (the package `make openclaw-image` installs).
 */

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const BOT_TOKEN = '123456789:AAbbCCddEEffGGhhIIjjKKllMMnnOOppQQr';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'blytz-openclaw-validate-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** Runs the pinned validator on a config; exit 1 with the offending key when it is invalid. */
async function validate(name: string, config: JsonObject): Promise<Validation> {
  const path = join(dir, `${name}.json`);
  await writeFile(path, JSON.stringify(config, null, 2));
  const verdict = await validateOpenClawConfig(path, join(dir, `home-${name}`));
  // Its JSON verdict and its exit code agree, or we are not reading it right.
  expect(verdict.valid, verdict.output).toBe(verdict.exitCode === 0);
  return verdict;
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
    // The customer's own key sits in its provider's entry (what OpenClaw reloads without a
    // restart), and nothing else is needed there for a built-in provider.
    for (const [name, config] of cases.filter(([name]) => name.startsWith('telegram-'))) {
      const provider = name.slice('telegram-'.length);
      expect(config.models, name).toEqual({ providers: { [provider]: { apiKey: `key-for-${provider}` } } });
      expect(config.env, name).toBeUndefined();
    }
    // A customer moving from the included model to a key of their own, over a file an older
    // render gave an environment key and where the operator tuned the provider's entry.
    cases.push([
      'own-key-over-included-and-older-env',
      applyOwnedConfig(
        applyOwnedConfig(
          { env: { vars: { ANTHROPIC_API_KEY: 'sk-ant-older' } }, models: { providers: { anthropic: { timeoutSeconds: 120 } } } },
          await rendered({ modelAccess: modelAccessConfig({ gatewayUrl: 'http://10.199.0.1:8090', credential: 'blytz-mk-c', model: 'openai/gpt-5-mini' }) }),
        ),
        await rendered({ modelProvider: 'anthropic' }, { modelApiKey: 'sk-ant-own' }),
      ),
    ]);
    // Included model access: the model gateway as provider `blytz`, for both API styles.
    for (const model of ['anthropic/claude-haiku-4-5', 'openai/gpt-5-mini']) {
      const modelAccess = modelAccessConfig({ gatewayUrl: 'http://10.199.0.1:8090', credential: 'blytz-mk-test-credential', model });
      cases.push([`included-${model.split('/')[0]}`, await rendered({ modelAccess }, { telegramBotToken: BOT_TOKEN })]);
    }
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
