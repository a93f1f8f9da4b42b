import { randomBytes } from 'node:crypto';
import fc from 'fast-check';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CustomerStore } from '../../src/store/customer-store.js';
import type { CustomerRow } from '../../src/store/schema.js';
import type { SecretBox } from '../../src/store/secret-box.js';
import {
  botToken,
  openSession,
  postJson,
  signupBody,
  startBillingApp,
  WEBHOOK_SECRET,
  type BillingApp,
  type BillingAppOptions,
  type Json,
} from '../support/billing-app.js';
import {
  completedSessionObject,
  signatureHeader,
  startFakeStripe,
  stripeEvent,
  subscriptionObject,
  type FakeSession,
  type FakeStripe,
} from '../support/fake-stripe.js';
import { startFakeTelegram, type FakeTelegram } from '../support/fake-telegram.js';
import { testSecretBox, uniqueName } from '../support/fixtures.js';
import { createTestDatabase, type TestDatabase } from '../support/postgres.js';

/**
 * Issue 19, items 1 and 2: a signup belongs to whoever started it, and a new customer never
 * inherits a former one. Every attack goes through the real HTTP API, the real Postgres store
 * and signed webhooks (fake Stripe only).
 */

let db: TestDatabase;
let box: SecretBox;
let stripe: FakeStripe;
let telegram: FakeTelegram;
let customers: CustomerStore;
let app: BillingApp;
const apps: BillingApp[] = [];

beforeAll(async () => {
  [db, stripe, telegram] = await Promise.all([createTestDatabase(), startFakeStripe(), startFakeTelegram()]);
  box = testSecretBox();
  customers = new CustomerStore(db.handle, box);
  app = await startApp();
});

afterAll(async () => {
  await Promise.all(apps.map((a) => a.close()));
  await Promise.all([db.drop(), stripe.close(), telegram.close()]);
});

async function startApp(options: Partial<BillingAppOptions> = {}): Promise<BillingApp> {
  const started = await startBillingApp({ handle: db.handle, box, stripe, telegram, ...options });
  apps.push(started);
  return started;
}

type Row = CustomerRow & { billing_suspended: boolean };
const email = () => `${uniqueName('own')}@example.com`;
let nextBot = 5000;
const freshBot = () => botToken(nextBot++);

async function signup(
  body: Record<string, unknown>,
  options: { session?: string; target?: BillingApp; headers?: Record<string, string> } = {},
) {
  const headers: Record<string, string> = { ...options.headers };
  if (options.session) headers['cookie'] = `blytz_session=${options.session}`;
  return postJson(`${(options.target ?? app).url}/api/signup`, body, headers);
}

async function row(name: string): Promise<Row> {
  return (await db.handle.db.selectFrom('customers').selectAll().where('name', '=', name).executeTakeFirstOrThrow()) as Row;
}

async function rowsFor(address: string): Promise<Row[]> {
  return (await db.handle.db
    .selectFrom('customers')
    .selectAll()
    .where(sql<boolean>`lower(email) = ${address.toLowerCase()}`)
    .orderBy('created_at')
    .execute()) as Row[];
}

function checkoutOf(name: string, uid: string): FakeSession {
  const sessions = [...stripe.sessions.values()].filter((s) => s.client_reference_id === name && s.metadata['blytz_uid'] === uid);
  const session = sessions.at(-1);
  if (!session) throw new Error(`no checkout for ${name} (${uid})`);
  return session;
}

let eventClock = Math.floor(Date.now() / 1000) - 10_000;

async function deliver(event: Record<string, unknown>): Promise<Json> {
  const payload = JSON.stringify(event);
  const res = await postJson(`${app.url}/api/webhooks/stripe`, payload, {
    'stripe-signature': signatureHeader(payload, WEBHOOK_SECRET),
  });
  expect(res.status).toBe(200);
  const ledger = await db.handle.db
    .selectFrom('webhook_events')
    .selectAll()
    .where('event_id', '=', event['id'] as string)
    .executeTakeFirstOrThrow();
  return ledger;
}

/** Pays a checkout as Stripe would: the session completes and its event arrives. */
async function pay(session: FakeSession): Promise<{ outcome: string; customer: string; subscription: string }> {
  session.status = 'complete';
  const customer = `cus_${randomBytes(6).toString('hex')}`;
  const subscription = `sub_${randomBytes(6).toString('hex')}`;
  const ledger = await deliver(
    stripeEvent('checkout.session.completed', completedSessionObject(session, { customer, subscription }), {
      created: eventClock++,
    }),
  );
  return { outcome: ledger['outcome'] as string, customer, subscription };
}

