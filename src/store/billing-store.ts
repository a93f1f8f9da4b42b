import { createHash, randomBytes, randomUUID, timingSafeEqual } from 'node:crypto';
import { sql, type ColumnType, type Kysely, type Transaction } from 'kysely';
import {
  decide,
  type BillingIntent,
  type BillingRecord,
  type CustomerEventNote,
  type CustomerRef,
  type StripeEventLike,
} from '../billing/event-mapping.js';
import type { CustomerStatus, DesiredState, PlanName } from '../domain/customer.js';
import { disambiguatedName, nameFromEmail } from '../domain/naming.js';
import type { DatabaseHandle } from './database.js';
import { ConflictError, isUniqueViolation } from './errors.js';
import type { CustomerRow, Database } from './schema.js';
import type { SecretBox } from './secret-box.js';

/**
 * What signup and Stripe webhooks write: pending customers with their access token (hashed)
 * and sealed secrets, capacity, and the webhook ledger. Writers only: nothing here touches the
 * world; the controller follows the rows.
 */

/** Columns added by migration 0002 (not yet in schema.ts). */
type BillingDatabase = Database & {
  customers: { billing_suspended: ColumnType<boolean, boolean | undefined, boolean> };
};
type BillingRow = CustomerRow & { billing_suspended: boolean };
type Trx = Transaction<BillingDatabase>;

export interface SignupInput {
  email: string;
  displayName: string;
  instructions: string;
  plan: PlanName;
  telegramBotToken: string;
  /** From Telegram's getMe, for the t.me link. */
  telegramBotUsername: string;
  modelProvider?: string | undefined;
  modelApiKey?: string | undefined;
}

export interface SignupReservation {
  name: string;
  /** Shown once, in the status URL; only its hash is stored. */
  accessToken: string;
  /** True when this attempt inserted the row (so a failed checkout removes it again). */
  created: boolean;
  /** Unique per attempt: the checkout's idempotency key is built from it. */
  attempt: string;
}

/** Live and unexpired pending customers already fill BLYTZ_MAX_CUSTOMERS. */
export class CapacityError extends Error {
  constructor(readonly max: number) {
    super(`Blytz is at capacity (${max} customers); please try again later`);
    this.name = 'CapacityError';
  }
}

/** The email already has a live (active or suspended) assistant. */
export class EmailTakenError extends ConflictError {
  constructor(options?: { cause?: unknown }) {
    super('this email already has a live assistant', options);
    this.name = 'EmailTakenError';
  }
}

export type WebhookOutcome =
  'applied' | 'unchanged' | 'stale' | 'foreign_subscription' | 'ignored' | 'unknown_customer' | 'duplicate' | 'id_conflict';

export interface WebhookResult {
  outcome: WebhookOutcome;
  customer?: string;
}

/** What the status endpoint may show; no secret in here. */
export interface CustomerStatusRecord {
  name: string;
  state: DesiredState;
  status: CustomerStatus;
  telegramBotUsername: string | null;
  billingWarning: string | null;
  paid: boolean;
  /** Pending and past its expiry: the signup lapsed. */
  pendingExpired: boolean;
}

export interface BillingStoreOptions {
  /** BLYTZ_MAX_CUSTOMERS. */
  maxCustomers: number;
  /** How long a pending signup holds its place before its checkout exists (default 15 min). */
  reservationTtlMs?: number;
  /** Pending lifetime once the checkout exists, when Stripe does not say (default 24 h, Stripe's own). */
  checkoutTtlMs?: number;
}

// Any fixed number: signups queue on it so the capacity count and the insert are atomic.
const SIGNUP_LOCK_KEY = 0x626c_7973; // "blys"
/** Reads and single-statement writes of one event before it takes the row lock instead. */
const OPTIMISTIC_ATTEMPTS = 3;

export class BillingStore {
  readonly #db: Kysely<BillingDatabase>;
  readonly #box: SecretBox;
  readonly #options: Required<BillingStoreOptions>;

  constructor(handle: DatabaseHandle, box: SecretBox, options: BillingStoreOptions) {
    this.#db = handle.db.withTables<{ customers: BillingDatabase['customers'] }>();
    this.#box = box;
    this.#options = { reservationTtlMs: 15 * 60_000, checkoutTtlMs: 24 * 3_600_000, ...options };
  }

