import { createHash, randomBytes, randomUUID } from 'node:crypto';
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
import { disambiguatedName, nameFromEmail, suffixedName } from '../domain/naming.js';
import { Batcher } from './batcher.js';
import { prepared, type DatabaseHandle } from './database.js';
import { ConflictError, isUniqueViolation } from './errors.js';
import type { CustomerRow, Database } from './schema.js';
import type { SecretBox } from './secret-box.js';

/**
 * What signup and Stripe webhooks write: pending customers with their access token (hashed)
 * and sealed secrets, capacity, sessions, and the webhook ledger. Writers only: nothing here
 * touches the world; the controller follows the rows.
 *
 * Ownership (issue 19): a pending signup belongs to whoever started it. Its row is written once
 * and never changed by anyone else: a second signup with the same email starts a row of its own
 * (another name), unless it proves it is the same person (a session opened with the first
 * signup's access token), and then it replaces that signup as a new incarnation (new uid). A
 * cancelled customer's email signing up again gets a new row too: the old one keeps its
 * workspace, memory and gateway token until it is purged. Stripe objects and sessions carry the
 * uid they were made for, so nothing reaches a later holder of the same name.
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
  /** The client key (IPv4 address or IPv6 /64) that asked, for the per-client bound. */
  client: string;
}

export interface SignupReservation {
  name: string;
  /** The incarnation this signup made; Stripe objects carry it as `metadata.blytz_uid`. */
  uid: string;
  /** Shown once, in the status URL; only its hash is stored, and it opens one session. */
  accessToken: string;
  /** Unique per attempt: the checkout's idempotency key is built from it. */
  attempt: string;
}

/** A pending signup a session proved to own. */
export interface PendingSignupRef {
  name: string;
  uid: string;
  email: string;
  checkoutSessionId: string | null;
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

/** Too many unpaid signups from one client, or with one bot, at once. */
export class PendingLimitError extends Error {
  constructor(
    readonly by: 'client' | 'bot',
    readonly retryAfterSeconds: number,
  ) {
    super(
      by === 'client'
        ? 'too many unpaid signups from your network at once; finish one (its status page) or wait until one expires'
        : 'this Telegram bot already has a signup waiting for payment; continue it from its status page, or wait until it expires',
    );
    this.name = 'PendingLimitError';
  }
}

export type WebhookOutcome =
  | 'applied'
  | 'unchanged'
  | 'stale'
  | 'foreign_subscription'
  | 'foreign_signup'
  | 'email_conflict'
  | 'ignored'
  | 'unknown_customer'
  | 'duplicate'
  | 'id_conflict';

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
  /** Unpaid, unexpired signups one client may hold at once (default 3). */
  maxPendingPerClient?: number;
  /** Unpaid, unexpired signups one Telegram bot may be in at once (default 1). */
  maxPendingPerBot?: number;
  /** How long a session opened with the access token lasts (default 30 days). */
  sessionTtlMs?: number;
}

// Any fixed number: signups queue on it so the capacity count and the insert are atomic.
const SIGNUP_LOCK_KEY = 0x626c_7973; // "blys"
// Random suffixes tried when an email's own names are held.
const SUFFIX_ATTEMPTS = 5;

type NameChoice = { name: string; holder: 'none' | 'recyclable' };
/** Reads and single-statement writes of one event before it takes the row lock instead. */
const OPTIMISTIC_ATTEMPTS = 3;
/**
 * Webhook ledger statements in flight at once, and events per statement. Two lanes: a statement
 * waiting on a row lock (the long way holds one) leaves the other running.
 */
const LEDGER_BATCHES = { lanes: 2, maxSize: 64 };
/**
 * Customers whose ledger rows this process remembers (see `recordStripeEvent`): a few hundred
 * bytes each, the oldest forgotten first.
 */
const KNOWN_CUSTOMERS = 10_000;
/** Event ids this process knows the ledger has (see `recordStripeEvent`), the oldest forgotten first. */
const KNOWN_EVENTS = 10_000;