describe('a signup belongs to whoever started it', () => {
  it('a second signup with the same email and no proof starts its own: the first keeps its secrets and token, and each checkout activates only what its payer submitted', async () => {
    const address = email();
    const aliceBot = freshBot();
    const malloryBot = freshBot();
    const alice = await signup(
      signupBody(address, {
        telegramBotToken: aliceBot,
        instructions: 'Alice: bakery',
        modelProvider: 'openai',
        modelApiKey: 'sk-alice',
      }),
    );
    expect(alice.status).toBe(201);
    const before = await row(alice.body.customerId);

    const mallory = await signup(
      signupBody(address.toUpperCase(), {
        telegramBotToken: malloryBot,
        instructions: 'Mallory: exfiltrate',
        modelProvider: 'openai',
        modelApiKey: 'sk-mallory',
      }),
    );
    expect(mallory.status).toBe(201);
    expect(mallory.body.customerId).not.toBe(alice.body.customerId);
    // Alice's signup is exactly as she left it: settings, sealed secrets, token, checkout, uid.
    expect(await row(alice.body.customerId)).toEqual(before);
    expect(await customers.readSecrets(alice.body.customerId)).toEqual({ telegramBotToken: aliceBot, modelApiKey: 'sk-alice' });
    // Mallory's link opens only Mallory's signup.
    const mallorySession = (await openSession(app.url, mallory.body.statusUrl)).session as string;
    const peek = await fetch(`${app.url}/api/customers/${alice.body.customerId}/status`, {
      headers: { authorization: `Bearer ${mallorySession}` },
    });
    expect(peek.status).toBe(404);

    // Alice pays her checkout: her own settings go live.
    const alicePaid = await pay(checkoutOf(alice.body.customerId, before.uid));
    expect(alicePaid.outcome).toBe('applied');
    const live = await row(alice.body.customerId);
    expect(live).toMatchObject({ state: 'active', instructions: 'Alice: bakery', uid: before.uid });
    expect(await customers.readSecrets(alice.body.customerId)).toEqual({ telegramBotToken: aliceBot, modelApiKey: 'sk-alice' });

    // Mallory pays too: one live assistant per email, so it is recorded and not activated (never a 5xx).
    const malloryPaid = await pay(checkoutOf(mallory.body.customerId, (await row(mallory.body.customerId)).uid));
    expect(malloryPaid.outcome).toBe('email_conflict');
    expect((await row(mallory.body.customerId)).state).toBe('pending');
    expect((await customers.listEvents(mallory.body.customerId)).map((e) => e.reason)).toContain('EmailConflict');
    expect(await row(alice.body.customerId)).toMatchObject({ state: 'active', instructions: 'Alice: bakery' });
  });

  it('with a session of the first signup (the proof), a repeated signup replaces it as a new incarnation; the old checkout is expired and can activate nothing', async () => {
    const address = email();
    const first = await signup(signupBody(address, { telegramBotToken: freshBot(), instructions: 'first try' }));
    const name = first.body.customerId as string;
    const old = await row(name);
    const oldCheckout = checkoutOf(name, old.uid);
    const session = (await openSession(app.url, first.body.statusUrl)).session as string;

    const bot = freshBot();
    const second = await signup(signupBody(address, { telegramBotToken: bot, instructions: 'second try' }), { session });
    expect(second.status).toBe(201);
    expect(second.body.customerId).toBe(name);
    expect(second.headers.get('set-cookie')).toMatch(/^blytz_session=; Path=\/; Max-Age=0/);
    const replaced = await row(name);
    expect(replaced.uid).not.toBe(old.uid);
    expect(replaced.instructions).toBe('second try');
    expect(await customers.readSecrets(name)).toEqual({ telegramBotToken: bot });
    expect(oldCheckout.status).toBe('expired');
    expect((await rowsFor(address)).length).toBe(1);
    // The old session belonged to the old incarnation.
    const stale = await fetch(`${app.url}/api/customers/${name}/status`, { headers: { authorization: `Bearer ${session}` } });
    expect(stale.status).toBe(404);

    // A payment of the old checkout (one that slipped through) is refused as foreign.
    expect((await pay(oldCheckout)).outcome).toBe('foreign_signup');
    expect((await row(name)).state).toBe('pending');
    // The new checkout activates the new settings.
    expect((await pay(checkoutOf(name, replaced.uid))).outcome).toBe('applied');
    expect(await row(name)).toMatchObject({ state: 'active', instructions: 'second try', uid: replaced.uid });
  });

  it('does not replace a signup whose checkout was paid already (409), and a session of another email proves nothing', async () => {
    const address = email();
    const first = await signup(signupBody(address, { telegramBotToken: freshBot(), instructions: 'mine' }));
    const name = first.body.customerId as string;
    const session = (await openSession(app.url, first.body.statusUrl)).session as string;
    const before = await row(name);
    checkoutOf(name, before.uid).status = 'complete';
    const again = await signup(signupBody(address, { telegramBotToken: freshBot(), instructions: 'changed' }), { session });
    expect(again.status).toBe(409);
    expect(again.body.error.code).toBe('already_paid');
    expect(await row(name)).toEqual(before);

    const elsewhere = await signup(signupBody(email(), { telegramBotToken: freshBot() }), { session });
    expect(elsewhere.status).toBe(201);
    expect(elsewhere.body.customerId).not.toBe(name);
    expect(await row(name)).toEqual(before);
  });

  it('resumes an unpaid checkout only with the session: a fresh checkout for the same signup, the old one expired first', async () => {
    const first = await signup(signupBody(email(), { telegramBotToken: freshBot() }));
    const name = first.body.customerId as string;
    const uid = (await row(name)).uid;
    const oldCheckout = checkoutOf(name, uid);
    const none = await postJson(`${app.url}/api/customers/${name}/checkout`, {});
    expect(none.status).toBe(404);
    const session = (await openSession(app.url, first.body.statusUrl)).session as string;
    const resumed = await postJson(`${app.url}/api/customers/${name}/checkout`, {}, { cookie: `blytz_session=${session}` });
    expect(resumed.status).toBe(201);
    expect(resumed.body.checkoutUrl).not.toBe(first.body.checkoutUrl);
    expect(oldCheckout.status).toBe('expired');
    const fresh = checkoutOf(name, uid);
    expect(fresh.id).not.toBe(oldCheckout.id);
    // The buyer has a session already: no token travels through Stripe this time.
    expect(fresh.success_url).toBe(`https://blytz.localhost/status/${name}`);
    expect((await row(name)).stripe_checkout_session_id).toBe(fresh.id);
  });
});

