import type Stripe from 'stripe';
import { unguarded, type Guard } from '../resilience/guard.js';

/**
 * What a plan costs, read from Stripe's Price object (STRIPE_PRICE_ID), so the landing page and
 * the checkout can never disagree: the amount is written once, in Stripe.
 */
export interface PlanPrice {
  /** The Price's Product name, e.g. "Blytz Personal"; undefined when Stripe gives none. */
  productName: string | undefined;
  /** In the currency's smallest unit (cents), as Stripe counts. */
  unitAmount: number;
  /** ISO 4217, lower case as Stripe writes it (`eur`). */
  currency: string;
  /** undefined for a one-time price. */
  interval: (typeof INTERVALS)[number] | undefined;
  intervalCount: number;
}

export interface PriceSource {
  /** The price, or undefined when it is not known (Stripe unreachable and nothing cached). Never throws. */
  current(): Promise<PlanPrice | undefined>;
}

export interface StripePriceCatalogOptions {
  stripe: Stripe;
  priceId: string;
  guard?: Guard;
  /** How long a price read from Stripe is shown before it is read again. Default 10 min. */
  ttlMs?: number;
  /** After a failed read, how long before the next try (a Stripe outage costs one call per this, not one per page view). Default 30 s. */
  retryMs?: number;
  now?: () => number;
}

/**
 * The price of STRIPE_PRICE_ID, cached: the landing page is public and must not cost one Stripe
 * call per view. A failed read keeps showing the last price read (a price changes rarely, and
 * Stripe shows the real one at checkout anyway).
 */
export class StripePriceCatalog implements PriceSource {
  readonly #options: StripePriceCatalogOptions;
  readonly #guard: Guard;
  readonly #now: () => number;
  #cached: PlanPrice | undefined;
  #nextReadAt = 0;
  #reading: Promise<PlanPrice | undefined> | undefined;

  constructor(options: StripePriceCatalogOptions) {
    this.#options = options;
    this.#guard = options.guard ?? unguarded;
    this.#now = options.now ?? Date.now;
  }

  current(): Promise<PlanPrice | undefined> {
    if (this.#now() < this.#nextReadAt) return Promise.resolve(this.#cached);
    // Page views arriving together share one read.
    this.#reading ??= this.#read().finally(() => {
      this.#reading = undefined;
    });
    return this.#reading;
  }

  async #read(): Promise<PlanPrice | undefined> {
    const { stripe, priceId } = this.#options;
    try {
      const price = await this.#guard('retrievePrice', () => stripe.prices.retrieve(priceId, { expand: ['product'] }));
      const parsed = planPrice(price);
      if (parsed) this.#cached = parsed;
      this.#nextReadAt = this.#now() + (parsed ? (this.#options.ttlMs ?? 600_000) : (this.#options.retryMs ?? 30_000));
    } catch {
      this.#nextReadAt = this.#now() + (this.#options.retryMs ?? 30_000);
    }
    return this.#cached;
  }
}

const INTERVALS = ['day', 'week', 'month', 'year'] as const;

/** The parts of a Stripe Price the page shows; undefined for a price without a fixed amount (tiered, pay what you want). */
export function planPrice(
  price: Pick<Stripe.Price, 'unit_amount' | 'currency' | 'recurring' | 'product'>,
): PlanPrice | undefined {
  if (typeof price.unit_amount !== 'number' || !price.currency) return undefined;
  const product = price.product;
  const productName = typeof product === 'object' && product !== null && 'name' in product ? product.name : undefined;
  return {
    productName: productName || undefined,
    unitAmount: price.unit_amount,
    currency: price.currency,
    interval: INTERVALS.find((i) => i === price.recurring?.interval),
    intervalCount: price.recurring?.interval_count ?? 1,
  };
}

/** `€9.00` and `per month` (or `every 3 months`, or `once`), in English. */
export function formatPrice(price: PlanPrice): { amount: string; period: string } {
  const currency = price.currency.toUpperCase();
  let amount: string;
  try {
    const format = new Intl.NumberFormat('en', { style: 'currency', currency });
    const digits = format.resolvedOptions().maximumFractionDigits ?? 2;
    amount = format.format(price.unitAmount / 10 ** digits);
  } catch {
    amount = `${(price.unitAmount / 100).toFixed(2)} ${currency}`; // a code Intl does not know
  }
  if (!price.interval) return { amount, period: 'once' };
  const period = price.intervalCount === 1 ? `per ${price.interval}` : `every ${price.intervalCount} ${price.interval}s`;
  return { amount, period };
}
