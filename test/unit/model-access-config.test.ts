import { describe, expect, it } from 'vitest';
import { GATEWAY_PROVIDER_ID, modelAccessConfig, splitModel } from '../../src/workspace/model-access-config.js';

/**
 * The openclaw.json fragment for included model access. That the pinned OpenClaw accepts a
 * customer's config with it: test/integration/model-access-config-validate.test.ts.
 */

const credential = `blytz-mk-${'a'.repeat(43)}`;

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
});
