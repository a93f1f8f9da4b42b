import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  applyOwnedConfig,
  buildOpenClawConfig,
  ownedProjection,
  MODEL_PROVIDER_CONFIG,
  OWNED_PATHS,
  type JsonObject,
  type OpenClawConfigInput,
} from '../../src/workspace/openclaw-config.js';

const BOT_TOKEN = '123456789:AAbbCCddEEffGGhhIIjjKKllMMnnOOppQQr';

function input(overrides: Partial<OpenClawConfigInput> = {}): OpenClawConfigInput {
  return {
    port: 18789,
    gatewayToken: 'gw-token',
    workspacePath: '/home/node/.openclaw/workspace',
    publicOrigins: ['https://alice.blytz.localhost'],
    trustedProxies: ['172.17.0.1'],
    telegramBotToken: BOT_TOKEN,
    ...overrides,
  };
}

/** What OpenClaw 2026.9.6 writes into its own config: key migrations, metadata, the paired owner. */
const writtenByOpenClaw: JsonObject = {
  meta: { lastTouchedVersion: '2026.9.6', lastTouchedAt: '2026-12-06T09:00:00.000Z' },
  commands: { ownerAllowFrom: ['telegram:4242'] },
  channels: { telegram: { allowFrom: ['4242'], enabled: true, botToken: BOT_TOKEN, dmPolicy: 'pairing' } },
  gateway: { controlUi: { basePath: '/' }, auth: { mode: 'token', token: 'gw-token' } },
};

describe('openclaw.json ownership (the controller enforces its fields and keeps the gateway\'s)', () => {
  it('keeps everything OpenClaw wrote while enforcing our fields', () => {
    const owned = buildOpenClawConfig(input({ gatewayToken: 'rotated' }));
    const merged = applyOwnedConfig(writtenByOpenClaw, owned);
    expect(merged.meta).toEqual(writtenByOpenClaw.meta);
    expect(merged.commands).toEqual({ ownerAllowFrom: ['telegram:4242'] });
    expect((merged.channels as JsonObject).telegram).toEqual({
      allowFrom: ['4242'],
      enabled: true,
      botToken: BOT_TOKEN,
      dmPolicy: 'pairing',
    });
    expect((merged.gateway as JsonObject).controlUi).toEqual({ basePath: '/', allowedOrigins: ['https://alice.blytz.localhost'] });
    expect((merged.gateway as JsonObject).auth).toEqual({ mode: 'token', token: 'rotated' });
    // The input is not changed.
    expect((writtenByOpenClaw.gateway as JsonObject).auth).toEqual({ mode: 'token', token: 'gw-token' });
  });

  it('a removed bot token turns the channel off and deletes our keys, keeping the gateway\'s in the block', () => {
    const merged = applyOwnedConfig(writtenByOpenClaw, buildOpenClawConfig(input({ telegramBotToken: undefined })));
    expect((merged.channels as JsonObject).telegram).toEqual({ allowFrom: ['4242'], enabled: false });
  });

  it('a model key of the customer\'s own goes into its provider entry (hot-reloaded), never into env', () => {
    for (const [provider, { defaultModel }] of Object.entries(MODEL_PROVIDER_CONFIG)) {
      const config = buildOpenClawConfig(input({ modelApiKey: `key-${provider}`, modelProvider: provider }));
      expect(config.models).toEqual({ providers: { [provider]: { apiKey: `key-${provider}` } } });
      expect(config.env).toBeUndefined();
      expect(((config.agents as JsonObject).defaults as JsonObject).model).toEqual({ primary: defaultModel });
    }
    // Without a provider the key is Anthropic's.
    expect(buildOpenClawConfig(input({ modelApiKey: 'sk-0' })).models).toEqual({ providers: { anthropic: { apiKey: 'sk-0' } } });
  });

  it('a removed model key deletes it and the model we chose, pruning what it emptied', () => {
    const withKey = applyOwnedConfig({}, buildOpenClawConfig(input({ modelApiKey: 'sk-1', modelProvider: 'anthropic' })));
    expect(withKey.models).toEqual({ providers: { anthropic: { apiKey: 'sk-1' } } });
    const without = applyOwnedConfig(withKey, buildOpenClawConfig(input()));
    expect(without.models).toBeUndefined();
    expect((without.agents as JsonObject).defaults).toEqual({ workspace: '/home/node/.openclaw/workspace' });
    // What the operator or OpenClaw put in the same provider entry stays; so does a variable of theirs.
    const shared = applyOwnedConfig(
      { env: { vars: { TZ: 'UTC' } }, models: { providers: { anthropic: { apiKey: 'sk-1', timeoutSeconds: 30 } } } },
      buildOpenClawConfig(input()),
    );
    expect(shared.env).toEqual({ vars: { TZ: 'UTC' } });
    expect(shared.models).toEqual({ providers: { anthropic: { timeoutSeconds: 30 } } });
  });

  it('a key an older render left in env.vars is deleted (OpenClaw would prefer it to the provider entry\'s)', () => {
    const older = { env: { vars: { ANTHROPIC_API_KEY: 'sk-old', TZ: 'UTC' } } };
    const merged = applyOwnedConfig(older, buildOpenClawConfig(input({ modelApiKey: 'sk-new', modelProvider: 'anthropic' })));
    expect(merged.env).toEqual({ vars: { TZ: 'UTC' } });
    expect(merged.models).toEqual({ providers: { anthropic: { apiKey: 'sk-new' } } });
  });

  it('an owned field the assistant changed is put back; a scalar squatting on our object gives way', () => {
    const tampered = { ...writtenByOpenClaw, gateway: 'hijacked', channels: { telegram: { botToken: 'other', dmPolicy: 'open' } } };
    const merged = applyOwnedConfig(tampered, buildOpenClawConfig(input()));
    expect(ownedProjection(merged)).toEqual(ownedProjection(buildOpenClawConfig(input())));
  });

  it('refuses an unknown provider by name', () => {
    expect(() => buildOpenClawConfig(input({ modelApiKey: 'k', modelProvider: 'acme' }))).toThrow(/unknown model provider "acme"/);
  });

  // Property: for any config on disk and any desired input, the merge (1) makes our fields exactly
  // the desired ones, (2) keeps every field outside our paths as it was, (3) is idempotent, so a
  // re-render that changes nothing of ours writes the same bytes.
  const json = fc.letrec((tie) => ({
    value: fc.oneof(
      { depthSize: 'small' },
      fc.string(),
      fc.integer(),
      fc.boolean(),
      fc.constant(null),
      fc.array(tie('value'), { maxLength: 3 }),
      tie('object'),
    ),
    object: fc.dictionary(fc.oneof(fc.constantFrom('gateway', 'channels', 'telegram', 'env', 'vars', 'agents', 'defaults', 'auth', 'model', 'models', 'providers', 'anthropic', 'apiKey'), fc.string({ maxLength: 6 })), tie('value'), { maxKeys: 4 }),
  })).object as fc.Arbitrary<JsonObject>;
  const inputs = fc.record({
    gatewayToken: fc.string({ minLength: 1, maxLength: 12 }),
    telegramBotToken: fc.option(fc.constant(BOT_TOKEN), { nil: undefined }),
    modelApiKey: fc.option(fc.string({ minLength: 1, maxLength: 8 }), { nil: undefined }),
    modelProvider: fc.constantFrom('anthropic', 'openai', 'openrouter', 'google'),
    port: fc.integer({ min: 1, max: 65535 }),
  });

  /** Empty objects dropped, so "emptied by taking our fields out" and "was empty" compare equal. */
  const pruneEmpty = (value: unknown): unknown => {
    if (typeof value !== 'object' || value === null || Array.isArray(value)) return value;
    const entries = Object.entries(value)
      .map(([key, child]) => [key, pruneEmpty(child)] as const)
      .filter(([, child]) => !(typeof child === 'object' && child !== null && !Array.isArray(child) && Object.keys(child).length === 0));
    return Object.fromEntries(entries);
  };
  /** A config with every owned path taken out. */
  const outsideOwned = (config: JsonObject): unknown => pruneEmpty(applyOwnedConfig(config, {}));

  it('property: our fields become the desired ones, the rest is kept, and merging twice changes nothing', () => {
    fc.assert(
      fc.property(json, inputs, (onDisk, desired) => {
        const owned = buildOpenClawConfig(input(desired));
        const merged = applyOwnedConfig(onDisk, owned);
        expect(ownedProjection(merged)).toEqual(ownedProjection(owned));
        expect(applyOwnedConfig(merged, owned)).toEqual(merged);
        // Outside our paths nothing changed (comparing with both sides' owned paths taken out,
        // except where an owned path had to replace a scalar on its way).
        const squatted = OWNED_PATHS.some((path) =>
          path.slice(0, -1).some((_, depth) => {
            let node: unknown = onDisk;
            for (const key of path.slice(0, depth + 1)) {
              if (typeof node !== 'object' || node === null || Array.isArray(node)) return false;
              node = (node as JsonObject)[key];
            }
            return node !== undefined && (typeof node !== 'object' || node === null || Array.isArray(node));
          }),
        );
        if (!squatted) expect(outsideOwned(merged)).toEqual(outsideOwned(onDisk));
      }),
      { numRuns: 300 },
    );
  });
});

