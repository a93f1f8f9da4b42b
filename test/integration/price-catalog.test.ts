import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { StripePriceCatalog } from '../../src/billing/price-catalog.js';
import { createStripeClient } from '../../src/billing/stripe-client.js';
import { FAKE_PRICE, FAKE_PRICE_ID, FAKE_SECRET_KEY, startFakeStripe, type FakeStripe } from '../support/fake-stripe.js';

/**
 * The landing page's price, read through the real `stripe` client from a local stand-in that
 * speaks Stripe's wire protocol, with the clock injected: cached for its TTL, the last price kept
 * through an outage, one try per retry interval while Stripe is down.
 */

let stripe: FakeStripe;

beforeAll(async () => {
  stripe = await startFakeStripe();
});
afterAll(async () => {
  await stripe?.close();
});

function catalog(priceId = FAKE_PRICE_ID) {
  let now = 1_000_000;
  const prices = new StripePriceCatalog({
    stripe: createStripeClient({ secretKey: FAKE_SECRET_KEY, apiBase: stripe.url, timeoutMs: 2000 }),
    priceId,
    ttlMs: 600_000,
    retryMs: 30_000,
    now: () => now,
  });
  return { prices, advance: (ms: number) => (now += ms) };
}

const priceReads = () => stripe.requests.filter((r) => r.path.startsWith('/v1/prices/')).length;

describe('StripePriceCatalog', () => {
  it('reads the Price with its Product, then serves it from the cache until the TTL is up', async () => {
    stripe.mode = 'ok';
    const { prices, advance } = catalog();
    const before = priceReads();
    const expected = {
      productName: FAKE_PRICE.productName,
      unitAmount: FAKE_PRICE.unitAmount,
      currency: FAKE_PRICE.currency,
      interval: FAKE_PRICE.interval,
      intervalCount: 1,
    };
    // Views arriving together share one read.
    expect(await Promise.all([prices.current(), prices.current(), prices.current()])).toEqual([expected, expected, expected]);
    expect(priceReads()).toBe(before + 1);
    advance(599_000);
    expect(await prices.current()).toEqual(expected);
    expect(priceReads()).toBe(before + 1);
    advance(2000);
    expect(await prices.current()).toEqual(expected);
    expect(priceReads()).toBe(before + 2);
  });

  it('keeps showing the last price while Stripe is down, trying again once per retry interval', async () => {
    stripe.mode = 'ok';
    const { prices, advance } = catalog();
    const known = await prices.current();
    stripe.mode = 'error';
    try {
      advance(600_001);
      const before = priceReads();
      expect(await prices.current()).toEqual(known);
      expect(priceReads()).toBe(before + 1);
      advance(10_000);
      expect(await prices.current()).toEqual(known); // within the retry interval: no call
      expect(priceReads()).toBe(before + 1);
      advance(20_001);
      stripe.mode = 'ok';
      expect(await prices.current()).toEqual(known);
      expect(priceReads()).toBe(before + 2);
    } finally {
      stripe.mode = 'ok';
    }
  });

  it('answers undefined (never throws) when it never got a price: Stripe down, or no such price', async () => {
    stripe.mode = 'down';
    try {
      expect(await catalog().prices.current()).toBeUndefined();
    } finally {
      stripe.mode = 'ok';
    }
    expect(await catalog('price_does_not_exist').prices.current()).toBeUndefined();
  });
});
