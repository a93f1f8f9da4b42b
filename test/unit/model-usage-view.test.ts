import { describe, expect, it } from 'vitest';
import { describeModelUsage } from '../../src/cli/describe.js';
import { customerUsageView, modelUsageView } from '../../src/models/usage-view.js';

const now = new Date('2026-12-06T10:00:00Z');
const usage = { inputTokens: 1_500_000, cachedInputTokens: 400_000, outputTokens: 600_000, requests: 321 };

describe('modelUsageView', () => {
  it("this month's use against the plan's budget", () => {
    expect(
      modelUsageView({
        name: 'ada',
        plan: 'personal',
        ownKey: false,
        gatewayOn: true,
        budget: { includedTokens: 2_000_000 },
        usage,
        now,
      }),
    ).toEqual({
      name: 'ada',
      access: 'included',
      period: '2026-12',
      renewsAt: '2027-01-01T00:00:00.000Z',
      plan: 'personal',
      includedTokens: 2_000_000,
      usedTokens: 2_100_000,
      inputTokens: 1_500_000,
      cachedInputTokens: 400_000,
      outputTokens: 600_000,
      requests: 321,
      overageTokens: 100_000,
      exhausted: true,
    });
  });

  it('a plan that bills overage is exhausted only at its ceiling; own key is not metered', () => {
    const pro = modelUsageView({
      name: 'b',
      plan: 'pro',
      ownKey: false,
      gatewayOn: true,
      budget: { includedTokens: 1_000_000, overageCeiling: 5_000_000 },
      usage,
      now,
    });
    expect(pro).toMatchObject({ ceilingTokens: 5_000_000, overageTokens: 1_100_000, exhausted: false });
    expect(
      modelUsageView({ name: 'c', plan: 'pro', ownKey: true, gatewayOn: true, budget: { includedTokens: 1 }, usage, now }),
    ).toMatchObject({
      access: 'own-key',
      usedTokens: 0,
      requests: 0,
      exhausted: false,
    });
  });

  it('without the gateway and without a key of its own there is no access', () => {
    expect(
      modelUsageView({
        name: 'n',
        plan: 'personal',
        ownKey: false,
        gatewayOn: false,
        budget: { includedTokens: 10 },
        usage,
        now,
      }),
    ).toMatchObject({
      access: 'none',
      exhausted: false,
    });
    expect(
      describeModelUsage(
        modelUsageView({
          name: 'n',
          plan: 'personal',
          ownKey: false,
          gatewayOn: false,
          budget: { includedTokens: 10 },
          usage,
          now,
        }),
        now,
      ),
    ).toContain('none (the model gateway is off');
  });

  it("the customer's view leaves out the token split and the plan", () => {
    const view = customerUsageView(
      modelUsageView({
        name: 'ada',
        plan: 'personal',
        ownKey: false,
        gatewayOn: true,
        budget: { includedTokens: 2_000_000 },
        usage,
        now,
      }),
    );
    expect(Object.keys(view).sort()).toEqual(['access', 'exhausted', 'includedTokens', 'period', 'renewsAt', 'usedTokens']);
  });
});

describe('describeModelUsage', () => {
  it('reads like kubectl describe', () => {
    const text = describeModelUsage(
      {
        ...modelUsageView({
          name: 'b',
          plan: 'pro',
          ownKey: false,
          gatewayOn: true,
          budget: { includedTokens: 1_000_000, overageCeiling: 5_000_000 },
          usage,
          now,
        }),
        credentialIssuedAt: '2026-12-01T00:00:00.000Z',
      },
      now,
    );
    expect(text).toContain('Model Usage:');
    expect(text).toMatch(/Used: +2,100,000 of 1,000,000 tokens included \(210%\)/);
    expect(text).toMatch(/Input \/ Output: +1,500,000 \(400,000 cached\) \/ 600,000/);
    expect(text).toMatch(/Overage: +1,100,000 tokens billed \(ceiling 5,000,000\)/);
    expect(text).toMatch(/Period: +2026-12 \(renews 2027-01-01T00:00:00.000Z, in 25d\)/);
    expect(text).toMatch(/Model Key Issued: +2026-12-01T00:00:00.000Z \(5d ago\)/);
  });

  it('an exhausted budget and an own key say so', () => {
    const exhausted = describeModelUsage(
      modelUsageView({ name: 'a', plan: 'personal', ownKey: false, gatewayOn: true, budget: { includedTokens: 10 }, usage, now }),
      now,
    );
    expect(exhausted).toContain('EXHAUSTED');
    expect(exhausted).toMatch(/Model Key Issued: +<none>/);
    expect(
      describeModelUsage(
        modelUsageView({
          name: 'a',
          plan: 'personal',
          ownKey: true,
          gatewayOn: true,
          budget: { includedTokens: 10 },
          usage,
          now,
        }),
        now,
      ),
    ).toContain('own API key (not metered)');
  });
});
