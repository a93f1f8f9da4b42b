import { PLAN_NAMES, type PlanName } from './customer.js';

/**
 * The model use a plan includes each calendar month (UTC), and what happens past it. Pure.
 *
 * A budget counts tokens (input plus output, as model-providers/usage.ts normalises them) of the platform's
 * default model. Two kinds:
 * - included only (`overageCeiling` absent): past `includedTokens` the gateway answers as the
 *   provider does for an exhausted quota, until the month ends;
 * - billed overage (`overageCeiling` set): past `includedTokens` requests still go through and the
 *   tokens beyond are reported to Stripe as meter events; at `overageCeiling` the quota answer
 *   comes, so a runaway agent cannot run up an unbounded bill.
 *
 * The check is made before a request is forwarded: a request started under the budget finishes
 * even if it crosses it, so a month may end a little over (by at most the requests in flight).
 */

export interface ModelBudget {
  includedTokens: number;
  /** Set: the plan bills tokens past `includedTokens`, up to this total. */
  overageCeiling?: number;
}

export const DEFAULT_MODEL_BUDGETS: Readonly<Record<PlanName, ModelBudget>> = {
  personal: { includedTokens: 2_000_000 },
  pro: { includedTokens: 10_000_000, overageCeiling: 100_000_000 },
};

/** The first instant of the month (UTC) `at` falls in, and of the next one. */
export function periodOf(at: Date): { start: Date; end: Date } {
  const start = new Date(Date.UTC(at.getUTCFullYear(), at.getUTCMonth(), 1));
  const end = new Date(Date.UTC(at.getUTCFullYear(), at.getUTCMonth() + 1, 1));
  return { start, end };
}

/** `YYYY-MM-01`, the key usage is stored under (a Postgres `date`). */
export function periodKey(at: Date): string {
  return periodOf(at).start.toISOString().slice(0, 10);
}

/** The total past which requests are refused. */
export function hardLimit(budget: ModelBudget): number {
  return budget.overageCeiling ?? budget.includedTokens;
}

export type BudgetDecision = { allowed: true } | { allowed: false; limit: number; renewsAt: Date };

/** May a request start, with `usedTokens` already counted this month? */
export function decide(budget: ModelBudget, usedTokens: number, now: Date): BudgetDecision {
  const limit = hardLimit(budget);
  if (usedTokens < limit) return { allowed: true };
  return { allowed: false, limit, renewsAt: periodOf(now).end };
}

/**
 * Tokens of one request that fall past the included amount, given the month's total before it:
 * what is reported to Stripe for a plan that bills overage (0 for one that does not). Summed over
 * a month's requests in any order, this is exactly max(0, total - included).
 */
export function overageOf(budget: ModelBudget, before: number, added: number): number {
  if (budget.overageCeiling === undefined) return 0;
  const over = (total: number) => Math.max(0, total - budget.includedTokens);
  return over(before + added) - over(before);
}

/**
 * BLYTZ_MODEL_BUDGETS: `plan=included[/ceiling]` pairs, comma-separated, overriding the defaults
 * plan by plan, e.g. `personal=1000000,pro=5000000/50000000`. Throws with a message naming the bad part.
 */
export function parseModelBudgets(text: string | undefined): Record<PlanName, ModelBudget> {
  const budgets: Record<PlanName, ModelBudget> = { ...DEFAULT_MODEL_BUDGETS };
  if (!text) return budgets;
  for (const part of text
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean)) {
    const match = /^([a-z0-9-]+)=(\d+)(?:\/(\d+))?$/.exec(part);
    if (!match) throw new Error(`"${part}" is not plan=tokens or plan=tokens/ceiling`);
    const [, plan, included, ceiling] = match as unknown as [string, string, string, string | undefined];
    if (!(PLAN_NAMES as readonly string[]).includes(plan)) throw new Error(`"${plan}" is not a plan (${PLAN_NAMES.join(', ')})`);
    const budget: ModelBudget = { includedTokens: Number(included) };
    if (!Number.isSafeInteger(budget.includedTokens)) throw new Error(`"${part}": the token count is too large`);
    if (ceiling !== undefined) {
      budget.overageCeiling = Number(ceiling);
      if (!Number.isSafeInteger(budget.overageCeiling) || budget.overageCeiling < budget.includedTokens) {
        throw new Error(`"${part}": the ceiling must be at least the included tokens`);
      }
    }
    budgets[plan as PlanName] = budget;
  }
  return budgets;
}