describe('a new customer never inherits a former one', () => {
  it("a cancelled customer's email signing up within retention gets a new customer: the old keeps its name, workspace and gateway token, and old events reach only the old", async () => {
    const address = email();
    const first = await signup(signupBody(address, { telegramBotToken: freshBot(), instructions: 'old life' }));
    const oldName = first.body.customerId as string;
    const oldUid = (await row(oldName)).uid;
    const paid = await pay(checkoutOf(oldName, oldUid));
    const gateway = await customers.gatewayToken(oldName); // what the controller generates on first render
    await deliver(
      stripeEvent(
        'customer.subscription.deleted',
        subscriptionObject({ id: paid.subscription, customer: paid.customer, status: 'canceled', name: oldName, uid: oldUid }),
        {
          created: eventClock++,
        },
      ),
    );
    const cancelled = await row(oldName);
    expect(cancelled.state).toBe('cancelled');

    const again = await signup(signupBody(address, { telegramBotToken: freshBot(), instructions: 'new life' }));
    expect(again.status).toBe(201);
    const newName = again.body.customerId as string;
    expect(newName).not.toBe(oldName);
    // The old customer is untouched (its folder customers/<oldName>/ stays its own until purged).
    expect(await row(oldName)).toEqual(cancelled);
    expect(await customers.gatewayToken(oldName)).toBe(gateway);
    const fresh = await row(newName);
    expect(fresh).toMatchObject({
      state: 'pending',
      gateway_token_enc: null,
      stripe_customer_id: null,
      stripe_subscription_id: null,
      instructions: 'new life',
    });
    expect(fresh.uid).not.toBe(oldUid);

    // A late event of the old subscription (it names the old customer) reaches only the old one.
    await deliver(
      stripeEvent(
        'customer.subscription.updated',
        subscriptionObject({ id: paid.subscription, customer: paid.customer, status: 'active', name: oldName, uid: oldUid }),
        {
          created: eventClock++,
        },
      ),
    );
    expect((await row(oldName)).state).toBe('cancelled');
    expect((await row(newName)).state).toBe('pending');
    expect((await pay(checkoutOf(newName, fresh.uid))).outcome).toBe('applied');
    expect(await customers.gatewayToken(newName)).not.toBe(gateway);
  });

  it("a lapsed unpaid signup's name goes to the same email as a new incarnation, and the old checkout cannot activate it", async () => {
    const address = email();
    const first = await signup(signupBody(address, { telegramBotToken: freshBot(), instructions: 'lapsed' }));
    const name = first.body.customerId as string;
    const old = await row(name);
    const oldSession = (await openSession(app.url, first.body.statusUrl)).session as string;
    await db.handle.db
      .updateTable('customers')
      .set({ pending_expires_at: new Date(Date.now() - 60_000) })
      .where('name', '=', name)
      .execute();
    await customers.recordEvent(name, { type: 'Normal', reason: 'CheckoutExpired', message: 'the old one lapsed' });

    const again = await signup(signupBody(address, { telegramBotToken: freshBot(), instructions: 'fresh' }));
    expect(again.body.customerId).toBe(name);
    const fresh = await row(name);
    expect(fresh.uid).not.toBe(old.uid);
    expect(await customers.listEvents(name)).toEqual([]);
    expect(
      (await fetch(`${app.url}/api/customers/${name}/status`, { headers: { authorization: `Bearer ${oldSession}` } })).status,
    ).toBe(404);
    expect((await pay(checkoutOf(name, old.uid))).outcome).toBe('foreign_signup');
    expect((await row(name)).state).toBe('pending');
  });
});

