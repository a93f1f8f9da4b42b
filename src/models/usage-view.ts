import { hardLimit, periodOf, type ModelBudget } from '../domain/model-budget.js';
import { totalTokens, type Usage } from '../model-providers/usage.js';

/**
 * What a customer's model use looks like to an operator (`blytz describe`, the admin API) and to
 * the customer (the status page). Pure.
 */
export interface ModelUsageView {
  name: string;
  /**
   * `included`: through the model gateway, on the plan's budget; `own-key`: the customer's own
   * provider key, not metered; `none`: neither (the gateway is off and the customer has no key).
   */
  access: 'included' | 'own-key' | 'none';
  /** `YYYY-MM` (UTC). */
  period: string;
  /** When the month's budget starts again (ISO time). */
  renewsAt: string;
  plan: string;
  includedTokens: number;
  /** Plans that bill overage: the total past which requests are refused. */
  ceilingTokens?: number;
  usedTokens: number;
  inputTokens: number;
  cachedInputTokens: number;
  outputTokens: number;
  requests: number;
  /** Tokens past the included amount (billed for plans with a ceiling). */
  overageTokens: number;
  /** No more requests this month. */
  exhausted: boolean;
}

/** What the admin API answers for a customer's model use: the view and when its credential was issued. */
export type ModelUsageAnswer = ModelUsageView & { credentialIssuedAt?: string };

export interface UsageViewInput {
  name: string;
  plan: string;
  ownKey: boolean;
  /** Whether the model gateway runs (BLYTZ_MODEL_GATEWAY_LISTEN). */
  gatewayOn: boolean;
  budget: ModelBudget;
  usage: Usage & { requests: number };
  now: Date;
}

export function modelUsageView(input: UsageViewInput): ModelUsageView {
  const { start, end } = periodOf(input.now);
  const used = input.ownKey ? 0 : totalTokens(input.usage);
  return {
    name: input.name,
    access: input.ownKey ? 'own-key' : input.gatewayOn ? 'included' : 'none',
    period: start.toISOString().slice(0, 7),
    renewsAt: end.toISOString(),
    plan: input.plan,
    includedTokens: input.budget.includedTokens,
    ...(input.budget.overageCeiling === undefined ? {} : { ceilingTokens: input.budget.overageCeiling }),
    usedTokens: used,
    inputTokens: input.ownKey ? 0 : input.usage.inputTokens,
    cachedInputTokens: input.ownKey ? 0 : input.usage.cachedInputTokens,
    outputTokens: input.ownKey ? 0 : input.usage.outputTokens,
    requests: input.ownKey ? 0 : input.usage.requests,
    overageTokens: Math.max(0, used - input.budget.includedTokens),
    exhausted: !input.ownKey && input.gatewayOn && used >= hardLimit(input.budget),
  };
}

/** The customer's own view (status page): no token split, no plan internals beyond the budget. */
export function customerUsageView(view: ModelUsageView) {
  return {
    access: view.access,
    period: view.period,
    renewsAt: view.renewsAt,
    includedTokens: view.includedTokens,
    ...(view.ceilingTokens === undefined ? {} : { ceilingTokens: view.ceilingTokens }),
    usedTokens: view.usedTokens,
    exhausted: view.exhausted,
  };
}
