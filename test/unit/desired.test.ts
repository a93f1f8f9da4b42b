import { describe, expect, it } from 'vitest';
import { resolveCustomer, TemplateError } from '../../src/controller/customer/desired.js';
import { customerSpecSchema, type Customer, type CustomerSpecInput } from '../../src/domain/customer.js';
import type { ReconcileView } from '../../src/store/store.js';
import { testDesiredDefaults } from '../support/fixtures.js';
import { SimulatedWorkspaces } from '../support/simulated-world.js';
import { modelAccessConfig, type ModelAccessFragment } from '../../src/workspace/model-access-config.js';

const DEFAULTS = testDesiredDefaults({ customerImage: 'blytz/assistant:1' });

function view(spec: Partial<CustomerSpecInput> = {}, secrets: ReconcileView['secrets'] = { telegramBotToken: '1:a' }): ReconcileView {
  const parsed = customerSpecSchema.parse({ email: 'alice@example.com', displayName: 'Alice', instructions: 'hello', ...spec });
  const customer: Customer = {
    name: 'alice',
    labels: {},
    generation: 3,
    resourceVersion: '1',
    createdAt: new Date(0),
    updatedAt: new Date(0),
    cancelledAt: null,
    spec: {
      email: parsed.email,
      displayName: parsed.displayName,
      plan: parsed.plan,
      template: parsed.template,
      state: parsed.state,
      instructions: parsed.instructions,
      telegram: { botTokenSet: secrets.telegramBotToken !== undefined },
      model: { apiKeySet: false },
      paused: parsed.paused,
    },
    status: {},
    billing: {} as Customer['billing'],
  };
  return { customer, secrets, gatewayToken: 'gateway-token' };
}

function resolve(v: ReconcileView, imageOverride?: string, gatewayTokens: string[] = []) {
  const store = {
    gatewayToken: async (name: string) => {
      gatewayTokens.push(name);
      return 'generated-token';
    },
  };
  return resolveCustomer(v, { store, workspaces: new SimulatedWorkspaces(), defaults: DEFAULTS }, imageOverride);
}

describe('resolveCustomer', () => {
  it('needs no template for a customer that runs nothing (pending, cancelled, paused)', async () => {
    for (const spec of [{ state: 'pending' }, { state: 'cancelled' }, { state: 'active', paused: true }] as const) {
      const resolved = await resolve(view({ ...spec, template: 'no-such-template' }));
      expect(resolved.template).toBeUndefined();
      expect(resolved.fleet).toBeUndefined();
      expect(resolved.desired).toMatchObject({ name: 'alice', host: 'alice.blytz.localhost', specHash: '', generation: 3 });
      expect(() => resolved.containerSpec(30001)).toThrow(/nothing runs/);
    }
  });

  it('fails with a TemplateError when an active customer names a template that does not exist', async () => {
    await expect(resolve(view({ template: 'no-such-template' }))).rejects.toBeInstanceOf(TemplateError);
  });

  it('changes only the workspace hash for an instruction or config edit (reloaded in place), the spec hash for what the container runs', async () => {
    const a = await resolve(view());
    const edited = await resolve(view({ instructions: 'something else' }));
    expect(edited.desired.specHash).toBe(a.desired.specHash);
    expect(edited.desired.workspaceHash).not.toBe(a.desired.workspaceHash);
    // openclaw.json is reloaded by the running gateway: a new bot token needs no new container.
    const otherToken = await resolve(view({}, { telegramBotToken: '2:b' }));
    expect(otherToken.desired.specHash).toBe(a.desired.specHash);
    expect(otherToken.desired.workspaceHash).not.toBe(a.desired.workspaceHash);
    const otherPlan = await resolve(view({ plan: 'pro' }));
    expect(otherPlan.desired.specHash).not.toBe(a.desired.specHash);
  });

  it('tells a fleet change (same own hash) from the customer’s own (other own hash)', async () => {
    const a = await resolve(view());
    const newImage = await resolve(view(), 'blytz/assistant:2');
    expect(newImage.desired.specHash).not.toBe(a.desired.specHash);
    expect(newImage.desired.ownHash).toBe(a.desired.ownHash);
    const ownChange = await resolve(view({ plan: 'pro' }));
    expect(ownChange.desired.ownHash).not.toBe(a.desired.ownHash);
    expect(a.fleet).toMatchObject({ key: 'personal-assistant/personal', image: DEFAULTS.customerImage, startTimeoutSeconds: 120 });
    expect(newImage.fleet?.fingerprint).not.toBe(a.fleet?.fingerprint);
  });

  it('builds the container spec on the given port, the next slot included, without secrets in its env', async () => {
    const resolved = await resolve(view(), 'blytz/assistant:2');
    const spec = resolved.containerSpec(30001);
    expect(spec).toMatchObject({
      customer: 'alice',
      image: 'blytz/assistant:2',
      containerPort: 18789,
      hostPort: 30001,
      specHash: resolved.desired.specHash,
      ownHash: resolved.desired.ownHash,
      generation: 3,
    });
    expect(spec.slot).toBeUndefined();
    expect(resolved.containerSpec(30002, 'next')).toMatchObject({ hostPort: 30002, slot: 'next' });
    expect(JSON.stringify(spec.env)).not.toContain('1:a');
  });

  it('asks the store for a gateway token only when the customer has none yet', async () => {
    const asked: string[] = [];
    await resolve(view(), undefined, asked);
    expect(asked).toEqual([]);
    await resolve({ ...view(), gatewayToken: undefined }, undefined, asked);
    expect(asked).toEqual(['alice']);
  });

  it("says where the model comes from: the customer's own key, included access, or none", async () => {
    const withAccess = (fragment: ModelAccessFragment | undefined) =>
      resolveCustomer(view(), {
        store: { gatewayToken: async () => 'generated-token' },
        workspaces: new SimulatedWorkspaces(),
        defaults: DEFAULTS,
        modelAccess: async () => fragment,
      });
    const fragment = modelAccessConfig({
      gatewayUrl: 'http://172.17.0.1:8090',
      credential: 'blytz-mk-test',
      model: 'anthropic/claude-haiku-4-5',
    });
    expect((await withAccess(fragment)).desired.modelSource).toBe('included');
    // The gateway is off (or without its platform key): nothing to render, no model.
    expect((await withAccess(undefined)).desired.modelSource).toBe('none');
    // A controller given no model access to manage claims nothing.
    expect((await resolve(view())).desired.modelSource).toBeUndefined();
    expect((await resolve(view({}, { telegramBotToken: '1:a', modelApiKey: 'sk-own' }))).desired.modelSource).toBe('own-key');
  });
});