  /**
   * Holds a place for a signup: a pending customer, new or reused. Atomic against concurrent
   * signups (a transaction-scoped advisory lock serialises the capacity count and the write).
   * The same email while pending reuses its row; after cancellation (or purge) the email gets
   * its old name back; another email holding the name leads to the disambiguated name.
   */
  async reserveSignup(input: SignupInput): Promise<SignupReservation> {
    const email = input.email.trim().toLowerCase();
    const accessToken = randomBytes(32).toString('base64url');
    const attempt = randomUUID();
    try {
      return await this.#db.transaction().execute(async (trx) => {
        await sql`SELECT pg_advisory_xact_lock(${SIGNUP_LOCK_KEY})`.execute(trx);
        const existing = (await trx
          .selectFrom('customers')
          .selectAll()
          .where(sql<boolean>`lower(email) = ${email}`)
          .where('deleted_at', 'is', null)
          .where('state', '<>', 'cancelled')
          .forUpdate()
          .executeTakeFirst()) as BillingRow | undefined;
        if (existing && existing.state !== 'pending') throw new EmailTakenError();
        if (!existing || !(await this.#holdsPlace(trx, existing.name))) await this.#ensureCapacity(trx);

        const name = existing?.name ?? (await this.#freeName(trx, email)).name;
        const columns = {
          ...this.#signupColumns(name, email, input),
          access_token_hash: hashToken(accessToken),
          pending_expires_at: sql<Date>`now() + ${this.#options.reservationTtlMs} * interval '1 millisecond'`,
        };
        if (existing) {
          // Same email, still pending: a fresh attempt on the same row (its old checkout stays valid).
          await trx.updateTable('customers').set(columns).where('name', '=', name).execute();
          return { name, accessToken, created: false, attempt };
        }
        const holder = (await trx.selectFrom('customers').selectAll().where('name', '=', name).forUpdate().executeTakeFirst()) as
          BillingRow | undefined;
        if (!holder) {
          await trx
            .insertInto('customers')
            .values({ ...columns, template: 'personal-assistant', paused: false, labels: '{}' })
            .execute();
          return { name, accessToken, created: true, attempt };
        }
        // A returning customer (cancelled, or purged) starts over on the same row. The time of the
        // last Stripe event is kept, so a late event of the old subscription stays stale.
        const purged = holder.deleted_at !== null;
        await trx
          .updateTable('customers')
          .set({
            ...columns,
            labels: '{}',
            template: 'personal-assistant',
            paused: false,
            telegram_bot_token_secret_ref: 'null',
            model_api_key_secret_ref: 'null',
            stripe_customer_id: null,
            stripe_subscription_id: null,
            stripe_checkout_session_id: null,
            billing_warning: null,
            billing_suspended: false,
            ...(purged ? { deleted_at: null, created_at: new Date(), status: '{}', gateway_token_enc: null } : {}),
          })
          .where('name', '=', name)
          .execute();
        return { name, accessToken, created: false, attempt };
      });
    } catch (error) {
      if (isUniqueViolation(error, 'customers_live_email')) throw new EmailTakenError({ cause: error });
      throw error;
    }
  }

  /** The checkout exists: the pending signup now lives as long as its session. */
  async attachCheckout(reservation: SignupReservation, session: { id: string; expiresAt: number | undefined }): Promise<void> {
    const expiresAt = session.expiresAt
      ? sql<Date>`to_timestamp(${session.expiresAt})`
      : sql<Date>`now() + ${this.#options.checkoutTtlMs} * interval '1 millisecond'`;
    await this.#db
      .updateTable('customers')
      .set({ stripe_checkout_session_id: session.id, pending_expires_at: expiresAt })
      .where('name', '=', reservation.name)
      .where('state', '=', 'pending')
      .where('access_token_hash', '=', hashToken(reservation.accessToken))
      .execute();
  }

  /**
   * Undoes a reservation whose checkout could not be created, so a retry is not blocked and no
   * capacity is held: a row this attempt inserted is removed (it never reached the world); a
   * reused row stays as it was before (pending, holding its old checkout).
   */
  async releaseSignup(reservation: SignupReservation): Promise<void> {
    if (!reservation.created) return;
    await this.#db
      .deleteFrom('customers')
      .where('name', '=', reservation.name)
      .where('state', '=', 'pending')
      .where('stripe_checkout_session_id', 'is', null)
      .where('access_token_hash', '=', hashToken(reservation.accessToken))
      .execute();
  }

  /** The customer's status view when `token` is its access token; undefined otherwise (no hint which). */
  async statusFor(name: string, token: string): Promise<CustomerStatusRecord | undefined> {
    const row = (await this.#db
      .selectFrom('customers')
      .selectAll()
      .where('name', '=', name)
      .where('deleted_at', 'is', null)
      .executeTakeFirst()) as BillingRow | undefined;
    if (!tokenMatches(token, row?.access_token_hash ?? null)) return undefined;
    if (!row) return undefined;
    const expiresAt = row.pending_expires_at ? new Date(row.pending_expires_at).getTime() : undefined;
    return {
      name: row.name,
      state: row.state as DesiredState,
      status: row.status as CustomerStatus,
      telegramBotUsername: row.telegram_bot_username,
      billingWarning: row.billing_warning,
      paid: row.stripe_subscription_id !== null && row.state !== 'pending',
      pendingExpired: row.state === 'pending' && expiresAt !== undefined && expiresAt <= Date.now(),
    };
  }

  /** For routes that only need to know the token is right (pairing). */
  async verifyAccessToken(name: string, token: string): Promise<boolean> {
    return (await this.statusFor(name, token)) !== undefined;
  }

  /**
   * Records a verified Stripe event in the ledger and applies it: the ledger row, the customer's
   * change (the trigger's NOTIFY with it) and its event note are one statement, so one
   * transaction and one round trip, after one read that finds the customer (or sees the event
   * id already recorded: a duplicate costs that read alone). The statement changes the customer
   * only as that read saw it (its resource version) and only while the event id is unrecorded;
   * when either moved on meanwhile it writes nothing and the read is taken again. An event
   * whose Stripe ids belong to another customer, or one that keeps losing such races, goes the
   * long way: one transaction holding the customer's row lock. Errors propagate: the caller
   * answers 5xx so Stripe retries.
   */
  async recordStripeEvent(event: StripeEventLike, intent: BillingIntent): Promise<WebhookResult> {
    for (let attempt = 0; attempt < OPTIMISTIC_ATTEMPTS; attempt++) {
      const read = await this.#readForEvent(event.id, intent);
      if (read.recorded) return { outcome: 'duplicate' };
      let written: WebhookResult | undefined;
      try {
        written = await this.#writeEvent(event, intent, read.row);
      } catch (error) {
        if (isUniqueViolation(error)) break; // a Stripe id another customer holds: the long way says which
        throw error;
      }
      if (written) return written;
    }
    return this.#recordLocked(event, intent);
  }

  /** In one query: whether the ledger has the event, and the customer it names (lookups in `findCustomer`'s order). */
  async #readForEvent(eventId: string, intent: BillingIntent): Promise<{ recorded: boolean; row: LedgerRow | undefined }> {
    const ref: CustomerRef = intent.kind === 'ignored' ? {} : intent.ref;
    const { rows } = await sql<LedgerRow & { recorded: boolean; found: boolean }>`
      SELECT EXISTS (SELECT 1 FROM webhook_events WHERE event_id = ${eventId}) AS recorded, c.name IS NOT NULL AS found, c.*
      FROM (SELECT 1) AS one
      LEFT JOIN LATERAL (
        SELECT name, resource_version, state, billing_suspended, billing_warning, stripe_customer_id, stripe_subscription_id,
          stripe_checkout_session_id, stripe_subscription_event_at, pending_expires_at
        FROM customers
        WHERE deleted_at IS NULL AND (
          name = ${ref.name ?? null} OR stripe_subscription_id = ${ref.subscriptionId ?? null}
          OR stripe_customer_id = ${ref.stripeCustomerId ?? null} OR stripe_checkout_session_id = ${ref.checkoutSessionId ?? null}
        )
        ORDER BY CASE
          WHEN name = ${ref.name ?? null} THEN 0
          WHEN stripe_subscription_id = ${ref.subscriptionId ?? null} THEN 1
          WHEN stripe_customer_id = ${ref.stripeCustomerId ?? null} THEN 2
          ELSE 3
        END
        LIMIT 1
      ) AS c ON true
    `.execute(this.#db);
    const first = rows[0];
    if (!first) throw new Error('webhook ledger read returned no row');
    const { recorded, found, ...row } = first;
    return { recorded, row: found ? row : undefined };
  }

  /**
   * The ledger row, the customer's change and the note in one statement. Undefined when it wrote
   * nothing because the customer changed since `row` was read (or the event was recorded
   * meanwhile): read again.
   */
  async #writeEvent(event: StripeEventLike, intent: BillingIntent, row: LedgerRow | undefined): Promise<WebhookResult | undefined> {
    const decision = intent.kind === 'ignored' || !row ? undefined : decide(toRecord(row), intent, event.created);
    const outcome: WebhookOutcome = intent.kind === 'ignored' ? 'ignored' : !row ? 'unknown_customer' : (decision?.outcome ?? 'ignored');
    const customer = intent.kind === 'ignored' ? undefined : row?.name;
    const note = decision?.note;
    const ledger = sql`
      INSERT INTO webhook_events (event_id, type, outcome, event_created, customer)
      VALUES (${event.id}, ${event.type}, ${outcome}, ${event.created}, ${customer ?? null})
      ON CONFLICT (event_id) DO NOTHING
      RETURNING event_id`;
    const noteInsert = note
      ? sql`
        INSERT INTO customer_events (customer, type, reason, message)
        SELECT ${customer ?? ''}, ${note.type}, ${note.reason}, ${note.message.slice(0, 1000)}
        WHERE EXISTS (SELECT 1 FROM ledger)
        ON CONFLICT (customer, type, reason, md5(message))
        DO UPDATE SET count = customer_events.count + 1, last_seen = now()`
      : sql`SELECT 1 WHERE false`;
    if (decision?.outcome !== 'applied' || !row) {
      const result = await sql<{ recorded: number }>`
        WITH ledger AS (${ledger}), note AS (${noteInsert})
        SELECT count(*)::int AS recorded FROM ledger
      `.execute(this.#db);
      // Nothing recorded: the same event id was recorded concurrently.
      if ((result.rows[0]?.recorded ?? 0) === 0) return { outcome: 'duplicate' };
      return customer === undefined ? { outcome } : { outcome, customer };
    }
    const next = decision.next;
    const before = toRecord(row);
    const pendingExpiresAt =
      next.pendingExpiresAt === before.pendingExpiresAt
        ? sql`pending_expires_at`
        : sql`${next.pendingExpiresAt === null ? null : new Date(next.pendingExpiresAt * 1000)}::timestamptz`;
    // The ledger row is written only with the customer's change: the change only where the row
    // is as read and the event id still unrecorded (a concurrent duplicate changes the row first).
    const result = await sql<{ recorded: number }>`
      WITH changed AS (
        UPDATE customers SET
          state = ${next.state}, billing_suspended = ${next.billingSuspended}, billing_warning = ${next.billingWarning},
          stripe_customer_id = ${next.stripeCustomerId}, stripe_subscription_id = ${next.stripeSubscriptionId},
          stripe_checkout_session_id = ${next.stripeCheckoutSessionId},
          stripe_subscription_event_at = ${next.subscriptionEventAt}, pending_expires_at = ${pendingExpiresAt}
        WHERE name = ${row.name} AND resource_version = ${row.resource_version}
          AND NOT EXISTS (SELECT 1 FROM webhook_events WHERE event_id = ${event.id})
        RETURNING name
      ),
      ledger AS (
        INSERT INTO webhook_events (event_id, type, outcome, event_created, customer)
        SELECT ${event.id}, ${event.type}, ${outcome}, ${event.created}, name FROM changed
        ON CONFLICT (event_id) DO NOTHING
        RETURNING event_id
      ),
      note AS (${noteInsert})
      SELECT count(*)::int AS recorded FROM ledger
    `.execute(this.#db);
    if ((result.rows[0]?.recorded ?? 0) === 0) return undefined;
    return { outcome, customer: row.name };
  }

  /** The long way: one transaction holding the customer's row lock (see `recordStripeEvent`). */
  async #recordLocked(event: StripeEventLike, intent: BillingIntent): Promise<WebhookResult> {
    return this.#db.transaction().execute(async (trx) => {
      const inserted = await trx
        .insertInto('webhook_events')
        .values({ event_id: event.id, type: event.type, outcome: 'received', event_created: event.created })
        .onConflict((oc) => oc.column('event_id').doNothing())
        .returning('event_id')
        .executeTakeFirst();
      if (!inserted) return { outcome: 'duplicate' };
      const result = await this.#applyIntent(trx, event, intent);
      await trx
        .updateTable('webhook_events')
        .set({ outcome: result.outcome, customer: result.customer ?? null })
        .where('event_id', '=', event.id)
        .execute();
      return result;
    });
  }

  async #applyIntent(trx: Trx, event: StripeEventLike, intent: BillingIntent): Promise<WebhookResult> {
    if (intent.kind === 'ignored') return { outcome: 'ignored' };
    const row = await findCustomer(trx, intent.ref);
    if (!row) return { outcome: 'unknown_customer' };
    const before = toRecord(row);
    const decision = decide(before, intent, event.created);
    if (decision.outcome === 'applied') {
      const next = decision.next;
      // Stripe ids are unique per customer. An id already held by another row would fail the
      // update on every retry (a poison event answered 5xx for days): record it instead.
      const holder = await idHolder(trx, row.name, next, before);
      if (holder) {
        await recordNote(trx, row.name, {
          type: 'Warning',
          reason: 'StripeIdConflict',
          message: `Stripe event ${event.id} not applied: its ids already belong to customer ${holder}`,
        });
        return { outcome: 'id_conflict', customer: row.name };
      }
      await trx
        .updateTable('customers')
        .set({
          state: next.state,
          billing_suspended: next.billingSuspended,
          billing_warning: next.billingWarning,
          stripe_customer_id: next.stripeCustomerId,
          stripe_subscription_id: next.stripeSubscriptionId,
          stripe_checkout_session_id: next.stripeCheckoutSessionId,
          stripe_subscription_event_at: next.subscriptionEventAt,
          ...(next.pendingExpiresAt !== before.pendingExpiresAt
            ? { pending_expires_at: next.pendingExpiresAt === null ? null : new Date(next.pendingExpiresAt * 1000) }
            : {}),
        })
        .where('name', '=', row.name)
        .execute();
    }
    if (decision.note) await recordNote(trx, row.name, decision.note);
    return { outcome: decision.outcome, customer: row.name };
  }

  /** Whether the pending row `name` counts against capacity now (unexpired). */
  async #holdsPlace(trx: Trx, name: string): Promise<boolean> {
    const row = await trx
      .selectFrom('customers')
      .select(sql<boolean>`pending_expires_at IS NULL OR pending_expires_at > now()`.as('holds'))
      .where('name', '=', name)
      .executeTakeFirst();
    return row?.holds === true;
  }

  async #ensureCapacity(trx: Trx): Promise<void> {
    const { rows } = await sql<{ n: number }>`
      SELECT count(*)::integer AS n FROM customers
      WHERE deleted_at IS NULL
        AND (state IN ('active', 'suspended')
             OR (state = 'pending' AND (pending_expires_at IS NULL OR pending_expires_at > now())))
    `.execute(trx);
    if ((rows[0]?.n ?? 0) >= this.#options.maxCustomers) throw new CapacityError(this.#options.maxCustomers);
  }

  /** The email's own name, unless a different, unpurged email holds it. */
  async #freeName(trx: Trx, email: string): Promise<{ name: string }> {
    for (const name of [nameFromEmail(email), disambiguatedName(email)]) {
      const holder = await trx
        .selectFrom('customers')
        .select(['email', 'deleted_at'])
        .where('name', '=', name)
        .executeTakeFirst();
      if (!holder || holder.deleted_at !== null || holder.email.toLowerCase() === email) return { name };
    }
    throw new ConflictError(`no free customer name for ${email}; choose another email or ask an operator`);
  }

  #signupColumns(name: string, email: string, input: SignupInput) {
    return {
      name,
      email,
      display_name: input.displayName,
      plan: input.plan,
      state: 'pending',
      instructions: input.instructions,
      // Sealed with the customer's name as associated data, like CustomerStore does.
      telegram_bot_token_enc: this.#box.seal(input.telegramBotToken, name),
      telegram_bot_username: input.telegramBotUsername,
      model_provider: input.modelProvider ?? null,
      model_api_key_enc: input.modelApiKey ? this.#box.seal(input.modelApiKey, name) : null,
    } as const;
  }
}

