import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { Desired } from '../../src/controller/customer/plan.js';
import { computeStatus } from '../../src/controller/customer/status.js';
import { MODEL_PROVIDERS } from '../../src/domain/customer.js';
import { signupModelErrors } from '../../src/http/public-api.js';
import { warningTexts } from '../../src/cli/client.js';
import {
  includedModelAccess,
  noModelWarning,
  reliesOnIncludedAccess,
  type IncludedModelConfig,
} from '../../src/models/included-access.js';
import { converged, desired as convergedDesired, HOST } from '../support/planning.js';

/**
 * Issue 23 on a default install: "Blytz default" (included model access) is offered, and a
 * signup without a key of its own accepted, only where the model gateway can serve it; customers
 * already relying on it where it cannot get a condition saying so.
 */

const ON: IncludedModelConfig = {
  BLYTZ_MODEL_GATEWAY_LISTEN: '172.17.0.1:8090',
  BLYTZ_MODEL_DEFAULT: 'anthropic/claude-haiku-4-5',
  BLYTZ_ANTHROPIC_API_KEY: 'sk-ant-platform',
  BLYTZ_OPENAI_API_KEY: undefined,
};

describe('includedModelAccess', () => {
  it('is offered with a listen address and the default model provider’s platform key', () => {
    expect(includedModelAccess(ON)).toEqual({ offered: true });
    expect(
      includedModelAccess({ ...ON, BLYTZ_MODEL_DEFAULT: 'openai/gpt-5-mini', BLYTZ_OPENAI_API_KEY: 'sk-openai' }),
    ).toEqual({ offered: true });
  });

  it('is not offered without a listen address, and says so', () => {
    expect(includedModelAccess({ ...ON, BLYTZ_MODEL_GATEWAY_LISTEN: undefined })).toEqual({
      offered: false,
      reason: 'the model gateway is off (BLYTZ_MODEL_GATEWAY_LISTEN is unset)',
    });
  });

  it("is not offered without the default model provider's key (another provider's key does not count)", () => {
    const none = includedModelAccess({ ...ON, BLYTZ_ANTHROPIC_API_KEY: undefined, BLYTZ_OPENAI_API_KEY: 'sk-openai' });
    expect(none.offered).toBe(false);
    expect(!none.offered && none.reason).toContain('BLYTZ_ANTHROPIC_API_KEY or BLYTZ_ANTHROPIC_API_KEY_FILE is unset');
    expect(includedModelAccess({ ...ON, BLYTZ_MODEL_DEFAULT: 'openai/gpt-5-mini' }).offered).toBe(false);
  });

  it('property: offered exactly when there is a listen address and the key of the default model’s provider', () => {
    const maybe = (value: fc.Arbitrary<string>) => fc.option(value, { nil: undefined });
    fc.assert(
      fc.property(
        maybe(fc.constantFrom('172.17.0.1:8090', '10.0.0.1:1')),
        fc.constantFrom('anthropic/claude-haiku-4-5', 'openai/gpt-5-mini'),
        maybe(fc.constant('sk-ant')),
        maybe(fc.constant('sk-openai')),
        (listen, model, anthropic, openai) => {
          const result = includedModelAccess({
            BLYTZ_MODEL_GATEWAY_LISTEN: listen,
            BLYTZ_MODEL_DEFAULT: model,
            BLYTZ_ANTHROPIC_API_KEY: anthropic,
            BLYTZ_OPENAI_API_KEY: openai,
          });
          const key = model.startsWith('openai/') ? openai : anthropic;
          expect(result.offered).toBe(listen !== undefined && key !== undefined);
          // A reason never carries a key's value.
          if (!result.offered) expect(result.reason).not.toMatch(/sk-/);
        },
      ),
    );
  });
});

describe('reliesOnIncludedAccess', () => {
  it('is true only without a key of its own, inline or as a Secret', () => {
    expect(reliesOnIncludedAccess({ apiKeySet: false })).toBe(true);
    expect(reliesOnIncludedAccess({ apiKeySet: true })).toBe(false);
    expect(reliesOnIncludedAccess({ apiKeySet: false, apiKeySecretRef: { name: 'keys', key: 'anthropic' } })).toBe(false);
  });
});

