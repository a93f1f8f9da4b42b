import { describe, expect, it } from 'vitest';
import { checkCapacity, HOST_RESERVE_BYTES } from '../../src/domain/capacity.js';
import { PLANS } from '../../src/domain/customer.js';

const GiB = 1024 ** 3;

describe('capacity at start: BLYTZ_MAX_CUSTOMERS against host memory', () => {
  it('counts how many customers of each plan fit at their memory limit, after the system reserve', () => {
    const report = checkCapacity(10, 24 * GiB);
    expect(report.fit).toEqual({
      personal: Math.floor((24 * GiB - HOST_RESERVE_BYTES) / PLANS.personal.memoryBytes),
      pro: Math.floor((24 * GiB - HOST_RESERVE_BYTES) / PLANS.pro.memoryBytes),
    });
    expect(report.fit.personal).toBe(14);
    expect(report.warning).toBeUndefined();
  });

  it('warns, naming the variable and what fits, when the limit admits more than the host holds', () => {
    const report = checkCapacity(20, 24 * GiB);
    expect(report.warning).toMatch(/^BLYTZ_MAX_CUSTOMERS=20 admits more assistants than this host's 24\.0 GiB/);
    expect(report.warning).toMatch(/at most 14 on personal \(1\.5 GiB each\), 7 on pro \(3\.0 GiB each\)/);
  });

  it('a host smaller than the reserve fits nobody', () => {
    expect(checkCapacity(1, GiB).fit).toEqual({ personal: 0, pro: 0 });
    expect(checkCapacity(0, GiB).warning).toBeUndefined();
  });
});