export class BillingStore {
  readonly #db: Kysely<BillingDatabase>;
  readonly #box: SecretBox;
  readonly #options: Required<BillingStoreOptions>;
  readonly #ledgerReads = new Batcher<LedgerLookup, LedgerRead>((lookups) => this.#readForEvents(lookups), LEDGER_BATCHES);
  readonly #ledgerWrites = new Batcher<LedgerWrite, LedgerWritten>((writes) => this.#writeEvents(writes), {
    ...LEDGER_BATCHES,
    keys: (w) => (w.customer === undefined ? [`event:${w.eventId}`] : [`event:${w.eventId}`, `customer:${w.customer}`]),
    // A Stripe id another customer holds fails the whole statement: each event then on its own.
    alone: (error) => isUniqueViolation(error),
  });
  /**
   * The ledger's rows of customers events name, by name, as this process last read or wrote
   * them. Only a guess: a write made from one checks the row is still as remembered (its uid and
   * resource version), so a stale one costs a write that does nothing and the read after it.
   */
  readonly #knownCustomers = new Map<string, LedgerRow>();
  /**
   * Event ids this process recorded or found recorded. The ledger never forgets an event, so a
   * delivery of one of these again is a duplicate without asking Postgres.
   */
  readonly #knownEvents = new Set<string>();

  constructor(handle: DatabaseHandle, box: SecretBox, options: BillingStoreOptions) {
    this.#db = handle.db.withTables<{ customers: BillingDatabase['customers'] }>();
    this.#box = box;
    this.#options = {
      reservationTtlMs: 15 * 60_000,
      checkoutTtlMs: 24 * 3_600_000,
      maxPendingPerClient: 3,
      maxPendingPerBot: 1,
      sessionTtlMs: 30 * 86_400_000,
      ...options,
    };
  }

  /**
   * Holds a place for a signup: a pending customer of its own. Atomic against concurrent
   * signups (a transaction-scoped advisory lock serialises the counts and the write).
   *
   * Without `replacing`, the signup never touches another row: it takes the email's own name if
   * that is free (or held by a lapsed unpaid signup of the same email, or purged), else another
   * name. With `replacing` (a pending signup the caller proved to own, see `ownPendingSignup`),
   * that signup is replaced in place by a new incarnation with the new settings.
   */
  async reserveSignup(input: SignupInput, replacing?: PendingSignupRef): Promise<SignupReservation> {
    const email = normaliseEmail(input.email);
    const accessToken = randomBytes(32).toString('base64url');
    const uid = randomUUID();
    const attempt = randomUUID();
    const botHash = hashToken(input.telegramBotToken);
    try {
      return await this.#db.transaction().execute(async (trx) => {
        await sql`SELECT pg_advisory_xact_lock(${SIGNUP_LOCK_KEY})`.execute(trx);
        const live = await trx
          .selectFrom('customers')
          .select('name')
          .where(sql<boolean>`lower(email) = ${email}`)
          .where('state', 'in', ['active', 'suspended'])
          .where('deleted_at', 'is', null)
          .executeTakeFirst();
        if (live) throw new EmailTakenError();

        let choice: NameChoice;
        if (replacing) {
          const row = await trx
            .selectFrom('customers')
            .select('name')
            .where('name', '=', replacing.name)
            .where('uid', '=', replacing.uid)
            .where('state', '=', 'pending')
            .where('deleted_at', 'is', null)
            .where('stripe_subscription_id', 'is', null)
            .where(sql<boolean>`lower(email) = ${email}`)
            .forUpdate()
            .executeTakeFirst();
          if (!row) throw new ConflictError('that signup changed meanwhile (paid, replaced or gone); open its status page again');
          if (!(await this.#holdsPlace(trx, row.name))) await this.#ensureCapacity(trx);
          choice = { name: row.name, holder: 'recyclable' };
        } else {
          await this.#ensureBounds(trx, input.client, botHash);
          await this.#ensureCapacity(trx);
          choice = await this.#freeName(trx, email);
        }

        const columns = {
          ...this.#signupColumns(choice.name, email, input),
          uid,
          signup_client: input.client.slice(0, 64),
          telegram_bot_token_hash: botHash,
          access_token_hash: hashToken(accessToken),
          pending_expires_at: sql<Date>`now() + ${this.#options.reservationTtlMs} * interval '1 millisecond'`,
        };
        if (choice.holder === 'none') {
          await trx
            .insertInto('customers')
            .values({ ...columns, template: 'personal-assistant', paused: false, labels: '{}' })
            .execute();
        } else {
          // A new incarnation on an old row: nothing of the previous holder's stays (its Stripe
          // ids, status, gateway token, events, sessions). Its late Stripe events carry its own
          // uid or ids, which this row no longer has, so they are refused as foreign.
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
              stripe_subscription_event_at: null,
              billing_warning: null,
              billing_suspended: false,
              deleted_at: null,
              created_at: new Date(),
              status: '{}',
              gateway_token_enc: null,
            })
            .where('name', '=', choice.name)
            .execute();
          await trx.deleteFrom('customer_events').where('customer', '=', choice.name).execute();
          await trx.deleteFrom('customer_sessions').where('customer', '=', choice.name).execute();
        }
        return { name: choice.name, uid, accessToken, attempt };
      });
    } catch (error) {
      if (isUniqueViolation(error, 'customers_live_email')) throw new EmailTakenError({ cause: error });
      throw error;
    }
  }

  /** The checkout exists: the pending signup now lives as long as its session. */
  async attachCheckout(reservation: { name: string; uid: string }, session: { id: string; expiresAt: number | undefined }): Promise<void> {
    const expiresAt = session.expiresAt
      ? sql<Date>`to_timestamp(${session.expiresAt})`
      : sql<Date>`now() + ${this.#options.checkoutTtlMs} * interval '1 millisecond'`;
    await this.#db
      .updateTable('customers')
      .set({ stripe_checkout_session_id: session.id, pending_expires_at: expiresAt })
      .where('name', '=', reservation.name)
      .where('uid', '=', reservation.uid)
      .where('state', '=', 'pending')
      .execute();
  }

  /**
   * Undoes a reservation whose checkout could not be created, so a retry is not blocked and no
   * capacity is held: the row this attempt wrote never had a checkout and never reached the
   * world, so it goes (a replaced signup's old checkout was expired before it was replaced).
   */
  async releaseSignup(reservation: { name: string; uid: string }): Promise<void> {
    await this.#db
      .deleteFrom('customers')
      .where('name', '=', reservation.name)
      .where('uid', '=', reservation.uid)
      .where('state', '=', 'pending')
      .where('stripe_checkout_session_id', 'is', null)
      .execute();
  }

  /**
   * Exchanges the single-use access token for a session: the token is spent (a second use, from
   * a browser history or a forwarded link, opens nothing) and a new session token, bound to this
   * incarnation's uid, is returned. Undefined when the token is wrong or spent.
   */
  async exchangeAccessToken(name: string, accessToken: string): Promise<string | undefined> {
    const sessionToken = randomBytes(32).toString('base64url');
    return this.#db.transaction().execute(async (trx) => {
      const spent = await trx
        .updateTable('customers')
        .set({ access_token_hash: null })
        .where('name', '=', name)
        .where('deleted_at', 'is', null)
        .where('access_token_hash', '=', hashToken(accessToken))
        .returning(['name', 'uid'])
        .executeTakeFirst();
      if (!spent) return undefined;
      await trx
        .insertInto('customer_sessions')
        .values({
          token_hash: hashToken(sessionToken),
          customer: spent.name,
          customer_uid: spent.uid,
          expires_at: sql<Date>`now() + ${this.#options.sessionTtlMs} * interval '1 millisecond'`,
        })
        .execute();
      await trx.deleteFrom('customer_sessions').where('expires_at', '<', sql<Date>`now()`).execute();
      return sessionToken;
    });
  }

  /**
   * The customer's status view when `sessionToken` is a live session of it; undefined otherwise.
   * The lookup is by the token's hash, so a missing customer and a wrong token for an existing
   * one cost the same single index probe and look alike (no hint which).
   */
  async statusFor(name: string, sessionToken: string): Promise<CustomerStatusRecord | undefined> {
    const row = await this.#sessionRow(name, sessionToken);
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

  /** For routes that only need to know the session is the customer's (pairing). */
  async verifySession(name: string, sessionToken: string): Promise<boolean> {
    return (await this.#sessionRow(name, sessionToken)) !== undefined;
  }

  /**
   * The unpaid signup a session belongs to, when it is pending (and, given `email`, for that
   * email): the proof a repeated signup needs to replace it, or a resumed checkout to reuse it.
   */
  async ownPendingSignup(
    sessionToken: string,
    options: { email?: string; name?: string; unexpired?: boolean } = {},
  ): Promise<PendingSignupRef | undefined> {
    let query = this.#db
      .selectFrom('customer_sessions as s')
      .innerJoin('customers as c', (join) => join.onRef('c.name', '=', 's.customer').onRef('c.uid', '=', 's.customer_uid'))
      .select(['c.name', 'c.uid', 'c.email', 'c.stripe_checkout_session_id'])
      .where('s.token_hash', '=', hashToken(sessionToken))
      .where('s.expires_at', '>', sql<Date>`now()`)
      .where('c.deleted_at', 'is', null)
      .where('c.state', '=', 'pending')
      .where('c.stripe_subscription_id', 'is', null);
    if (options.email !== undefined) query = query.where(sql<boolean>`lower(c.email) = ${normaliseEmail(options.email)}`);
    if (options.name !== undefined) query = query.where('c.name', '=', options.name);
    // A lapsed signup no longer holds a place; only a new signup (which counts capacity) revives it.
    if (options.unexpired) query = query.where(sql<boolean>`c.pending_expires_at > now()`);
    const row = await query.executeTakeFirst();
    return row ? { name: row.name, uid: row.uid, email: row.email, checkoutSessionId: row.stripe_checkout_session_id } : undefined;
  }

  async #sessionRow(name: string, sessionToken: string): Promise<BillingRow | undefined> {
    const row = await this.#db
      .selectFrom('customer_sessions as s')
      .innerJoin('customers as c', (join) => join.onRef('c.name', '=', 's.customer').onRef('c.uid', '=', 's.customer_uid'))
      .selectAll('c')
      .where('s.token_hash', '=', hashToken(sessionToken))
      .where('s.customer', '=', name)
      .where('s.expires_at', '>', sql<Date>`now()`)
      .where('c.deleted_at', 'is', null)
      .executeTakeFirst();
    return row as BillingRow | undefined;
  }

  /**
   * Records a verified Stripe event in the ledger and applies it: the ledger row, the customer's
   * change (the trigger's NOTIFY with it) and its event note are one statement, so one
   * transaction, after one read that finds the customer (or sees the event id already recorded:
   * a duplicate costs that read alone). The statement changes the customer only as that read saw
   * it (its resource version) and only while the event id is unrecorded; when either moved on
   * meanwhile it writes nothing and the read is taken again. Reads and writes of events arriving
   * together go to Postgres together (`Batcher`: one statement and one commit for all of them,
   * one customer's events never in one batch). An event whose Stripe ids belong to another
   * customer, or one that keeps losing such races, goes the long way: one transaction holding
   * the customer's row lock. Errors propagate: the caller answers 5xx so Stripe retries.
   *
   * What this process already knows saves round trips: a customer's next event skips the read
   * (its write is decided on the row as last read or written, and stands only while the row is
   * still so), and an event id it recorded or found recorded is a duplicate at once.
   */
  async recordStripeEvent(event: StripeEventLike, intent: BillingIntent): Promise<WebhookResult> {
    if (this.#knownEvents.has(event.id)) return { outcome: 'duplicate' };
    const result = await this.#record(event, intent);
    this.#knowEvent(event.id);
    return result;
  }

  async #record(event: StripeEventLike, intent: BillingIntent): Promise<WebhookResult> {
    // A customer this process has seen: its write goes first, as though just read (one round
    // trip, not two). It writes nothing unless the row is still as remembered.
    const known = this.#knownRow(intent);
    if (known) {
      const done = await this.#tryWrite(event, intent, known);
      if (done === 'long-way') return this.#recordLocked(event, intent);
      if (done !== 'again') return done;
    }
    for (let attempt = 0; attempt < OPTIMISTIC_ATTEMPTS; attempt++) {
      const read = await this.#ledgerReads.submit({ eventId: event.id, ref: intent.kind === 'ignored' ? {} : intent.ref });
      if (read.recorded) return { outcome: 'duplicate' };
      if (read.row) this.#remember(intent, read.row);
      const done = await this.#tryWrite(event, intent, read.row);
      if (done === 'long-way') break;
      if (done !== 'again') return done;
    }
    return this.#recordLocked(event, intent);
  }

  /**
   * The event's write decided on `row` (undefined: no customer found): its answer once written;
   * `again` when nothing was written because the customer is no longer as `row` says or the event
   * id was recorded meanwhile (the next read tells which); `long-way` for the row lock's way.
   */
  async #tryWrite(
    event: StripeEventLike,
    intent: BillingIntent,
    row: LedgerRow | undefined,
  ): Promise<WebhookResult | 'again' | 'long-way'> {
    const write = ledgerWrite(event, intent, row);
    if (write === 'long-way') return 'long-way';
    let written: LedgerWritten;
    try {
      written = await this.#ledgerWrites.submit(write);
    } catch (error) {
      if (isUniqueViolation(error)) return 'long-way'; // a Stripe id another customer holds: the long way says which
      throw error;
    }
    if (written.recorded) {
      if (row && write.change && written.resourceVersion !== undefined) {
        this.#remember(intent, changedRow(row, write.change, written.resourceVersion));
      }
      return write.result;
    }
    if (written.duplicate) return { outcome: 'duplicate' };
    if (row) this.#knownCustomers.delete(row.name);
    // Nothing recorded and no customer to have moved on: the same event id was recorded concurrently.
    return write.expected ? 'again' : { outcome: 'duplicate' };
  }

  #knowEvent(eventId: string): void {
    this.#knownEvents.add(eventId);
    if (this.#knownEvents.size > KNOWN_EVENTS) {
      const oldest = this.#knownEvents.values().next().value;
      if (oldest !== undefined) this.#knownEvents.delete(oldest);
    }
  }

  /** The remembered row of the customer the event names by name (the read's first choice). */
  #knownRow(intent: BillingIntent): LedgerRow | undefined {
    if (intent.kind === 'ignored' || intent.ref.name === undefined) return undefined;
    return this.#knownCustomers.get(intent.ref.name);
  }

  /** Remembers `row` when the event names it by name: the read finds that row first, whatever ids it carries. */
  #remember(intent: BillingIntent, row: LedgerRow): void {
    if (intent.kind === 'ignored' || intent.ref.name !== row.name) return;
    this.#knownCustomers.delete(row.name); // to the end of the insertion order: the oldest go first
    this.#knownCustomers.set(row.name, row);
    if (this.#knownCustomers.size > KNOWN_CUSTOMERS) {
      const oldest = this.#knownCustomers.keys().next().value;
      if (oldest !== undefined) this.#knownCustomers.delete(oldest);
    }
  }

  /**
   * In one query for many events: whether the ledger has each, and the customer each names
   * (lookups in `findCustomer`'s order).
   */
  async #readForEvents(lookups: readonly LedgerLookup[]): Promise<LedgerRead[]> {
    const column = (pick: (ref: CustomerRef) => string | undefined) => lookups.map((l) => pick(l.ref) ?? null);
    const { rows } = await prepared(sql<LedgerRow & { ord: number; recorded: boolean; found: boolean }>`
      SELECT i.ord::int AS ord, EXISTS (SELECT 1 FROM webhook_events w WHERE w.event_id = i.event_id) AS recorded,
        c.name IS NOT NULL AS found, c.*
      FROM unnest(
        ${lookups.map((l) => l.eventId)}::text[], ${column((r) => r.name)}::text[], ${column((r) => r.subscriptionId)}::text[],
        ${column((r) => r.stripeCustomerId)}::text[], ${column((r) => r.checkoutSessionId)}::text[]
      ) WITH ORDINALITY AS i(event_id, name, subscription_id, customer_id, session_id, ord)
      LEFT JOIN LATERAL (
        SELECT name, uid, resource_version, state, billing_suspended, billing_warning, stripe_customer_id, stripe_subscription_id,
          stripe_checkout_session_id, stripe_subscription_event_at, pending_expires_at
        FROM customers
        WHERE deleted_at IS NULL AND (
          name = i.name OR stripe_subscription_id = i.subscription_id
          OR stripe_customer_id = i.customer_id OR stripe_checkout_session_id = i.session_id
        )
        ORDER BY CASE
          WHEN name = i.name THEN 0
          WHEN stripe_subscription_id = i.subscription_id THEN 1
          WHEN stripe_customer_id = i.customer_id THEN 2
          ELSE 3
        END
        LIMIT 1
      ) AS c ON true
      ORDER BY i.ord
    `).execute(this.#db);
    if (rows.length !== lookups.length) throw new Error(`webhook ledger read returned ${rows.length} rows for ${lookups.length} events`);
    return rows.map(({ ord: _ord, recorded, found, ...row }) => ({ recorded, row: found ? row : undefined }));
  }

  /**
   * Many events' ledger rows, customer changes and notes in one statement; for each, whether its
   * ledger row was written, whether the ledger had it before, and the customer's resource version
   * after its change. A change is made only where the customer is as read (uid and resource
   * version) and the event id still unrecorded, and its ledger row only with it; an outcome that
   * changes nothing is recorded only while the customer is as read too. (The batcher keeps one
   * customer's events and one event id's deliveries out of a shared batch, so no row is written
   * twice here.)
   */
  async #writeEvents(writes: readonly LedgerWrite[]): Promise<LedgerWritten[]> {
    const column = <T>(pick: (w: LedgerWrite) => T) => writes.map(pick);
    const change = <T>(pick: (c: LedgerChange) => T) => writes.map((w) => (w.change ? pick(w.change) : null));
    const note = (pick: (n: CustomerEventNote) => string) => writes.map((w) => (w.note ? pick(w.note) : null));
    const expected = <T>(pick: (e: LedgerExpectation) => T) => writes.map((w) => (w.expected ? pick(w.expected) : null));
    const { rows } = await prepared(sql<{ recorded: boolean; before: boolean; resource_version: string | number | null }>`
      WITH input AS (
        SELECT * FROM unnest(
          ${column((w) => w.eventId)}::text[], ${column((w) => w.type)}::text[], ${column((w) => w.outcome)}::text[],
          ${column((w) => w.created)}::bigint[], ${column((w) => w.customer ?? null)}::text[],
          ${column((w) => w.change !== undefined)}::boolean[], ${change((c) => c.resourceVersion)}::bigint[],
          ${change((c) => c.next.state)}::text[], ${change((c) => c.next.billingSuspended)}::boolean[],
          ${change((c) => c.next.billingWarning)}::text[], ${change((c) => c.next.stripeCustomerId)}::text[],
          ${change((c) => c.next.stripeSubscriptionId)}::text[], ${change((c) => c.next.stripeCheckoutSessionId)}::text[],
          ${change((c) => c.next.subscriptionEventAt)}::bigint[], ${change((c) => c.setPendingExpiresAt)}::boolean[],
          ${change((c) => (c.next.pendingExpiresAt === null ? null : new Date(c.next.pendingExpiresAt * 1000)))}::timestamptz[],
          ${note((n) => n.type)}::text[], ${note((n) => n.reason)}::text[], ${note((n) => n.message.slice(0, 1000))}::text[],
          ${expected((e) => e.uid)}::uuid[], ${expected((e) => e.resourceVersion)}::bigint[]
        ) WITH ORDINALITY AS i(event_id, type, outcome, created, customer, apply, resource_version, state, billing_suspended,
               billing_warning, stripe_customer_id, stripe_subscription_id, stripe_checkout_session_id, subscription_event_at,
               set_pending_expires_at, pending_expires_at, note_type, note_reason, note_message, expect_uid, expect_version, ord)
      ),
      changed AS (
        UPDATE customers c SET
          state = i.state, billing_suspended = i.billing_suspended, billing_warning = i.billing_warning,
          stripe_customer_id = i.stripe_customer_id, stripe_subscription_id = i.stripe_subscription_id,
          stripe_checkout_session_id = i.stripe_checkout_session_id, stripe_subscription_event_at = i.subscription_event_at,
          pending_expires_at = CASE WHEN i.set_pending_expires_at THEN i.pending_expires_at ELSE c.pending_expires_at END
        FROM input i
        WHERE i.apply AND c.name = i.customer AND c.uid = i.expect_uid AND c.resource_version = i.resource_version
          AND c.deleted_at IS NULL
          AND NOT EXISTS (SELECT 1 FROM webhook_events w WHERE w.event_id = i.event_id)
        RETURNING i.event_id, c.resource_version
      ),
      ledger AS (
        -- An outcome decided on a customer's row stands only while the row is as it was decided on.
        INSERT INTO webhook_events (event_id, type, outcome, event_created, customer)
        SELECT event_id, type, outcome, created, customer FROM input i
        WHERE (NOT apply AND (expect_version IS NULL OR EXISTS (
            SELECT 1 FROM customers c
            WHERE c.name = i.customer AND c.uid = i.expect_uid AND c.resource_version = i.expect_version AND c.deleted_at IS NULL
          )))
          OR event_id IN (SELECT event_id FROM changed)
        ON CONFLICT (event_id) DO NOTHING
        RETURNING event_id
      ),
      note AS (
        INSERT INTO customer_events (customer, type, reason, message)
        SELECT customer, note_type, note_reason, note_message FROM input
        WHERE note_type IS NOT NULL AND event_id IN (SELECT event_id FROM ledger)
        ON CONFLICT (customer, type, reason, md5(message))
        DO UPDATE SET count = customer_events.count + 1, last_seen = now()
      )
      -- before: in the ledger before this statement (its snapshot does not see the rows it writes).
      SELECT l.event_id IS NOT NULL AS recorded, ch.resource_version,
        EXISTS (SELECT 1 FROM webhook_events w WHERE w.event_id = i.event_id) AS before
      FROM input i LEFT JOIN ledger l ON l.event_id = i.event_id LEFT JOIN changed ch ON ch.event_id = i.event_id
      ORDER BY i.ord
    `).execute(this.#db);
    if (rows.length !== writes.length) throw new Error(`webhook ledger write returned ${rows.length} rows for ${writes.length} events`);
    return rows.map((r) => ({
      recorded: r.recorded,
      duplicate: r.before,
      resourceVersion: r.resource_version === null ? undefined : Number(r.resource_version),
    }));
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
      // Two unpaid signups of one email may both be paid; only one assistant may be live per
      // email. The later payment is recorded (its ids, so its later events find this row) but
      // does not go live: an operator refunds or cancels it. Never a 5xx that Stripe retries.
      const goesLive = isLive(next.state) && !isLive(before.state);
      const rival = goesLive ? await liveRival(trx, row) : undefined;
      if (rival) {
        await trx
          .updateTable('customers')
          .set({
            stripe_customer_id: next.stripeCustomerId,
            stripe_subscription_id: next.stripeSubscriptionId,
            stripe_checkout_session_id: next.stripeCheckoutSessionId,
            stripe_subscription_event_at: next.subscriptionEventAt,
          })
          .where('name', '=', row.name)
          .execute();
        await recordNote(trx, row.name, {
          type: 'Warning',
          reason: 'EmailConflict',
          message: `Stripe event ${event.id} paid for this signup, but its email already has the live assistant ${rival}; not activated (refund or cancel one of them)`,
        });
        return { outcome: 'email_conflict', customer: row.name };
      }
      await trx
        .updateTable('customers')
        .set({
          ...billingColumns(next),
          ...(next.pendingExpiresAt !== before.pendingExpiresAt ? { pending_expires_at: pendingExpiresColumn(next) } : {}),
        })
        .where('name', '=', row.name)
        .execute();
    }
    if (decision.note) await recordNote(trx, row.name, decision.note);
    return { outcome: decision.outcome, customer: row.name };
  }

  /** Unpaid, unexpired signups per client and per bot stay under their bounds. */
  async #ensureBounds(trx: Trx, client: string, botHash: string): Promise<void> {
    const { rows } = await sql<{ by_client: number; by_bot: number; client_free_in: number | null; bot_free_in: number | null }>`
      SELECT count(*) FILTER (WHERE signup_client = ${client})::integer AS by_client,
             count(*) FILTER (WHERE telegram_bot_token_hash = ${botHash})::integer AS by_bot,
             ceil(extract(epoch FROM min(pending_expires_at) FILTER (WHERE signup_client = ${client}) - now()))::integer AS client_free_in,
             ceil(extract(epoch FROM min(pending_expires_at) FILTER (WHERE telegram_bot_token_hash = ${botHash}) - now()))::integer AS bot_free_in
      FROM customers
      WHERE state = 'pending' AND deleted_at IS NULL AND pending_expires_at > now()
        AND (signup_client = ${client} OR telegram_bot_token_hash = ${botHash})
    `.execute(trx);
    const row = rows[0];
    if (!row) return;
    if (row.by_bot >= this.#options.maxPendingPerBot) throw new PendingLimitError('bot', Math.max(1, row.bot_free_in ?? 60));
    if (row.by_client >= this.#options.maxPendingPerClient)
      throw new PendingLimitError('client', Math.max(1, row.client_free_in ?? 60));
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

  /**
   * A name for a new signup of `email`: the email's own name, else its disambiguated one, else
   * one with a random suffix. A name is free when nobody holds it, when its holder was purged,
   * or when it is a lapsed unpaid signup of the same email (it never reached Stripe's books or
   * the world). A live, pending or cancelled (retained) holder keeps its name.
   */
  async #freeName(trx: Trx, email: string): Promise<NameChoice> {
    const candidates = [nameFromEmail(email), disambiguatedName(email)];
    for (let i = 0; i < SUFFIX_ATTEMPTS; i++) candidates.push(suffixedName(email, randomSuffix()));
    for (const name of candidates) {
      const holder = await trx
        .selectFrom('customers')
        .select([
          'email',
          'state',
          'deleted_at',
          'stripe_customer_id',
          'stripe_subscription_id',
          sql<boolean>`pending_expires_at IS NOT NULL AND pending_expires_at <= now()`.as('lapsed'),
        ])
        .where('name', '=', name)
        .forUpdate()
        .executeTakeFirst();
      if (!holder) return { name, holder: 'none' };
      if (holder.deleted_at !== null) return { name, holder: 'recyclable' };
      const lapsedSignup =
        holder.state === 'pending' &&
        holder.lapsed &&
        holder.stripe_customer_id === null &&
        holder.stripe_subscription_id === null &&
        normaliseEmail(holder.email) === email;
      if (lapsedSignup) return { name, holder: 'recyclable' };
    }
    throw new ConflictError(`no free customer name for ${email}; please try again`);
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

function isLive(state: DesiredState): boolean {
  return state === 'active' || state === 'suspended';
}

/** Another customer with the same email that is live (active or suspended), if any. */
async function liveRival(trx: Trx, row: BillingRow): Promise<string | undefined> {
  const rival = await trx
    .selectFrom('customers')
    .select('name')
    .where(sql<boolean>`lower(email) = lower(${row.email})`)
    .where('state', 'in', ['active', 'suspended'])
    .where('deleted_at', 'is', null)
    .where('name', '<>', row.name)
    .executeTakeFirst();
  return rival?.name;
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
  | 'uid'
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

/** An event's read: its id and what it names the customer by. */
interface LedgerLookup {
  eventId: string;
  ref: CustomerRef;
}

interface LedgerRead {
  recorded: boolean;
  row: LedgerRow | undefined;
}

/** A change to the customer, made only where its row is still at `resourceVersion`. */
interface LedgerChange {
  resourceVersion: number;
  next: BillingRecord;
  /** `next.pendingExpiresAt` differs from the row's (otherwise the column is left as it is). */
  setPendingExpiresAt: boolean;
}

/** The customer's row as an event's outcome was decided on: the write stands only while it is so. */
interface LedgerExpectation {
  uid: string;
  resourceVersion: number;
}

/** Whether an event's ledger row was written, and the customer's resource version after its change. */
interface LedgerWritten {
  recorded: boolean;
  /** Not written because the ledger had the event id already: a duplicate, whatever the customer. */
  duplicate: boolean;
  resourceVersion: number | undefined;
}

/** What one event writes: its ledger row, the change it makes (if any) and its note. */
interface LedgerWrite {
  eventId: string;
  type: string;
  outcome: WebhookOutcome;
  created: number;
  customer: string | undefined;
  change: LedgerChange | undefined;
  note: CustomerEventNote | undefined;
  /** The customer's row it was decided on (none for ignored events and unknown customers). */
  expected: LedgerExpectation | undefined;
  /** The answer once the ledger row is written. */
  result: WebhookResult;
}

/**
 * The write of `event` on the customer `row` as read (undefined: none found), decided here.
 * `long-way` for a payment that makes the customer live: whether another live assistant has
 * its email is a question for the row lock (`#applyIntent`), and it comes once per customer.
 */
function ledgerWrite(event: StripeEventLike, intent: BillingIntent, row: LedgerRow | undefined): LedgerWrite | 'long-way' {
  const before = row ? toRecord(row) : undefined;
  const decision = intent.kind === 'ignored' || !before ? undefined : decide(before, intent, event.created);
  const applied = decision?.outcome === 'applied' && row && before ? { decision, row, before } : undefined;
  if (applied && isLive(applied.decision.next.state) && !isLive(applied.before.state)) return 'long-way';
  const outcome: WebhookOutcome = intent.kind === 'ignored' ? 'ignored' : !row ? 'unknown_customer' : (decision?.outcome ?? 'ignored');
  const customer = intent.kind === 'ignored' ? undefined : row?.name;
  return {
    eventId: event.id,
    type: event.type,
    outcome,
    created: event.created,
    customer,
    change: applied && {
      resourceVersion: Number(applied.row.resource_version),
      next: applied.decision.next,
      setPendingExpiresAt: applied.decision.next.pendingExpiresAt !== applied.before.pendingExpiresAt,
    },
    note: decision?.note,
    expected: customer !== undefined && row ? { uid: row.uid, resourceVersion: Number(row.resource_version) } : undefined,
    result: customer === undefined ? { outcome } : { outcome, customer },
  };
}

/** `row` after `change` was written, at the resource version the write returned. */
function changedRow(row: LedgerRow, change: LedgerChange, resourceVersion: number): LedgerRow {
  const { next } = change;
  return {
    ...row,
    resource_version: resourceVersion,
    ...billingColumns(next),
    pending_expires_at: change.setPendingExpiresAt ? pendingExpiresColumn(next) : row.pending_expires_at,
  };
}

/** The customers columns a billing decision sets (the pending expiry apart: it is set only when it changed). */
function billingColumns(next: BillingRecord) {
  return {
    state: next.state,
    billing_suspended: next.billingSuspended,
    billing_warning: next.billingWarning,
    stripe_customer_id: next.stripeCustomerId,
    stripe_subscription_id: next.stripeSubscriptionId,
    stripe_checkout_session_id: next.stripeCheckoutSessionId,
    stripe_subscription_event_at: next.subscriptionEventAt,
  };
}

function pendingExpiresColumn(next: BillingRecord): Date | null {
  return next.pendingExpiresAt === null ? null : new Date(next.pendingExpiresAt * 1000);
}

function toRecord(row: LedgerRow): BillingRecord {
  return {
    uid: row.uid,
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

/**
 * SHA-256 of a token. The tokens hashed here (access and session tokens, 32 random bytes; bot
 * tokens) are high-entropy secrets, so a plain hash cannot be reversed by guessing; rows are
 * looked up by it, so a comparison never runs over a secret byte by byte in our code.
 */
export function hashToken(token: string): string {
  return createHash('sha256').update(token, 'utf8').digest('hex');
}

function normaliseEmail(email: string): string {
  return email.trim().toLowerCase();
}

function randomSuffix(): string {
  // 5 base-36 characters: about 60 million names per email; collisions are retried.
  return Array.from(randomBytes(5), (b) => (b % 36).toString(36)).join('');
}
