import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  applyOwnedConfig,
  buildOpenClawConfig,
  ownedProjection,
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

  it('a removed model key deletes its variable and the model we chose, pruning what it emptied', () => {
    const withKey = applyOwnedConfig({}, buildOpenClawConfig(input({ modelApiKey: 'sk-1', modelProvider: 'anthropic' })));
    expect(withKey.env).toEqual({ vars: { ANTHROPIC_API_KEY: 'sk-1' } });
    const without = applyOwnedConfig(withKey, buildOpenClawConfig(input()));
    expect(without.env).toBeUndefined();
    expect((without.agents as JsonObject).defaults).toEqual({ workspace: '/home/node/.openclaw/workspace' });
    // A variable the operator or OpenClaw put there stays.
    const shared = applyOwnedConfig({ env: { vars: { TZ: 'UTC' } } }, buildOpenClawConfig(input()));
    expect(shared.env).toEqual({ vars: { TZ: 'UTC' } });
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
    object: fc.dictionary(fc.oneof(fc.constantFrom('gateway', 'channels', 'telegram', 'env', 'vars', 'agents', 'defaults', 'auth', 'model'), fc.string({ maxLength: 6 })), tie('value'), { maxKeys: 4 }),
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
