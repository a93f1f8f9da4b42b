import { describe, expect, it } from 'vitest';
import { stripeAddress } from '../../src/billing/stripe-client.js';
import { MemoryRateLimitBackend } from '../../src/http/rate-limit.js';

describe('MemoryRateLimitBackend', () => {
  it('counts hits per key in fixed windows and says when the window resets', async () => {
    let now = 60_000 * 10 + 15_000;
    const backend = new MemoryRateLimitBackend(() => now);
    expect(await backend.hit('signup:a', 60_000)).toEqual({ count: 1, resetMs: 45_000 });
    expect(await backend.hit('signup:a', 60_000)).toEqual({ count: 2, resetMs: 45_000 });
    expect((await backend.hit('signup:b', 60_000)).count).toBe(1);
    now += 45_000; // the next window
    expect(await backend.hit('signup:a', 60_000)).toEqual({ count: 1, resetMs: 60_000 });
  });

  it('stays bounded under a flood of distinct keys', async () => {
    let now = 0;
    const backend = new MemoryRateLimitBackend(() => now, 3);
    for (const key of ['a', 'b', 'c']) await backend.hit(key, 1000);
    now = 5000;
    // Old windows are pruned to make room; current ones keep their counts.
    await backend.hit('d', 1000);
    expect((await backend.hit('d', 1000)).count).toBe(2);
    expect((await backend.hit('a', 1000)).count).toBe(1);
  });
});

describe('stripeAddress', () => {
  it('turns STRIPE_API_BASE into the Stripe constructor options', () => {
    expect(stripeAddress(undefined)).toEqual({});
    expect(stripeAddress('http://127.0.0.1:12111')).toEqual({ host: '127.0.0.1', port: 12111, protocol: 'http' });
    expect(stripeAddress('https://stripe.internal/')).toEqual({ host: 'stripe.internal', port: 443, protocol: 'https' });
    expect(() => stripeAddress('https://stripe.internal/v1')).toThrow(/path/);
    expect(() => stripeAddress('ftp://stripe.internal')).toThrow(/http/);
  });
});
