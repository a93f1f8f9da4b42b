import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { PLANS, startTimeoutSeconds, type PlanResources } from '../../src/domain/customer.js';
import { pairingTimeoutMs } from '../../src/controller/customer/pairing.js';

/** A plan with `nanoCpus` of CPU and the personal plan's other limits. */
const atCpu = (nanoCpus: number): PlanResources => ({ ...PLANS.personal, nanoCpus });

describe('start and pairing timeouts scale with the plan CPU', () => {
  it('a whole CPU or more keeps the budget at one CPU', () => {
    expect(startTimeoutSeconds(120, PLANS.personal)).toBe(120); // 1 CPU
    expect(startTimeoutSeconds(120, PLANS.pro)).toBe(120); // 2 CPUs: no shorter
    expect(pairingTimeoutMs(PLANS.personal)).toBe(90_000);
    expect(pairingTimeoutMs(PLANS.pro)).toBe(90_000);
  });

  it('less than a CPU stretches it in proportion, rounded up to a whole second', () => {
    expect(startTimeoutSeconds(120, atCpu(500_000_000))).toBe(240); // half a CPU: twice as long
    expect(pairingTimeoutMs(atCpu(500_000_000))).toBe(180_000);
    expect(startTimeoutSeconds(90, atCpu(750_000_000))).toBe(120);
    expect(startTimeoutSeconds(20, atCpu(300_000_000))).toBe(67); // 66.7 s
    expect(pairingTimeoutMs(atCpu(300_000_000))).toBe(300_000);
    expect(startTimeoutSeconds(21, atCpu(700_000_000))).toBe(30); // exactly 30, not 31 from 21 / 0.7 in floating point
    expect(pairingTimeoutMs(atCpu(250_000_000))).toBe(360_000);
  });

  it('is the smallest whole number of seconds that gives the CPU the work of the one-CPU budget, and never less than that budget', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 3600 }), fc.integer({ min: 10_000_000, max: 4_000_000_000 }), (atOne, nanoCpus) => {
        const seconds = startTimeoutSeconds(atOne, atCpu(nanoCpus));
        expect(Number.isInteger(seconds)).toBe(true);
        expect(seconds).toBeGreaterThanOrEqual(atOne);
        if (nanoCpus >= 1_000_000_000) {
          expect(seconds).toBe(atOne);
        } else {
          // In whole nano-CPU-seconds, so no floating-point rounding decides the answer.
          expect(seconds * nanoCpus).toBeGreaterThanOrEqual(atOne * 1_000_000_000);
          expect((seconds - 1) * nanoCpus).toBeLessThan(atOne * 1_000_000_000);
        }
      }),
    );
  });

  it('less CPU never gets less time', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 3600 }),
        fc.integer({ min: 10_000_000, max: 4_000_000_000 }),
        fc.integer({ min: 10_000_000, max: 4_000_000_000 }),
        (atOne, a, b) => {
          const [less, more] = a < b ? [a, b] : [b, a];
          expect(startTimeoutSeconds(atOne, atCpu(less))).toBeGreaterThanOrEqual(startTimeoutSeconds(atOne, atCpu(more)));
          expect(pairingTimeoutMs(atCpu(less))).toBeGreaterThanOrEqual(pairingTimeoutMs(atCpu(more)));
        },
      ),
    );
  });
});
