import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { newCredential } from '../../src/models/credentials.js';
import { GATEWAY_PROVIDER_ID, modelAccessConfig, splitModel } from '../../src/models/model-access-config.js';
import { buildOpenClawConfig } from '../../src/workspace/openclaw-config.js';
import { validateOpenClawConfig } from '../support/openclaw-cli.js';

/**
 * The openclaw.json fragment for included model access, and proof that the pinned OpenClaw
 * (2026.9.6) accepts a config containing it: its own `openclaw config validate`.
 */

const credential = newCredential();
const home = mkdtempSync(join(tmpdir(), 'blytz-openclaw-validate-'));
afterAll(() => rmSync(home, { recursive: true, force: true }));

/** A whole config as a customer's would be: the gateway block of today's renderer plus the fragment. */
function configWith(model: string): Record<string, unknown> {
  const access = modelAccessConfig({ gatewayUrl: 'http://172.30.0.1:8090/', credential, model });
  const config = buildOpenClawConfig({
    port: 18789,
    gatewayToken: 'g'.repeat(48),
    workspacePath: '/home/node/.openclaw/workspace',
  });
  const agents = config['agents'] as { defaults: Record<string, unknown> };
  return {
    ...config,
    models: { providers: access.providers },
    agents: { ...agents, defaults: { ...agents.defaults, model: { primary: access.primary } } },
  };
}

describe('modelAccessConfig', () => {
  it('points an Anthropic-messages provider at the gateway with the credential', () => {
    expect(modelAccessConfig({ gatewayUrl: 'http://172.30.0.1:8090/', credential, model: 'anthropic/claude-haiku-4-5' })).toEqual(
      {
        providers: {
          [GATEWAY_PROVIDER_ID]: {
            baseUrl: 'http://172.30.0.1:8090/anthropic',
            apiKey: credential,
            api: 'anthropic-messages',
            models: [{ id: 'claude-haiku-4-5', name: 'claude-haiku-4-5 (included with Blytz)' }],
          },
        },
        primary: 'blytz/claude-haiku-4-5',
      },
    );
  });

  it('points an OpenAI chat-completions provider at the gateway, usage in streams on', () => {
    const { providers, primary } = modelAccessConfig({
      gatewayUrl: 'http://gw.blytz.svc:8090',
      credential,
      model: 'openai/gpt-5-mini',
    });
    expect(providers.blytz).toMatchObject({
      baseUrl: 'http://gw.blytz.svc:8090/openai/v1',
      api: 'openai-completions',
      models: [{ id: 'gpt-5-mini', compat: { supportsUsageInStreaming: true } }],
    });
    expect(primary).toBe('blytz/gpt-5-mini');
  });

  it('refuses a model of another provider or without one', () => {
    expect(() => splitModel('google/gemini')).toThrow(/openai\/<model> or anthropic\/<model>/);
    expect(() => splitModel('gpt-5')).toThrow();
    expect(() => splitModel('openai/')).toThrow();
  });

  for (const model of ['anthropic/claude-haiku-4-5', 'openai/gpt-5-mini']) {
    it(`the pinned openclaw validates a config containing it (${model})`, async () => {
      const path = join(home, `openclaw-${model.split('/')[0]}.json`);
      writeFileSync(path, JSON.stringify(configWith(model), null, 2), { mode: 0o600 });
      const result = await validateOpenClawConfig(path, home);
      expect(result.output).toContain('"valid":true');
      expect(result.valid).toBe(true);
    }, 60_000);
  }

  it('the validator is not a rubber stamp: a misspelt key in the fragment is refused', async () => {
    const config = configWith('anthropic/claude-haiku-4-5');
    const models = config['models'] as { providers: Record<string, Record<string, unknown>> };
    (models.providers['blytz'] as Record<string, unknown>)['baseURL'] = 'http://x';
    const path = join(home, 'openclaw-bad.json');
    writeFileSync(path, JSON.stringify(config), { mode: 0o600 });
    expect((await validateOpenClawConfig(path, home)).valid).toBe(false);
  }, 60_000);
});
