import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { RestartBackoff } from '../../src/controller/customer/restart-backoff.js';

const options = { initialMs: 30_000, maxMs: 300_000, resetAfterMs: 600_000 };

describe('restart back-off', () => {
  it('lets the first restart happen at once, then doubles the wait up to the cap', () => {
    const backoff = new RestartBackoff(options);
    let now = 1_000_000;
    expect(backoff.hold('ada', 'c1', now)).toBeUndefined();
    const waits: number[] = [];
    for (let i = 1; i <= 7; i++) {
      expect(backoff.restarted('ada', 'c1', now)).toBe(i);
      const hold = backoff.hold('ada', 'c1', now);
      expect(hold?.restarts).toBe(i);
      waits.push((hold?.notBefore ?? now) - now);
      // One millisecond early it still holds; at the time it lets go.
      expect(backoff.hold('ada', 'c1', now + waits[i - 1]! - 1)).toBeDefined();
      now += waits[i - 1]!;
      expect(backoff.hold('ada', 'c1', now)).toBeUndefined();
    }
    expect(waits).toEqual([30_000, 60_000, 120_000, 240_000, 300_000, 300_000, 300_000]);
  });

  it('keeps the back-off through a short recovery and clears it after staying healthy long enough', () => {
    const backoff = new RestartBackoff(options);
    let now = 0;
    backoff.restarted('ada', 'c1', now);
    backoff.restarted('ada', 'c1', (now += 30_000));
    backoff.observed('ada', [{ id: 'c1', health: 'healthy' }], (now += 1_000));
    backoff.observed('ada', [{ id: 'c1', health: 'healthy' }], (now += 500_000));
    backoff.observed('ada', [{ id: 'c1', health: 'unhealthy' }], (now += 1_000));
    // Healthy for 501 s, not 600: the next restart still waits out the doubled delay.
    backoff.restarted('ada', 'c1', now);
    expect(backoff.hold('ada', 'c1', now)?.restarts).toBe(3);
    backoff.observed('ada', [{ id: 'c1', health: 'healthy' }], (now += 120_000));
    backoff.observed('ada', [{ id: 'c1', health: 'healthy' }], (now += 600_000));
    backoff.restarted('ada', 'c1', now);
    expect(backoff.hold('ada', 'c1', now)?.restarts).toBe(1);
  });

  it('starts a new container with no history and forgets containers that are gone', () => {
    const backoff = new RestartBackoff(options);
    backoff.restarted('ada', 'old', 0);
    backoff.restarted('ada', 'new', 0);
    backoff.restarted('ada', 'new', 40_000);
    expect(backoff.hold('ada', 'new', 40_000)?.restarts).toBe(2);
    expect(backoff.hold('ada', 'old', 1)?.restarts).toBe(1);
    backoff.observed('ada', [{ id: 'new', health: 'unhealthy' }], 41_000);
    expect(backoff.hold('ada', 'old', 1)).toBeUndefined();
    expect(backoff.hold('ada', 'new', 41_000)?.restarts).toBe(2);
    expect(backoff.hold('bob', 'new', 41_000)).toBeUndefined();
    backoff.observed('ada', [], 42_000);
    expect(backoff.hold('ada', 'new', 42_000)).toBeUndefined();
  });

  it('never holds a restart longer than the cap after the last one, whatever happened before', () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 0, max: 400_000 }), { minLength: 1, maxLength: 30 }), (gaps) => {
        const backoff = new RestartBackoff(options);
        let now = 0;
        for (const gap of gaps) {
          now += gap;
          if (!backoff.hold('ada', 'c1', now)) backoff.restarted('ada', 'c1', now);
        }
        const hold = backoff.hold('ada', 'c1', now);
        return hold === undefined || (hold.notBefore - now <= options.maxMs && hold.notBefore > now);
      }),
    );
  });
});
