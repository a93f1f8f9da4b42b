import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  DEFAULT_MODEL_BUDGETS,
  decide,
  hardLimit,
  overageOf,
  parseModelBudgets,
  periodKey,
  periodOf,
} from '../../src/domain/model-budget.js';

describe('periods', () => {
  it('are calendar months in UTC', () => {
    expect(periodOf(new Date('2026-12-31T23:59:59.999Z'))).toEqual({
      start: new Date('2026-12-01T00:00:00Z'),
      end: new Date('2027-01-01T00:00:00Z'),
    });
    expect(periodKey(new Date('2027-01-01T00:00:00Z'))).toBe('2027-01-01');
    expect(periodKey(new Date('2028-02-29T12:00:00Z'))).toBe('2028-02-01');
  });

  it('every instant lies in its own period (property)', () => {
    fc.assert(
      fc.property(fc.date({ min: new Date('2000-01-01'), max: new Date('2100-01-01'), noInvalidDate: true }), (at) => {
        const { start, end } = periodOf(at);
        expect(start.getTime()).toBeLessThanOrEqual(at.getTime());
        expect(at.getTime()).toBeLessThan(end.getTime());
        expect(periodOf(end).start).toEqual(end);
      }),
    );
  });
});

describe('decide', () => {
  const now = new Date('2026-12-06T10:00:00Z');

  it('allows under the included tokens and refuses at them, until the next month', () => {
    const budget = { includedTokens: 1000 };
    expect(decide(budget, 999, now)).toEqual({ allowed: true });
    expect(decide(budget, 1000, now)).toEqual({ allowed: false, limit: 1000, renewsAt: new Date('2027-01-01T00:00:00Z') });
  });

  it('a plan that bills overage goes on to its ceiling', () => {
    const budget = { includedTokens: 1000, overageCeiling: 5000 };
    expect(decide(budget, 1000, now).allowed).toBe(true);
    expect(decide(budget, 4999, now).allowed).toBe(true);
    expect(decide(budget, 5000, now).allowed).toBe(false);
    expect(hardLimit(budget)).toBe(5000);
  });
});

describe('overageOf', () => {
  it('is zero for a plan that does not bill overage', () => {
    expect(overageOf({ includedTokens: 10 }, 5, 100)).toBe(0);
  });

  it('counts only the part past the included tokens', () => {
    const budget = { includedTokens: 100, overageCeiling: 1000 };
    expect(overageOf(budget, 50, 40)).toBe(0);
    expect(overageOf(budget, 90, 40)).toBe(30);
    expect(overageOf(budget, 200, 40)).toBe(40);
  });

  it('summed over a month in any order, equals the total past the included tokens (property)', () => {
    fc.assert(
      fc.property(fc.nat({ max: 10_000 }), fc.array(fc.nat({ max: 5_000 }), { maxLength: 50 }), (included, requests) => {
        const budget = { includedTokens: included, overageCeiling: included + 1_000_000 };
        let total = 0;
        let billed = 0;
        for (const tokens of requests) {
          billed += overageOf(budget, total, tokens);
          total += tokens;
        }
        expect(billed).toBe(Math.max(0, total - included));
      }),
    );
  });
});

describe('parseModelBudgets', () => {
  it('keeps the defaults for plans it does not name', () => {
    expect(parseModelBudgets(undefined)).toEqual(DEFAULT_MODEL_BUDGETS);
    expect(parseModelBudgets('personal=500')).toEqual({ ...DEFAULT_MODEL_BUDGETS, personal: { includedTokens: 500 } });
    expect(parseModelBudgets(' pro=10/20 , personal=0')).toEqual({
      personal: { includedTokens: 0 },
      pro: { includedTokens: 10, overageCeiling: 20 },
    });
  });

  it('names what is wrong', () => {
    expect(() => parseModelBudgets('gold=5')).toThrow(/"gold" is not a plan/);
    expect(() => parseModelBudgets('personal=lots')).toThrow(/not plan=tokens/);
    expect(() => parseModelBudgets('pro=100/50')).toThrow(/ceiling must be at least/);
    expect(() => parseModelBudgets('pro=99999999999999999999')).toThrow(/too large/);
  });
});
