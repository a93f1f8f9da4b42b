import type Stripe from 'stripe';
import type { Logger } from '../observability/logger.js';
import type { Metrics } from '../observability/metrics.js';
import type { Guard } from '../resilience/guard.js';
import { httpStatusOf } from '../resilience/transient.js';

/**
 * Model overage to Stripe: for plans that bill tokens past their included budget, each metered
 * request's overage (model_requests.overage_tokens) becomes one Stripe meter event
 * (POST /v1/billing/meter_events, `payload[value]` = tokens, `payload[stripe_customer_id]`).
 *
 * Exactly once: the event's `identifier` is the gateway's request id, so a repeat after a crash
 * between Stripe's answer and our commit is dropped by Stripe (it enforces identifier uniqueness
 * for at least 24 hours), and rows are marked in the transaction that locked them. A customer
 * without a Stripe customer id cannot be billed: its rows are marked skipped, not retried forever.
 */

/** A request whose overage awaits a Stripe meter event. */
export interface UnreportedOverage {
  id: string;
  customer: string;
  stripeCustomerId: string | null;
  overageTokens: number;
  recordedAt: Date;
}

export type ReportOutcome = 'sent' | `skipped: ${string}`;

/** Where the overage waits (store/model-access-store.ts): hands out rows and keeps their outcomes. */
export interface OverageLedger {
  reportOverage(
    limit: number,
    report: (rows: UnreportedOverage[]) => Promise<Map<string, ReportOutcome>>,
  ): Promise<{ sent: number; skipped: number; left: number }>;
}

export interface MeterEventsOptions {
  store: OverageLedger;
  stripe: Stripe;
  /** STRIPE_METER_EVENT_NAME: the `event_name` of the Stripe meter. */
  eventName: string;
  guard: Guard;
  metrics?: Pick<Metrics, 'stripeMeterEvents'>;
  logger: Pick<Logger, 'warn' | 'info'>;
  /** How often unreported overage is looked for without a kick. Default 60 s. */
  intervalMs?: number;
  /** Rows per transaction. Default 50. */
  batch?: number;
}

export class MeterEventReporter {
  readonly #options: MeterEventsOptions;
  #timer: NodeJS.Timeout | undefined;
  #running: Promise<void> | undefined;
  #again = false;
  #stopped = true;

  constructor(options: MeterEventsOptions) {
    this.#options = options;
  }

  start(): void {
    if (!this.#stopped) return;
    this.#stopped = false;
    this.#schedule(0);
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#timer);
    await this.#running;
  }

  /** New overage was recorded: report soon (coalesced with a run in progress). */
  kick(): void {
    if (this.#stopped) return;
    if (this.#running) this.#again = true;
    else this.#schedule(0);
  }

  /** Reports until nothing is left (or a batch makes no progress); for tests and the timer. */
  async runOnce(): Promise<{ sent: number; skipped: number }> {
    let sent = 0;
    let skipped = 0;
    for (;;) {
      const result = await this.#options.store.reportOverage(this.#options.batch ?? 50, (rows) => this.#send(rows));
      sent += result.sent;
      skipped += result.skipped;
      if (result.sent + result.skipped === 0 || result.left > 0) return { sent, skipped };
    }
  }

  #schedule(ms: number): void {
    clearTimeout(this.#timer);
    this.#timer = setTimeout(() => {
      this.#running = this.runOnce()
        .then(
          () => undefined,
          (error: unknown) => this.#options.logger.warn({ err: error }, 'reporting model overage to Stripe failed; retrying later'),
        )
        .finally(() => {
          this.#running = undefined;
          if (this.#stopped) return;
          const again = this.#again;
          this.#again = false;
          this.#schedule(again ? 0 : (this.#options.intervalMs ?? 60_000));
        });
    }, ms);
    this.#timer.unref();
  }

  /** One meter event per row; a row whose event failed is left out (unreported, tried again later). */
  async #send(rows: UnreportedOverage[]): Promise<Map<string, ReportOutcome>> {
    const outcomes = new Map<string, ReportOutcome>();
    for (const row of rows) {
      if (!row.stripeCustomerId) {
        outcomes.set(row.id, 'skipped: no Stripe customer');
        this.#options.metrics?.stripeMeterEvents.inc({ outcome: 'skipped' });
        continue;
      }
      try {
        await this.#options.guard('createMeterEvent', () =>
          this.#options.stripe.billing.meterEvents.create({
            event_name: this.#options.eventName,
            identifier: row.id,
            timestamp: Math.floor(row.recordedAt.getTime() / 1000),
            payload: { stripe_customer_id: row.stripeCustomerId as string, value: String(row.overageTokens) },
          }),
        );
        outcomes.set(row.id, 'sent');
        this.#options.metrics?.stripeMeterEvents.inc({ outcome: 'sent' });
      } catch (error) {
        const status = httpStatusOf(error);
        if (status !== undefined && status >= 400 && status < 500 && status !== 429) {
          // Stripe refused this event for good (an unknown customer, a meter that does not exist):
          // kept in the ledger as skipped, with the reason, instead of being sent forever.
          outcomes.set(row.id, `skipped: Stripe answered ${status}: ${(error as Error).message}`);
          this.#options.metrics?.stripeMeterEvents.inc({ outcome: 'skipped' });
          this.#options.logger.warn({ err: error, customer: row.customer, requestId: row.id }, 'Stripe refused a meter event');
          continue;
        }
        this.#options.metrics?.stripeMeterEvents.inc({ outcome: 'failed' });
        this.#options.logger.warn({ err: error, customer: row.customer, requestId: row.id }, 'Stripe meter event failed');
        // Stop this batch: Stripe is likely down for the rest too.
        break;
      }
    }
    return outcomes;
  }
}
