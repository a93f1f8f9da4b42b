import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { OPENCLAW_VERSION } from '../../src/domain/openclaw.js';
import { newCredential } from '../../src/store/model-credential.js';
import { modelAccessConfig } from '../../src/workspace/model-access-config.js';
import { applyOwnedConfig, type JsonObject } from '../../src/workspace/openclaw-config.js';
import { FileWorkspaces } from '../../src/workspace/file-workspaces.js';
import { validateOpenClawConfig } from '../support/openclaw-cli.js';

/**
 * A customer's whole openclaw.json as the controller renders it today (no key of its own), with
 * the included-access fragment put where issue 18's renderer will put it (`models.providers`,
 * `agents.defaults.model.primary`), checked by the pinned OpenClaw package's own validator.
 */

const ROOT = resolve(import.meta.dirname, '../..');
const home = mkdtempSync(join(tmpdir(), 'blytz-openclaw-model-access-'));
afterAll(() => rmSync(home, { recursive: true, force: true }));

const workspaces = new FileWorkspaces({
  dataDir: '/nonexistent',
  templatesDir: join(ROOT, 'templates'),
  defaults: { image: 'unused', containerPort: 18789 },
});

async function customerConfig(model: string): Promise<JsonObject> {
  const out = await workspaces.render({
    customer: 'alice-example-com',
    email: 'alice@example.com',
    displayName: 'Jarvis',
    instructions: 'I run a bakery.',
    plan: 'personal',
    template: 'personal-assistant',
    publicOrigins: ['https://alice-example-com.blytz.localhost'],
    trustedProxies: ['172.17.0.1'],
    secrets: { gatewayToken: 'gw-0123456789abcdef' },
  });
  const file = out.files.find((f) => f.merge === 'openclaw-config');
  if (!file) throw new Error('no openclaw.json rendered');
  const config = JSON.parse(file.content) as JsonObject;
  const access = modelAccessConfig({ gatewayUrl: 'http://172.30.0.1:8090', credential: newCredential(), model });
  const agents = config['agents'] as { defaults: JsonObject };
  return {
    ...config,
    models: { providers: access.providers },
    agents: { ...agents, defaults: { ...agents.defaults, model: { primary: access.primary } } },
  };
}

async function validate(name: string, config: JsonObject) {
  const path = join(home, `${name}.json`);
  writeFileSync(path, JSON.stringify(config, null, 2), { mode: 0o600 });
  return validateOpenClawConfig(path, join(home, name));
}

describe(`included model access in openclaw.json, accepted by OpenClaw ${OPENCLAW_VERSION}'s own validator`, () => {
  for (const model of ['anthropic/claude-haiku-4-5', 'openai/gpt-5-mini']) {
    it(`a customer's config with the fragment (${model}), also merged over what the gateway writes`, async () => {
      const config = await customerConfig(model);
      const fresh = await validate(model.split('/')[0] as string, config);
      expect(fresh.valid, fresh.output).toBe(true);
      const merged = {
        ...applyOwnedConfig({ meta: { lastTouchedVersion: OPENCLAW_VERSION } }, config),
        models: config['models'],
      };
      const afterGateway = await validate(`${model.split('/')[0]}-merged`, merged);
      expect(afterGateway.valid, afterGateway.output).toBe(true);
    }, 120_000);
  }

  it('the validator is really consulted: a misspelt key in the fragment is refused', async () => {
    const config = await customerConfig('anthropic/claude-haiku-4-5');
    ((config['models'] as { providers: Record<string, JsonObject> }).providers['blytz'] as JsonObject)['baseURL'] = 'http://x';
    const verdict = await validate('misspelt', config);
    expect(verdict.valid).toBe(false);
    expect(verdict.output).toMatch(/baseURL/);
  }, 120_000);
});