describe('included model access in openclaw.json', () => {
  const modelAccess = {
    providers: {
      blytz: { baseUrl: 'http://10.199.0.1:8090/anthropic', apiKey: 'blytz-mk-1', api: 'anthropic-messages' as const, models: [{ id: 'claude-haiku-4-5', name: 'Haiku' }] },
    },
    primary: 'blytz/claude-haiku-4-5',
  };

  it('points the customer at the model gateway when they have no key of their own; their own key wins', () => {
    const included = buildOpenClawConfig(input({ modelAccess }));
    expect(included.models).toEqual({ providers: modelAccess.providers });
    expect((included.agents as JsonObject).defaults).toMatchObject({ model: { primary: 'blytz/claude-haiku-4-5' } });
    const own = buildOpenClawConfig(input({ modelAccess, modelApiKey: 'sk-own', modelProvider: 'openai' }));
    expect(own.models).toEqual({ providers: { openai: { apiKey: 'sk-own' } } });
    expect((own.agents as JsonObject).defaults).toMatchObject({ model: { primary: 'openai/gpt-5.4' } });
    // Switching from one to the other leaves nothing of the first behind.
    expect(applyOwnedConfig(applyOwnedConfig({}, own), included).models).toEqual({ providers: modelAccess.providers });
    expect(applyOwnedConfig(applyOwnedConfig({}, included), own).models).toEqual({ providers: { openai: { apiKey: 'sk-own' } } });
  });

  it('a rotated or revoked credential replaces or removes our provider, keeping providers OpenClaw or an operator added', () => {
    const onDisk = applyOwnedConfig({ models: { providers: { ollama: { baseUrl: 'http://x' } } } }, buildOpenClawConfig(input({ modelAccess })));
    expect(Object.keys((onDisk.models as { providers: JsonObject }).providers).sort()).toEqual(['blytz', 'ollama']);
    const removed = applyOwnedConfig(onDisk, buildOpenClawConfig(input()));
    expect(removed.models).toEqual({ providers: { ollama: { baseUrl: 'http://x' } } });
  });
});
