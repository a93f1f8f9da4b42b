import { startServe, type Served } from './blytz-serve.js';
import { FAKE_PRICE_ID, FAKE_SECRET_KEY, startFakeStripe, type FakeStripe } from './fake-stripe.js';
import { startFakeTelegram, type FakeTelegram } from './fake-telegram.js';
import { createTestDatabase, type TestDatabase } from './postgres.js';

/** The built `blytz serve` selling assistants: its own database, Stripe and Telegram stand-ins. */
export interface SellingServe {
  db: TestDatabase;
  stripe: FakeStripe;
  telegram: FakeTelegram;
  served: Served;
  /** Stops the server and the stand-ins, drops the database. */
  close(): Promise<void>;
}

/**
 * What the signup, payment and pairing tests start the same way: a database, the fake Stripe and
 * Telegram APIs, and `blytz serve` pointed at them with `webhookSecret`, plus `env` of the test's own.
 */
export async function startSellingServe(webhookSecret: string, env: Record<string, string> = {}): Promise<SellingServe> {
  const [db, stripe, telegram] = await Promise.all([createTestDatabase(), startFakeStripe(), startFakeTelegram()]);
  const served = await startServe({
    databaseUrl: db.url,
    env: {
      STRIPE_SECRET_KEY: FAKE_SECRET_KEY,
      STRIPE_WEBHOOK_SECRET: webhookSecret,
      STRIPE_PRICE_ID: FAKE_PRICE_ID,
      STRIPE_API_BASE: stripe.url,
      TELEGRAM_API_BASE: telegram.url,
      ...env,
    },
  });
  return {
    db,
    stripe,
    telegram,
    served,
    async close() {
      await served.stop();
      await stripe.close();
      await telegram.close();
      await db.drop();
    },
  };
}
