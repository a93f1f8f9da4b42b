import type { Request, Response } from 'express';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { stripeAddress } from '../../src/billing/stripe-client.js';
import { HttpError } from '../../src/http/errors.js';
import { clientKey, failureBudget } from '../../src/http/rate-limit.js';
import { MemoryRateLimitBackend } from '../../src/store/rate-limit-counters.js';

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

describe('clientKey', () => {
  it('keys IPv4 by address, IPv4-mapped IPv6 as IPv4, and IPv6 by its /64', () => {
    expect(clientKey('203.0.113.9')).toBe('203.0.113.9');
    expect(clientKey('::ffff:203.0.113.9')).toBe('203.0.113.9');
    expect(clientKey('::FFFF:203.0.113.9')).toBe('203.0.113.9');
    expect(clientKey('2001:db8:1:2:3:4:5:6')).toBe('2001:db8:1:2::/64');
    expect(clientKey('2001:0db8:0001:0002::1')).toBe('2001:db8:1:2::/64');
    expect(clientKey('2001:db8::1')).toBe('2001:db8:0:0::/64');
    expect(clientKey('::1')).toBe('0:0:0:0::/64');
    expect(clientKey('fe80::1%eth0')).toBe('fe80:0:0:0::/64');
    expect(clientKey('64:ff9b::198.51.100.1')).toBe('64:ff9b:0:0::/64');
    expect(clientKey(undefined)).toBe('unknown');
    expect(clientKey('not-an-address')).toBe('unknown');
  });

  const group = fc.integer({ min: 0, max: 0xffff });
  const groups = (n: number) => fc.array(group, { minLength: n, maxLength: n });
  /** One address written in any of its valid IPv6 forms (full, leading zeros, `::` somewhere). */
  const written = (parts: number[]) =>
    fc.record({ pad: fc.boolean(), upper: fc.boolean(), cut: fc.nat(8) }).map(({ pad, upper, cut }) => {
      const text = parts.map((p) => (pad ? p.toString(16).padStart(4, '0') : p.toString(16)));
      // Compress the longest run of zero groups that starts at `cut`, if there is one.
      let start = Math.min(cut, 7);
      while (start < 8 && parts[start] !== 0) start++;
      let end = start;
      while (end < 8 && parts[end] === 0) end++;
      const out = end > start ? `${text.slice(0, start).join(':')}::${text.slice(end).join(':')}` : text.join(':');
      return upper ? out.toUpperCase() : out;
    });

  it('gives every address of one /64 the same key, however it is written (property)', () => {
    fc.assert(
      fc.property(
        groups(4).chain((prefix) =>
          fc.tuple(
            fc.constant(prefix),
            groups(4).chain((iface) => written([...prefix, ...iface])),
            groups(4).chain((iface) => written([...prefix, ...iface])),
          ),
        ),
        ([prefix, one, two]) => {
          // ::ffff:a.b.c.d is IPv4-mapped and keyed as IPv4 (its /64 is all zeros).
          fc.pre(!prefix.every((p) => p === 0));
          const key = clientKey(one);
          expect(key).toBe(clientKey(two));
          expect(key).toBe(`${prefix.map((p) => p.toString(16)).join(':')}::/64`);
        },
      ),
    );
  });

  it('gives addresses of different /64s different keys (property)', () => {
    fc.assert(
      fc.property(groups(8), groups(8), (a, b) => {
        fc.pre(a.slice(0, 4).join() !== b.slice(0, 4).join());
        // Not IPv4-mapped (::ffff:a.b.c.d is keyed as IPv4).
        fc.pre(
          !(a.slice(0, 5).every((g) => g === 0) && a[5] === 0xffff) && !(b.slice(0, 5).every((g) => g === 0) && b[5] === 0xffff),
        );
        const text = (g: number[]) => g.map((x) => x.toString(16)).join(':');
        expect(clientKey(text(a))).not.toBe(clientKey(text(b)));
      }),
    );
  });
});

describe('failureBudget', () => {
  it('counts failures only, refuses every request of the client once the budget is spent, until the window ends', async () => {
    let now = 5_000;
    const backend = new MemoryRateLimitBackend(() => now);
    const budget = failureBudget({ limit: 2, windowMs: 60_000, backend, name: 'test', key: () => 'client' });
    const req = {} as Request;
    const check = async () => {
      let passed: unknown = 'not called';
      await budget.check(req, {} as Response, (error?: unknown) => {
        passed = error;
      });
      return passed;
    };
    expect(await check()).toBeUndefined();
    await budget.fail(req);
    expect(await check()).toBeUndefined();
    expect(await budget.failAndCheck(req)).toBeUndefined(); // the second failure is still answered normally
    const refused = (await check()) as HttpError;
    expect(refused).toBeInstanceOf(HttpError);
    expect(refused.status).toBe(429);
    expect(refused.headers['Retry-After']).toBe('55');
    expect((await budget.failAndCheck(req))?.status).toBe(429);
    now += 55_000;
    expect(await check()).toBeUndefined();
  });
});
