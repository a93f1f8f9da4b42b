import { describe, expect, it } from 'vitest';
import { formatPrice, planPrice } from '../../src/billing/price-catalog.js';
import { defaultServer } from '../../src/cli/client.js';
import { localUrl } from '../../src/config.js';
import { customerUrl, publicPortOf } from '../../src/domain/naming.js';

describe('customer URL', () => {
  it('names the port customers are served on when it is not the scheme’s own', () => {
    expect(customerUrl('http', 'alice.blytz.localhost', 8081)).toBe('http://alice.blytz.localhost:8081');
    expect(customerUrl('http', 'alice.blytz.localhost', 80)).toBe('http://alice.blytz.localhost');
    expect(customerUrl('https', 'alice.example.com', 443)).toBe('https://alice.example.com');
    expect(customerUrl('https', 'alice.example.com', 8443)).toBe('https://alice.example.com:8443');
    expect(customerUrl('https', 'alice.example.com')).toBe('https://alice.example.com');
  });

  it("takes the port from Caddy's listen address when Caddy serves the scheme shown", () => {
    expect(publicPortOf(':8081', 'http', false)).toBe(8081);
    expect(publicPortOf('127.0.0.1:8081', 'http', false)).toBe(8081);
    expect(publicPortOf(':443', 'https', true)).toBe(443);
    // https without Caddy's TLS: something in front terminates TLS; Caddy's port is not the public one.
    expect(publicPortOf(':80', 'https', false)).toBeUndefined();
  });
});

describe('where this machine reaches the server', () => {
  it('is the bound address, by loopback for an any-address bind', () => {
    expect(localUrl('127.0.0.1', 8080)).toBe('http://127.0.0.1:8080');
    expect(localUrl('0.0.0.0', 8080)).toBe('http://127.0.0.1:8080');
    expect(localUrl('::', 9000)).toBe('http://127.0.0.1:9000');
    expect(localUrl('::1', 9000)).toBe('http://[::1]:9000');
    expect(localUrl('10.0.0.5', 8080)).toBe('http://10.0.0.5:8080');
  });

  it('the CLI talks to the server its environment configures (HOST, PORT), else 127.0.0.1:8080', () => {
    expect(defaultServer({})).toBe('http://127.0.0.1:8080');
    expect(defaultServer({ PORT: '9090' })).toBe('http://127.0.0.1:9090');
    expect(defaultServer({ HOST: '0.0.0.0', PORT: '9090' })).toBe('http://127.0.0.1:9090');
    expect(defaultServer({ HOST: '10.1.2.3' })).toBe('http://10.1.2.3:8080');
    expect(defaultServer({ PORT: 'eighty' })).toBe('http://127.0.0.1:8080');
  });
});

describe('plan price', () => {
  const price = (fields: Partial<Parameters<typeof planPrice>[0]> = {}) =>
    planPrice({
      unit_amount: 1900,
      currency: 'eur',
      recurring: { interval: 'month', interval_count: 1 } as never,
      product: { id: 'prod_1', object: 'product', name: 'Blytz Personal' } as never,
      ...fields,
    });

  it('reads amount, currency, interval and the product name from a Stripe Price', () => {
    expect(price()).toEqual({
      productName: 'Blytz Personal',
      unitAmount: 1900,
      currency: 'eur',
      interval: 'month',
      intervalCount: 1,
    });
    expect(price({ product: 'prod_1' })?.productName).toBeUndefined();
    expect(price({ unit_amount: null })).toBeUndefined(); // tiered or customer-chosen: no one amount to show
  });

  it('formats it for the page', () => {
    expect(formatPrice(price()!)).toEqual({ amount: '€19.00', period: 'per month' });
    expect(formatPrice({ ...price()!, currency: 'usd', unitAmount: 9000, interval: 'month', intervalCount: 3 })).toEqual({
      amount: '$90.00',
      period: 'every 3 months',
    });
    expect(formatPrice({ ...price()!, currency: 'jpy', unitAmount: 1500, interval: 'year' })).toEqual({
      amount: '¥1,500',
      period: 'per year',
    });
    expect(formatPrice({ ...price()!, interval: undefined }).period).toBe('once');
  });
});