describe('signupModelErrors', () => {
  const notOffered = { offered: false as const, reason: 'the model gateway is off' };

  it('accepts a signup without a key of its own when included access is offered', () => {
    expect(signupModelErrors({}, { offered: true })).toEqual([]);
    expect(signupModelErrors({ modelProvider: 'openai' }, { offered: true })).toEqual([]);
  });

  it('refuses "Blytz default" where it is not offered, naming the fields to fill in', () => {
    expect(signupModelErrors({}, notOffered)).toEqual([
      { field: 'modelProvider', message: expect.stringMatching(/^is required: this server does not include model access/) },
      { field: 'modelApiKey', message: expect.stringMatching(/^is required: this server does not include model access/) },
    ]);
    // A provider chosen but no key: still no model.
    expect(signupModelErrors({ modelProvider: 'anthropic' }, notOffered).map((e) => e.field)).toEqual(['modelApiKey']);
  });

  it('property: with a key of its own a signup is always accepted; without one, exactly when offered', () => {
    fc.assert(
      fc.property(
        fc.option(fc.constantFrom(...MODEL_PROVIDERS), { nil: undefined }),
        fc.option(fc.string({ minLength: 1, maxLength: 20 }), { nil: undefined }),
        fc.boolean(),
        (modelProvider, modelApiKey, offered) => {
          const errors = signupModelErrors({ modelProvider, modelApiKey }, offered ? { offered: true } : notOffered);
          expect(errors.length === 0).toBe(offered || modelApiKey !== undefined);
        },
      ),
    );
  });
});

describe('the ModelReady condition', () => {
  const statusOf = (overrides: Partial<Desired>) => {
    const d = convergedDesired({ generation: 2, ...overrides });
    return computeStatus({
      name: 'alice',
      generation: 2,
      state: d.state,
      paused: d.paused,
      desired: d,
      observed: converged(),
      previous: {},
      url: `https://${HOST}`,
      now: new Date('2026-01-02T03:04:05.000Z'),
    });
  };
  const modelReady = (overrides: Partial<Desired>) => statusOf(overrides).conditions?.find((c) => c.type === 'ModelReady');

  it('is False, with why, for an active customer that has no model (no key, included access not offered)', () => {
    const status = statusOf({ modelSource: 'none' });
    expect(status.conditions?.find((c) => c.type === 'ModelReady')).toMatchObject({
      status: 'False',
      reason: 'NoModelAccess',
      message: expect.stringContaining('does not offer included model access'),
    });
    // The assistant runs and is reachable: Ready says so, ModelReady says it cannot answer.
    expect(status.phase).toBe('Ready');
  });

  it('is absent with a key of its own or with included access, and while suspended or paused', () => {
    expect(modelReady({ modelSource: 'own-key' })).toBeUndefined();
    expect(modelReady({ modelSource: 'included' })).toBeUndefined();
    expect(modelReady({ modelSource: 'none', state: 'suspended' })).toBeUndefined();
    expect(modelReady({ modelSource: 'none', paused: true })).toBeUndefined();
  });
});

describe('the warning an operator gets when applying a customer that will have no model', () => {
  const notOffered = { offered: false as const, reason: 'the model gateway is off (BLYTZ_MODEL_GATEWAY_LISTEN is unset)' };
  const customer = (state: string, model: { apiKeySet?: boolean; apiKeySecretRef?: unknown }) => ({
    name: 'alice',
    spec: { state, model },
  });

  it('names the customer and why, for one without a key where included access is not offered', () => {
    expect(noModelWarning(customer('active', { apiKeySet: false }), notOffered)).toBe(
      'customer/alice has no model key of its own and this server does not offer included model access (the model gateway is off (BLYTZ_MODEL_GATEWAY_LISTEN is unset)): its assistant will have no model until spec.model has a key or the model gateway serves',
    );
    expect(noModelWarning(customer('pending', { apiKeySet: false }), notOffered)).toBeDefined();
  });

  it('says nothing with a key of its own, where included access is offered, or for a cancelled customer', () => {
    expect(noModelWarning(customer('active', { apiKeySet: true }), notOffered)).toBeUndefined();
    expect(noModelWarning(customer('active', { apiKeySecretRef: { name: 'k', key: 'k' } }), notOffered)).toBeUndefined();
    expect(noModelWarning(customer('active', { apiKeySet: false }), { offered: true })).toBeUndefined();
    expect(noModelWarning(customer('cancelled', { apiKeySet: false }), notOffered)).toBeUndefined();
  });

  it('property: a Warning header the admin API writes reads back as its text in the CLI, one or several', () => {
    const printable = fc.string({ unit: fc.constantFrom(...' !"#()/:=\\_abcXYZ019'.split('')), maxLength: 60 });
    fc.assert(
      fc.property(fc.array(printable, { minLength: 1, maxLength: 3 }), (texts) => {
        const header = texts.map((t) => `299 - ${JSON.stringify(t)}`).join(', ');
        expect(warningTexts(header)).toEqual(texts);
      }),
    );
    expect(warningTexts(null)).toEqual([]);
  });
});