async function findCustomer(trx: Trx, ref: CustomerRef): Promise<BillingRow | undefined> {
  const lookups: Array<
    ['name' | 'stripe_subscription_id' | 'stripe_customer_id' | 'stripe_checkout_session_id', string | undefined]
  > = [
    ['name', ref.name],
    ['stripe_subscription_id', ref.subscriptionId],
    ['stripe_customer_id', ref.stripeCustomerId],
    ['stripe_checkout_session_id', ref.checkoutSessionId],
  ];
  for (const [column, value] of lookups) {
    if (!value) continue;
    const row = await trx
      .selectFrom('customers')
      .selectAll()
      .where(column, '=', value)
      .where('deleted_at', 'is', null)
      .forUpdate()
      .executeTakeFirst();
    if (row) return row as BillingRow;
  }
  return undefined;
}

/** Another customer holding a Stripe id that `next` newly gives to `name`, if any. */
async function idHolder(trx: Trx, name: string, next: BillingRecord, before: BillingRecord): Promise<string | undefined> {
  const ids: Array<['stripe_customer_id' | 'stripe_subscription_id' | 'stripe_checkout_session_id', string]> = [];
  if (next.stripeCustomerId && next.stripeCustomerId !== before.stripeCustomerId)
    ids.push(['stripe_customer_id', next.stripeCustomerId]);
  if (next.stripeSubscriptionId && next.stripeSubscriptionId !== before.stripeSubscriptionId) {
    ids.push(['stripe_subscription_id', next.stripeSubscriptionId]);
  }
  if (next.stripeCheckoutSessionId && next.stripeCheckoutSessionId !== before.stripeCheckoutSessionId) {
    ids.push(['stripe_checkout_session_id', next.stripeCheckoutSessionId]);
  }
  for (const [column, value] of ids) {
    const holder = await trx
      .selectFrom('customers')
      .select('name')
      .where(column, '=', value)
      .where('name', '<>', name)
      .executeTakeFirst();
    if (holder) return holder.name;
  }
  return undefined;
}