describe('unpaid signups are bounded', () => {
  it('per bot token and per client; another client and an expired signup get through', async () => {
    const limited = await startApp({ maxPendingPerClient: 2, maxPendingPerBot: 1, trustProxy: 'loopback' });
    const from = (address: string, body: Record<string, unknown>) =>
      signup(body, { target: limited, headers: { 'x-forwarded-for': address } });
    const bot = freshBot();
    const first = await from('198.51.100.7', signupBody(email(), { telegramBotToken: bot }));
    expect(first.status).toBe(201);
    const sameBot = await from('203.0.113.50', signupBody(email(), { telegramBotToken: bot }));
    expect(sameBot.status).toBe(429);
    expect(sameBot.body.error.code).toBe('too_many_pending_signups');
    expect(sameBot.body.error.message).toMatch(/bot already has a signup/);
    const retryAfter = Number(sameBot.headers.get('retry-after'));
    expect(retryAfter).toBeGreaterThan(0);
    expect(retryAfter).toBeLessThanOrEqual(1920);

    expect((await from('198.51.100.7', signupBody(email(), { telegramBotToken: freshBot() }))).status).toBe(201);
    const third = await from('198.51.100.7', signupBody(email(), { telegramBotToken: freshBot() }));
    expect(third.status).toBe(429);
    expect(third.body.error.message).toMatch(/from your network/);
    expect((await from('198.51.100.8', signupBody(email(), { telegramBotToken: freshBot() }))).status).toBe(201);

    // A lapsed signup no longer counts.
    await db.handle.db
      .updateTable('customers')
      .set({ pending_expires_at: new Date(Date.now() - 1000) })
      .where('name', '=', first.body.customerId)
      .execute();
    expect((await from('203.0.113.50', signupBody(email(), { telegramBotToken: bot }))).status).toBe(201);
  });
});

describe('sequences of signups, payments and cancellations for one email (property)', () => {
  type Command =
    | { kind: 'signup'; proof: number | undefined }
    | { kind: 'pay'; attempt: number }
    | { kind: 'cancel' }
    | { kind: 'lapse'; attempt: number };

  const command: fc.Arbitrary<Command> = fc.oneof(
    { weight: 4, arbitrary: fc.option(fc.nat(7), { nil: undefined }).map((proof) => ({ kind: 'signup' as const, proof })) },
    { weight: 3, arbitrary: fc.nat(7).map((attempt) => ({ kind: 'pay' as const, attempt })) },
    { weight: 2, arbitrary: fc.constant({ kind: 'cancel' as const }) },
    { weight: 1, arbitrary: fc.nat(7).map((attempt) => ({ kind: 'lapse' as const, attempt })) },
  );

  interface Attempt {
    name: string;
    uid: string;
    instructions: string;
    bot: string;
    session: string;
    checkout: FakeSession;
    paid: boolean;
    /** Replaced by a later signup that presented this one's session, or let lapse. */
    gone: boolean;
  }

  it("every live customer runs exactly what its payer submitted, one live per email, and no incarnation inherits another's gateway token or a retained name", async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(command, { minLength: 1, maxLength: 8 }), async (commands) => {
        const address = email();
        const attempts: Attempt[] = [];
        const subscriptions = new Map<string, { customer: string; subscription: string; uid: string }>();
        // gateway token -> the (name, uid) it was made for; a cancelled (name, uid) must stay.
        const gateways = new Map<string, string>();
        const retained = new Map<string, string>();

        for (const [i, step] of commands.entries()) {
          if (step.kind === 'signup') {
            const proofOf = step.proof === undefined ? undefined : attempts[step.proof % Math.max(1, attempts.length)];
            const instructions = `attempt ${i} of ${address}`;
            const bot = freshBot();
            const res = await signup(
              signupBody(address, { telegramBotToken: bot, instructions }),
              proofOf ? { session: proofOf.session } : {},
            );
            if (res.status !== 201) {
              expect([409]).toContain(res.status); // the email is live, or the proved signup was paid
              continue;
            }
            const name = res.body.customerId as string;
            const { uid } = await row(name);
            const opened = await openSession(app.url, res.body.statusUrl);
            if (proofOf && proofOf.name === name) proofOf.gone = true;
            for (const earlier of attempts) if (earlier.name === name && earlier.uid !== uid) expect(earlier.gone).toBe(true);
            attempts.push({
              name,
              uid,
              instructions,
              bot,
              session: opened.session as string,
              checkout: checkoutOf(name, uid),
              paid: false,
              gone: false,
            });
          } else if (step.kind === 'pay' && attempts.length > 0) {
            const attempt = attempts[step.attempt % attempts.length] as Attempt;
            if (attempt.checkout.status !== 'open') continue; // Stripe cannot pay an expired or completed session
            const paid = await pay(attempt.checkout);
            attempt.paid = true;
            subscriptions.set(attempt.name, { customer: paid.customer, subscription: paid.subscription, uid: attempt.uid });
          } else if (step.kind === 'cancel') {
            const live = (await rowsFor(address)).find((r) => r.state === 'active');
            const sub = live ? subscriptions.get(live.name) : undefined;
            if (live && sub) {
              await deliver(
                stripeEvent(
                  'customer.subscription.deleted',
                  subscriptionObject({
                    id: sub.subscription,
                    customer: sub.customer,
                    status: 'canceled',
                    name: live.name,
                    uid: sub.uid,
                  }),
                  { created: eventClock++ },
                ),
              );
            }
          } else if (step.kind === 'lapse' && attempts.length > 0) {
            const attempt = attempts[step.attempt % attempts.length] as Attempt;
            if (attempt.checkout.status === 'open') attempt.checkout.status = 'expired';
            if ((await row(attempt.name)).uid === attempt.uid && (await row(attempt.name)).state === 'pending')
              attempt.gone = true;
            await db.handle.db
              .updateTable('customers')
              .set({ pending_expires_at: new Date(Date.now() - 1000) })
              .where('name', '=', attempt.name)
              .where('uid', '=', attempt.uid)
              .where('state', '=', 'pending')
              .execute();
          }

          // Invariants after every step.
          const rows = await rowsFor(address);
          expect(rows.filter((r) => r.state === 'active' || r.state === 'suspended').length).toBeLessThanOrEqual(1);
          for (const r of rows) {
            if (r.state === 'active' || r.state === 'suspended' || r.state === 'cancelled') {
              // Live or retained: made live by a paid checkout of this very incarnation, with its settings.
              const payer = attempts.find((a) => a.uid === r.uid);
              expect(payer?.paid).toBe(true);
              expect(r.instructions).toBe(payer?.instructions);
              expect((await customers.readSecrets(r.name)).telegramBotToken).toBe(payer?.bot);
            }
            if (r.state === 'active') {
              const token = await customers.gatewayToken(r.name);
              const owner = `${r.name}/${r.uid}`;
              expect(gateways.get(token) ?? owner).toBe(owner);
              gateways.set(token, owner);
            }
            if (r.state === 'cancelled') retained.set(r.name, r.uid);
          }
          // A signup nobody replaced with its own session (and that did not lapse) is untouched.
          for (const a of attempts.filter((x) => !x.gone)) {
            expect(await row(a.name)).toMatchObject({ uid: a.uid, instructions: a.instructions });
          }
          // A retained (cancelled, not purged) customer keeps its name: no new incarnation takes it.
          for (const [name, uid] of retained) expect((await row(name)).uid).toBe(uid);
          for (const r of rows.filter((x) => x.state === 'active')) {
            const gw = await customers.gatewayToken(r.name);
            expect(gateways.get(gw)).toBe(`${r.name}/${r.uid}`);
          }
        }
      }),
      { numRuns: 40 },
    );
  });
});