/** What the ledger's read takes of a customer: its name, version and billing columns. */
type LedgerRow = Pick<
  BillingRow,
  | 'name'
  | 'resource_version'
  | 'state'
  | 'billing_suspended'
  | 'billing_warning'
  | 'stripe_customer_id'
  | 'stripe_subscription_id'
  | 'stripe_checkout_session_id'
  | 'stripe_subscription_event_at'
  | 'pending_expires_at'
>;

function toRecord(row: LedgerRow): BillingRecord {
  return {
    state: row.state as DesiredState,
    billingSuspended: row.billing_suspended,
    billingWarning: row.billing_warning,
    stripeCustomerId: row.stripe_customer_id,
    stripeSubscriptionId: row.stripe_subscription_id,
    stripeCheckoutSessionId: row.stripe_checkout_session_id,
    subscriptionEventAt: row.stripe_subscription_event_at === null ? null : Number(row.stripe_subscription_event_at),
    pendingExpiresAt: row.pending_expires_at ? Math.floor(new Date(row.pending_expires_at).getTime() / 1000) : null,
  };
}

async function recordNote(trx: Trx, name: string, note: CustomerEventNote): Promise<void> {
  // Same aggregation as CustomerStore.recordEvent, inside this transaction.
  await sql`
    INSERT INTO customer_events (customer, type, reason, message)
    VALUES (${name}, ${note.type}, ${note.reason}, ${note.message.slice(0, 1000)})
    ON CONFLICT (customer, type, reason, md5(message))
    DO UPDATE SET count = customer_events.count + 1, last_seen = now()
  `.execute(trx);
}

export function hashToken(token: string): string {
  return createHash('sha256').update(token, 'utf8').digest('hex');
}

// Compared even when there is no row, so a missing customer takes as long as a wrong token.
const NO_HASH = hashToken(randomBytes(32).toString('hex'));

function tokenMatches(token: string, storedHash: string | null): boolean {
  const expected = Buffer.from(storedHash ?? NO_HASH, 'hex');
  const actual = Buffer.from(hashToken(token), 'hex');
  return expected.length === actual.length && timingSafeEqual(expected, actual) && storedHash !== null;
}
